"""`elmo-pipeline units`: its options (the work: :mod:`elmo_pipeline.analysis.units`)."""

from __future__ import annotations

from elmo_pipeline.analysis import units
from elmo_pipeline.analysis.common import command_parser
from elmo_pipeline.data.lm import TOKENIZERS


def main(argv: list[str]) -> int:
    parser = command_parser("units", units.__doc__)
    parser.add_argument("--text", required=True, help="a UTF-8 text file, one paragraph or sentence per line")
    parser.add_argument("--out", default="runs/cells", help="folder for cells.html, the PNGs and the ranking")
    parser.add_argument("--cells", default=None, help="units to show, e.g. L1.fwd.3,L2.bwd.17 (default: best of each)")
    parser.add_argument("--tokenizer", choices=sorted(TOKENIZERS), default="regex")
    parser.add_argument("--max-lines", type=int, default=200, help="sequences of the text to read")
    parser.add_argument("--max-tokens", type=int, default=100, help="longer lines are cut into pieces of this size")
    parser.add_argument("--top", type=int, default=5, help="units per property in the ranking")
    return units.run(parser.parse_args(argv))
