"""The portable embedder: TorchScript and ONNX files equal the eager biLM, for any batch and length."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from elmo_pipeline.commands.export import main as export_main
from elmo_pipeline.models import BiLM, BiLMConfig
from elmo_pipeline.models.export_folder import save_export
from elmo_pipeline.models.portable import PortableEmbedder
from elmo_pipeline.text import batch_to_char_ids

BATCHES = [
    [["a", "b", "c"], ["hello"]],  # padding in the second sentence
    [["x"]],  # one token
    [["the", "cat", "sat", "on", "the", "mat", "."]] * 3,  # no padding
    [["a", "very", "long", "sentence", "that", "goes", "on", "and", "on", "for", "a", "while"], ["short"], []],
]


@pytest.fixture(params=["clipped", "unclipped"])
def bilm(request) -> BiLM:
    torch.manual_seed(0)
    clip = 0.5 if request.param == "clipped" else None  # small enough that clipping acts
    config = BiLMConfig.preset("tiny", vocab_size=0, cell_dim=16, projection_dim=8, cell_clip=clip, proj_clip=clip)
    return BiLM(config).eval()


def _reference(bilm: BiLM, sentences):
    chars = batch_to_char_ids(sentences, add_boundaries=True)  # (B, T, 50)
    with torch.no_grad():
        out = bilm(chars)
    return chars, torch.stack(out.activations).numpy(), out.mask.numpy()


def test_torchscript_equals_eager(bilm, tmp_path):
    path = tmp_path / "embedder.pt"
    torch.jit.script(PortableEmbedder(bilm)).save(str(path))
    loaded = torch.jit.load(str(path))
    for sentences in BATCHES:
        chars, expected, mask = _reference(bilm, sentences)
        with torch.no_grad():
            layers, got_mask = loaded(chars)
        np.testing.assert_allclose(layers.numpy(), expected, rtol=0, atol=1e-5)
        assert np.array_equal(got_mask.numpy(), mask)


def test_onnx_equals_eager_under_onnxruntime(bilm, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    save_export(tmp_path / "export", bilm)
    assert export_main(["--bilm", str(tmp_path / "export"), "--format", "onnx", "--output", str(tmp_path / "o")]) == 0
    session = ort.InferenceSession(str(tmp_path / "o" / "embedder.onnx"))
    for sentences in BATCHES:  # exported with one 4-token sentence; every batch and length runs
        chars, expected, mask = _reference(bilm, sentences)
        layers, got_mask = session.run(None, {"chars": chars.numpy()})
        np.testing.assert_allclose(layers, expected, rtol=0, atol=1e-5)
        assert np.array_equal(got_mask, mask)


def test_torchscript_runs_without_this_package(bilm, tmp_path):
    """Serving: torch alone loads the file (elmo_pipeline is not importable in the child)."""
    save_export(tmp_path / "export", bilm)
    assert export_main(["--bilm", str(tmp_path / "export"), "--format", "torchscript", "--output", str(tmp_path)]) == 0
    chars, expected, _ = _reference(bilm, BATCHES[0])
    np.save(tmp_path / "chars.npy", chars.numpy())
    script = (
        "import sys, numpy as np, torch\n"
        "sys.modules['elmo_pipeline'] = None  # blocked\n"
        "model = torch.jit.load(sys.argv[1] + '/embedder.pt')\n"
        "with torch.inference_mode():\n"
        "    layers, mask = model(torch.from_numpy(np.load(sys.argv[1] + '/chars.npy')))\n"
        "np.save(sys.argv[1] + '/layers.npy', layers.numpy())\n"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, cwd=tmp_path)
    np.testing.assert_allclose(np.load(tmp_path / "layers.npy"), expected, rtol=0, atol=1e-5)


def test_other_cells_are_refused():
    with pytest.raises(ValueError, match="only the lstmp cell"):
        PortableEmbedder(BiLM(BiLMConfig.preset("tiny", vocab_size=0, cell="gru")))
