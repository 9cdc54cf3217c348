"""`elmo-pipeline sentiment-neuron`: its options (the work: :mod:`elmo_pipeline.analysis.sentiment_neuron`)."""

from __future__ import annotations

from elmo_pipeline.analysis import sentiment_neuron
from elmo_pipeline.analysis.common import command_parser


def main(argv: list[str]) -> int:
    parser = command_parser("sentiment-neuron", sentiment_neuron.__doc__)
    parser.add_argument("--data-root", default="../shared/data", help="folder holding sst5/trees/")
    parser.add_argument("--sst-dir", default=None, help="folder of train.txt, dev.txt, test.txt (SST PTB trees)")
    parser.add_argument("--out", default="runs/sentiment_neuron", help="folder for the plot and results.json")
    parser.add_argument("--batch-size", type=int, default=64)
    return sentiment_neuron.run(parser.parse_args(argv))
