"""A biLM written in another format: the engine of ``elmo-pipeline export`` (``commands/export.py``).

``bilm-tf`` writes the published ``options.json`` + ``weights.hdf5`` (and ``vocab.txt`` when the biLM
has one), which tools built for the official files read. ``export`` writes this project's export folder
(``config.json`` + ``weights.pt``). ``torchscript`` (``embedder.pt``) and ``onnx`` (``embedder.onnx``)
write the embedder for serving, :class:`~elmo_pipeline.models.portable.PortableEmbedder`: character
ids (with ``<S>``/``</S>``) in, all layers and the mask out, any batch size and length; neither file
needs this package to run (docs/embeddings.md, "Serving").
"""

from __future__ import annotations

import io
import logging
import os
import shutil
from pathlib import Path

import torch

from elmo_pipeline.errors import CannotProceed, WouldOverwriteError
from elmo_pipeline.files import check_free_space, disk_full, is_disk_full, write_bytes_atomic
from elmo_pipeline.models.bilm import BiLM
from elmo_pipeline.models.bilm_tf import save_bilm_tf
from elmo_pipeline.models.export_folder import EXPORT_FILES, check_replaceable, save_export
from elmo_pipeline.models.portable import PortableEmbedder
from elmo_pipeline.models.source import BiLMSource
from elmo_pipeline.text.chars import batch_to_char_ids

log = logging.getLogger(__name__)

FORMATS = ("bilm-tf", "export", "torchscript", "onnx")
ONNX_OPSET = 17


# the files each format writes into --output (an export folder replaces the whole folder)
WRITES = {
    "bilm-tf": ("options.json", "weights.hdf5", "vocab.txt"),
    "export": EXPORT_FILES,
    "torchscript": ("embedder.pt",),
    "onnx": ("embedder.onnx",),
}


def check_export_output(output: Path, format: str, overwrite: bool) -> None:
    """Refuse, before anything is loaded or written, an export that would replace what the user has unasked."""
    if output.exists() and not output.is_dir():
        raise WouldOverwriteError(f"--output {output} is a file; give a folder")
    if format == "export":
        check_replaceable(output)  # never the user's other files, even with --overwrite
    existing = [output / name for name in WRITES[format] if (output / name).exists()]
    if existing and not overwrite:
        raise WouldOverwriteError(f"export would replace {existing[0]}; pass --overwrite to replace it")


def write_format(bilm: str, output: str | Path, format: str, overwrite: bool = False) -> list[Path]:
    """Write the biLM that ``bilm`` names to ``output`` in ``format``; returns the files written.

    Nothing is created until the biLM has loaded, the files are written beside ``output`` first and
    moved in only when all of them are complete, and a full disk is one line with nothing left behind.
    """
    output = Path(output)
    check_export_output(output, format, overwrite)
    model, vocab = BiLMSource.parse(bilm).load_with_vocab()
    parameters = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    check_free_space(output / WRITES[format][0], 2 * parameters)  # a bound: weights plus format overhead
    if format == "export":
        directory = save_export(output, model, vocab)
        return sorted(directory.iterdir())
    stage = output.with_name(f".{output.name}.tmp{os.getpid()}")
    shutil.rmtree(stage, ignore_errors=True)
    created = not output.exists()
    try:
        stage.mkdir(parents=True)
        if format == "bilm-tf":
            staged = list(save_bilm_tf(model, stage, vocab=vocab))
        else:
            staged = [save_embedder(model, stage, format)]
        output.mkdir(parents=True, exist_ok=True)
        written = []
        for path in staged:
            os.replace(path, output / path.name)
            written.append(output / path.name)
        return written
    except BaseException as err:
        if created and output.is_dir() and not any(output.iterdir()):
            output.rmdir()
        if is_disk_full(err):
            raise disk_full(output) from None
        raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def save_embedder(bilm: BiLM, output: str | Path, format: str) -> Path:
    """Write the portable embedder of ``bilm``: ``embedder.pt`` (TorchScript) or ``embedder.onnx``.

    The file is serialised in memory and written by Python, so a failed write is an ``OSError`` (a full
    disk made TorchScript's own writer abort the process), and it appears under its name only when complete.
    """
    output = Path(output)
    scripted = torch.jit.script(PortableEmbedder(bilm.eval().requires_grad_(False)))  # inference only
    buffer = io.BytesIO()
    if format == "torchscript":
        path = output / "embedder.pt"
        torch.jit.save(scripted, buffer)
    else:
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
            buffer,
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
    output.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, buffer.getvalue())
    return path
