"""`elmo-pipeline generate`: its options (the work: :mod:`elmo_pipeline.analysis.generate`)."""

from __future__ import annotations

from elmo_pipeline.analysis import generate
from elmo_pipeline.analysis.common import command_parser


def main(argv: list[str]) -> int:
    parser = command_parser(
        "generate",
        generate.__doc__,
        bilm_help="an export folder of a pretrained biLM (with its softmax and vocab.txt), or random: before one",
    )
    parser.add_argument("--prompt", default="", help="text to continue (tokenised like the training corpus)")
    parser.add_argument("--max-tokens", type=int, default=30, help="most words to generate")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=0, help="sample among the k most probable words (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-samples", type=int, default=1, help="texts to generate, with seeds seed, seed+1, ...")
    return generate.run(parser.parse_args(argv))
