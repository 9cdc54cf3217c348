"""`elmo-pipeline bench`: training throughput of a biLM, fp32 against bf16 (the work: :mod:`elmo_pipeline.bench`)."""

from __future__ import annotations

import argparse

import torch

from elmo_pipeline import bench
from elmo_pipeline.modules.cells import CELLS


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="elmo-pipeline bench", description=bench.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="tiny", choices=["tiny", "small", "original"])
    parser.add_argument("--config", default=None, help="a pretraining config: its biLM (model.bilm) and its data")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the config's data.batch_size, else 64")
    parser.add_argument("--steps", type=int, default=16, help="measured steps per variant (after --warmup)")
    parser.add_argument("--warmup", type=int, default=2, help="steps per variant before timing starts")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--variants", default="fast,fast-bf16", help=f"comma-separated, from {','.join(bench.VARIANTS)}"
    )
    parser.add_argument("--sample-data", action="store_true", help="read the bundled sample corpus, not the config's")
    parser.add_argument(
        "--cells",
        default=None,
        help=f"compare recurrent cells instead (comma-separated, from {','.join(CELLS)}); clipping is lstmp's only",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--precision", default="fp32", choices=sorted(bench.DTYPES), help="precision of --cells runs")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    return bench.run(parser.parse_args(argv))
