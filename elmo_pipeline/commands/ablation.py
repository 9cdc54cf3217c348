"""`elmo-pipeline ablation`: its options (the work: :mod:`elmo_pipeline.analysis.ablation`)."""

from __future__ import annotations

from elmo_pipeline.analysis import ablation
from elmo_pipeline.analysis.ablation import PRETRAIN_GROUPS
from elmo_pipeline.analysis.common import command_parser
from elmo_pipeline.modules.cells import CELLS


def main(argv: list[str]) -> int:
    parser = command_parser("ablation", ablation.__doc__, bilm_help=None)
    parser.add_argument(
        "--config",
        required=True,
        help="a pretraining YAML (configs/pretrain/*.yaml): the biLM, data and optimizer that every cell shares",
    )
    parser.add_argument("--cells", default=",".join(CELLS), help=f"comma-separated, from {', '.join(CELLS)}")
    budget = parser.add_mutually_exclusive_group(required=True)
    budget.add_argument("--max-steps", type=int, default=None, help="the budget in optimizer steps, per cell")
    budget.add_argument("--max-minutes", type=float, default=None, help="the budget in minutes of training, per cell")
    parser.add_argument("--seed", type=int, default=None, help="seed_everything and data.seed (default: the config's)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--resume", action="store_true", help="keep the cells already in <out>/results.json")
    args, overrides = parser.parse_known_args(argv)
    bad = [o for o in overrides if o.startswith("--") and not o.split("=")[0][2:].startswith(PRETRAIN_GROUPS)]
    if bad:
        parser.error(f"unknown options {bad}: the others must be `elmo-pipeline pretrain` options (--model.*, ...)")
    return ablation.run(args, overrides, argv)
