"""`elmo-pipeline curves`: its options (the work: :mod:`elmo_pipeline.analysis.curves`)."""

from __future__ import annotations

import argparse

from elmo_pipeline.analysis import curves


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="elmo-pipeline curves", description=curves.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("metrics", help="a run's logs/version_N/metrics.csv")
    parser.add_argument("--output", required=True, help="PNG to write")
    parser.add_argument("--title", default=None)
    args = parser.parse_args(argv)
    print(curves.plot_curves(args.metrics, args.output, args.title))
    return 0
