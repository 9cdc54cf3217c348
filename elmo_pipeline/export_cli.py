"""`elmo-pipeline export`: write a biLM in another format.

    elmo-pipeline export --bilm runs/pretrain/cpu_1h/export --format bilm-tf --output published/
    elmo-pipeline export --bilm options.json,weights.hdf5 --format export --output runs/elmo_original/export

``bilm-tf`` writes the published ``options.json`` + ``weights.hdf5`` (and ``vocab.txt`` when the biLM
has one), which tools built for the official files read. ``export`` writes this project's export folder
(``config.json`` + ``weights.pt``). ``--bilm`` takes every form of
:class:`~elmo_pipeline.models.source.BiLMSource`.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from elmo_pipeline.errors import WouldOverwriteError
from elmo_pipeline.interop.bilm_tf import save_bilm_tf
from elmo_pipeline.models.export import save_export
from elmo_pipeline.models.source import BiLMSource

log = logging.getLogger(__name__)

FORMATS = ("bilm-tf", "export")


def export(bilm: str, output: str | Path, format: str, overwrite: bool = False) -> list[Path]:
    """Write the biLM that ``bilm`` names to ``output`` in ``format``; returns the files written."""
    output = Path(output)
    if output.exists() and (not output.is_dir() or any(output.iterdir())) and not overwrite:
        raise WouldOverwriteError(f"--output {output} exists and is not empty; pass --overwrite to replace it")
    source = BiLMSource.parse(bilm)
    model, vocab = source.load_with_vocab()
    if format == "bilm-tf":
        return list(save_bilm_tf(model, output, vocab=vocab))
    directory = save_export(output, model, vocab)
    return sorted(directory.iterdir())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="elmo-pipeline export", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--bilm",
        required=True,
        help="the biLM: an export folder, a folder with the published options.json + weights.hdf5, OPTIONS,WEIGHTS, "
        "or random: before any of these",
    )
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="bilm-tf",
        help="bilm-tf: the published options.json + weights.hdf5; export: this project's export folder",
    )
    parser.add_argument("--output", required=True, help="folder to write")
    parser.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    files = export(args.bilm, args.output, args.format, args.overwrite)
    print(f"wrote {', '.join(str(f) for f in files)}")
    return 0
