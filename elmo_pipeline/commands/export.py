"""`elmo-pipeline export`: write a biLM in another format (the work: :mod:`elmo_pipeline.models.formats`).

    elmo-pipeline export --bilm runs/pretrain/cpu_1h/export --format bilm-tf --output published/
    elmo-pipeline export --bilm options.json,weights.hdf5 --format export --output runs/elmo_original/export
    elmo-pipeline export --bilm runs/pretrain/cpu_1h/export --format torchscript --output serving/
    elmo-pipeline export --bilm runs/pretrain/cpu_1h/export --format onnx --output serving/

``--bilm`` takes every form of :class:`~elmo_pipeline.models.source.BiLMSource`.
"""

from __future__ import annotations

import argparse
import logging

from elmo_pipeline.models.formats import FORMATS, write_format
from elmo_pipeline.models.source import BILM_HELP


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="elmo-pipeline export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bilm", required=True, help=BILM_HELP)
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="bilm-tf",
        help="bilm-tf: the published options.json + weights.hdf5; export: this project's export folder; "
        "torchscript (embedder.pt) or onnx (embedder.onnx): the embedder for serving",
    )
    parser.add_argument("--output", required=True, help="folder to write")
    parser.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    files = write_format(args.bilm, args.output, args.format, args.overwrite)
    print(f"wrote {', '.join(str(f) for f in files)}")
    return 0
