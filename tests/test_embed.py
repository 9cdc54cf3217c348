"""`elmo-pipeline embed`: bilm-tf's embedding-dump layout, batching, errors naming the line."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from tiny_models import tiny_bilm

from elmo_pipeline import cli
from elmo_pipeline import embed as embed_module
from elmo_pipeline.commands.embed import main
from elmo_pipeline.embed import InputFileError, embed_file, length_batches
from elmo_pipeline.interop import save_bilm_tf
from elmo_pipeline.models import BiLM
from elmo_pipeline.models.elmo import bilm_layers
from elmo_pipeline.models.export_folder import save_export

LINES = [
    "The cat sat on the mat .",
    "Hi",
    "naïve café , très bien",
    "one two three four five six seven eight",
    "a b",
    "last line",
]


@pytest.fixture
def bilm() -> BiLM:
    return tiny_bilm()


@pytest.fixture
def sentences_file(tmp_path):
    path = tmp_path / "sentences.txt"
    path.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    return path


def expected_layers(bilm: BiLM, line: str) -> np.ndarray:
    with torch.no_grad():
        layers, _ = bilm_layers(bilm, [line.split()])
    return torch.stack(layers, dim=1)[0].numpy()  # (L+1, n, 2P), each sentence alone


def test_all_layers_in_bilm_tf_layout(bilm, tmp_path, sentences_file):
    export = save_export(tmp_path / "export", bilm)
    out = tmp_path / "elmo.hdf5"
    args = f"--input {sentences_file} --output {out} --bilm {export} --batch-size 2 --buffer-size 3"
    args += " --max-batch-tokens 12 --device cpu --no-progress"  # several buffers, batches of 1-2 sentences
    assert main(args.split()) == 0
    with h5py.File(out, "r") as f:
        assert sorted(f.keys(), key=int) == [str(i) for i in range(len(LINES))]
        for i, line in enumerate(LINES):
            data = f[str(i)]
            assert data.dtype == np.float32 and data.shape == (3, len(line.split()), 16)
            np.testing.assert_allclose(data[...], expected_layers(bilm, line), rtol=1e-5, atol=1e-6)
    assert not (tmp_path / "elmo.hdf5.partial").exists()


@pytest.mark.parametrize("mode", ["average", "top"])
def test_average_and_top(bilm, tmp_path, sentences_file, mode):
    out = tmp_path / f"{mode}.hdf5"
    stats = embed_file(bilm, sentences_file, out, layers=mode, batch_size=4, device="cpu", progress=False)
    assert stats.sentences == len(LINES) and stats.tokens == sum(len(line.split()) for line in LINES)
    with h5py.File(out, "r") as f:
        for i, line in enumerate(LINES):
            full = expected_layers(bilm, line)
            expected = full.mean(axis=0) if mode == "average" else full[-1]
            assert f[str(i)].shape == (len(line.split()), 16)
            np.testing.assert_allclose(f[str(i)][...], expected, rtol=1e-5, atol=1e-6)


def test_published_files_through_the_cli_entry_point(bilm, tmp_path, sentences_file):
    options, weights = save_bilm_tf(bilm, tmp_path / "published")
    out = tmp_path / "elmo.hdf5"
    args = f"embed --input {sentences_file} --output {out} --options {options} --weights {weights} --layers top"
    code = cli.main([*args.split(), "--device", "cpu", "--no-progress"])
    assert code == 0
    with h5py.File(out, "r") as f:
        np.testing.assert_allclose(f["2"][...], expected_layers(bilm, LINES[2])[-1], rtol=1e-5, atol=1e-6)


def test_precision_and_chunk_options_through_the_cli(bilm, tmp_path, sentences_file, monkeypatch):
    """--chunk-tokens changes how the recurrence is cut, not the result; --precision reaches the runner."""
    export = save_export(tmp_path / "export", bilm)
    out = tmp_path / "chunked.hdf5"
    args = f"embed --input {sentences_file} --output {out} --bilm {export} --chunk-tokens 3 --device cpu --no-progress"
    assert cli.main(args.split()) == 0
    with h5py.File(out, "r") as f:
        for i, line in enumerate(LINES):
            np.testing.assert_allclose(f[str(i)][...], expected_layers(bilm, line), rtol=1e-5, atol=1e-6)
    seen = []
    monkeypatch.setattr("elmo_pipeline.embed.bf16_supported", lambda device: True)
    original = embed_module.StreamingBiLM.__init__

    def spy(self, bilm, precision="fp32", chunk_tokens=1024, **kwargs):
        seen.append((precision, chunk_tokens))
        original(self, bilm, precision, chunk_tokens, **kwargs)

    monkeypatch.setattr(embed_module.StreamingBiLM, "__init__", spy)
    bf16 = tmp_path / "bf16.hdf5"
    args = f"embed --input {sentences_file} --output {bf16} --bilm {export} --precision bf16 --device cpu --no-progress"
    assert cli.main(args.split()) == 0
    assert seen == [("bf16", 1024)]
    with pytest.raises(SystemExit) as refused:  # argparse refuses other values
        cli.main([*args.split(), "--precision", "fp16"])
    assert refused.value.code == 2


@pytest.mark.parametrize(
    "content, message",
    [
        (b"fine line\n\nafter blank\n", r"sentences.txt:2: empty line"),
        (b"ok\n   \t \n", r"sentences.txt:2: empty line"),
        (b"ok\nstill ok\ncaf\xe9 latin-1\n", r"sentences.txt:3: the line is not valid UTF-8"),
        (b"", r"the input file is empty"),
    ],
)
def test_bad_lines_are_named_and_nothing_is_written(bilm, tmp_path, content, message):
    path = tmp_path / "sentences.txt"
    path.write_bytes(content)
    out = tmp_path / "elmo.hdf5"
    with pytest.raises(InputFileError, match=message):
        embed_file(bilm, path, out, device="cpu", progress=False)
    assert not out.exists() and not (tmp_path / "elmo.hdf5.partial").exists()


def test_cli_reports_errors_without_a_traceback(bilm, tmp_path, capsys):
    export = save_export(tmp_path / "export", bilm)
    path = tmp_path / "sentences.txt"
    path.write_bytes(b"one\n\n")
    code = main(["--input", str(path), "--output", str(tmp_path / "o.hdf5"), "--bilm", str(export), "--no-progress"])
    assert code == 1
    assert "sentences.txt:2: empty line" in capsys.readouterr().err


def test_cli_needs_exactly_one_model_source(tmp_path, sentences_file):
    with pytest.raises(SystemExit):
        main(["--input", str(sentences_file), "--output", str(tmp_path / "o.hdf5"), "--options", "o.json"])
    with pytest.raises(SystemExit):
        main(f"--input {sentences_file} --output {tmp_path / 'o.hdf5'} --bilm x --options o --weights w".split())


def test_file_without_final_newline_and_crlf(bilm, tmp_path):
    path = tmp_path / "sentences.txt"
    path.write_bytes(b"first line\r\nsecond")
    out = tmp_path / "elmo.hdf5"
    embed_file(bilm, path, out, device="cpu", progress=False)
    with h5py.File(out, "r") as f:
        assert sorted(f.keys()) == ["0", "1"] and f["0"].shape == (3, 2, 16) and f["1"].shape == (3, 1, 16)


def test_length_batches_respect_both_budgets():
    buffer = [(i, ["w"] * n) for i, n in enumerate([1, 1, 2, 3, 3, 9, 30])]
    batches = [[i for i, _ in batch] for batch in length_batches(buffer, batch_size=3, max_batch_tokens=16)]
    assert batches == [[0, 1, 2], [3, 4], [5], [6]]  # 3 sentences; 2 x 5 tokens (3 x 5 > 16); 11; 32 alone
    for batch in length_batches(buffer, batch_size=100, max_batch_tokens=16):
        assert len(batch) == 1 or len(batch) * (max(len(s) for _, s in batch) + 2) <= 16


def test_output_that_would_destroy_a_file_is_refused(bilm, tmp_path, sentences_file, capsys):
    export = save_export(tmp_path / "export", bilm)
    text = sentences_file.read_bytes()

    def run(output, *extra) -> str:
        code = main(
            ["--input", str(sentences_file), "--output", str(output), "--bilm", str(export), "--no-progress", *extra]
        )
        assert code == 1
        err = capsys.readouterr().err
        assert "Traceback" not in err
        return err

    assert "is the input file" in run(sentences_file)
    assert "is the input file" in run(sentences_file, "--overwrite")  # never, even when asked
    assert sentences_file.read_bytes() == text
    folder = tmp_path / "out"
    folder.mkdir()
    assert "is a folder; give a file path" in run(folder)
    existing = tmp_path / "old.hdf5"
    existing.write_bytes(b"the user's earlier embeddings")
    assert "exists; pass --overwrite to replace it" in run(existing)
    assert existing.read_bytes() == b"the user's earlier embeddings"
    argv = ["--input", str(sentences_file), "--output", str(existing), "--bilm", str(export), "--no-progress"]
    assert main([*argv, "--overwrite"]) == 0
    with h5py.File(existing, "r") as f:
        assert len(f.keys()) == len(text.splitlines())
