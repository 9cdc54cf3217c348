"""`elmo-pipeline export`: write a biLM in another format.

    elmo-pipeline export --bilm runs/pretrain/cpu_1h/export --format bilm-tf --output published/
    elmo-pipeline export --bilm options.json,weights.hdf5 --format export --output runs/elmo_original/export
    elmo-pipeline export --bilm runs/pretrain/cpu_1h/export --format torchscript --output serving/
    elmo-pipeline export --bilm runs/pretrain/cpu_1h/export --format onnx --output serving/

``bilm-tf`` writes the published ``options.json`` + ``weights.hdf5`` (and ``vocab.txt`` when the biLM
has one), which tools built for the official files read. ``export`` writes this project's export folder
(``config.json`` + ``weights.pt``). ``torchscript`` (``embedder.pt``) and ``onnx`` (``embedder.onnx``)
write the embedder for serving, :class:`~elmo_pipeline.models.portable.PortableEmbedder`: character
ids (with ``<S>``/``</S>``) in, all layers and the mask out, any batch size and length; neither file
needs this package to run (docs/embeddings.md, "Serving"). ``--bilm`` takes every form of
:class:`~elmo_pipeline.models.source.BiLMSource`.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from elmo_pipeline.errors import CannotProceed, WouldOverwriteError
from elmo_pipeline.interop.bilm_tf import save_bilm_tf
from elmo_pipeline.models.bilm import BiLM
from elmo_pipeline.models.export import save_export
from elmo_pipeline.models.portable import PortableEmbedder
from elmo_pipeline.models.source import BILM_HELP, BiLMSource
from elmo_pipeline.text.chars import batch_to_char_ids

log = logging.getLogger(__name__)

FORMATS = ("bilm-tf", "export", "torchscript", "onnx")
ONNX_OPSET = 17


def export(bilm: str, output: str | Path, format: str, overwrite: bool = False) -> list[Path]:
    """Write the biLM that ``bilm`` names to ``output`` in ``format``; returns the files written."""
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise WouldOverwriteError(f"--output {output} is a file; give a folder")
    replaced = {  # what each format writes into the folder (an export folder replaces the whole folder)
        "bilm-tf": [output / "options.json", output / "weights.hdf5"],
        "torchscript": [output / "embedder.pt"],
        "onnx": [output / "embedder.onnx"],
        "export": [output] if output.is_dir() and any(output.iterdir()) else [],
    }[format]
    existing = [path for path in replaced if path.exists()]
    if existing and not overwrite:
        raise WouldOverwriteError(f"export would replace {existing[0]}; pass --overwrite to replace it")
    source = BiLMSource.parse(bilm)
    model, vocab = source.load_with_vocab()
    if format == "bilm-tf":
        return list(save_bilm_tf(model, output, vocab=vocab))
    if format in ("torchscript", "onnx"):
        return [save_embedder(model, output, format)]
    directory = save_export(output, model, vocab)
    return sorted(directory.iterdir())


def save_embedder(bilm: BiLM, output: str | Path, format: str) -> Path:
    """Write the portable embedder of ``bilm``: ``embedder.pt`` (TorchScript) or ``embedder.onnx``."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    scripted = torch.jit.script(PortableEmbedder(bilm.eval().requires_grad_(False)))  # inference only
    if format == "torchscript":
        path = output / "embedder.pt"
        scripted.save(str(path))
        return path
    try:
        import onnx  # noqa: F401  (the exporter needs it)
    except ImportError:
        raise CannotProceed(
            "export --format onnx needs the onnx package: pip install 'elmo-pipeline[serve]' (or onnx)"
        ) from None
    path = output / "embedder.onnx"
    example = batch_to_char_ids([["an", "example"]], add_boundaries=True)  # (1, 4, 50); any shape runs
    torch.onnx.export(
        scripted,
        (example,),
        str(path),
        dynamo=False,  # the TorchScript exporter: the recurrence becomes an ONNX Loop over any length
        input_names=["chars"],
        output_names=["layers", "mask"],
        dynamic_axes={
            "chars": {0: "batch", 1: "tokens"},
            "layers": {1: "batch", 2: "tokens"},
            "mask": {0: "batch", 1: "tokens"},
        },
        opset_version=ONNX_OPSET,
    )
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="elmo-pipeline export", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--bilm",
        required=True,
        help=BILM_HELP,
    )
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
    files = export(args.bilm, args.output, args.format, args.overwrite)
    print(f"wrote {', '.join(str(f) for f in files)}")
    return 0
