"""Issue 25, the readers: non-finite weights, missing or foreign files, bad values, one line each.

Weight loaders (published files, export folders, seq2seq.pt), ``--model.init_from``, ``translate``,
``generate``, ``curves``/``units``, vocabularies, ``--config`` files and ``options.json`` types.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
from pathlib import Path

import h5py
import lightning  # noqa: F401  (imported here, not under capsys: its log handler keeps a stream that stays open)
import numpy as np
import pytest
import torch
from cli_runs import run
from tiny_models import encoder_config

from elmo_pipeline import cli
from elmo_pipeline.interop import save_bilm_tf
from elmo_pipeline.models import BiLM
from elmo_pipeline.models.export_folder import save_export
from elmo_pipeline.models.seq2seq import Seq2Seq, Seq2SeqConfig
from elmo_pipeline.models.target_lm import TargetLM
from elmo_pipeline.text.vocab import SPECIALS, Vocabulary

ROOT = Path(__file__).parents[1]
SOURCE_WORDS = [*SPECIALS, "ein", "mann", "hund", "läuft", "."]
TARGET_WORDS = [*SPECIALS, "a", "man", "dog", "runs", "on", "the", "grass", "."]


@pytest.fixture
def sentences(tmp_path) -> Path:
    path = tmp_path / "s.txt"
    path.write_text("the cat sat\na dog\n", encoding="utf-8")
    return path


# ---- 7. non-finite weights ----------------------------------------------------------------------------


def test_a_nan_in_published_weights_is_refused_naming_the_dataset(capsys, tmp_path, sentences):
    torch.manual_seed(0)
    options, weights = save_bilm_tf(BiLM(encoder_config()).eval(), tmp_path / "published")
    with h5py.File(weights, "r+") as f:
        f["CNN/W_cnn_0"][0, 0, 0, 0] = np.nan
    out = tmp_path / "e.hdf5"
    code, err = run(capsys, "embed", "--input", sentences, "--output", out, "--options", options, "--weights", weights)
    assert code == 1
    assert f"{weights}: dataset 'CNN/W_cnn_0' holds 1 non-finite value(s)" in err
    assert not out.exists()
    code, err = run(
        capsys, "export", "--bilm", f"{options},{weights}", "--format", "export", "--output", tmp_path / "x"
    )
    assert code == 1 and "non-finite" in err and not (tmp_path / "x").exists()


def test_an_inf_in_an_export_folder_is_refused_naming_the_parameter(capsys, tmp_path, sentences):
    torch.manual_seed(0)
    bilm = BiLM(encoder_config())
    with torch.no_grad():
        bilm.forward_layers[1].weight_hh[0, 0] = float("inf")
    export = save_export(tmp_path / "export", bilm)
    code, err = run(capsys, "embed", "--input", sentences, "--output", tmp_path / "e.hdf5", "--bilm", export)
    assert code == 1
    assert f"{export / 'weights.pt'}: forward_layers.1.weight_hh holds 1 non-finite value(s)" in err


# ---- 11. what weights.pt and seq2seq.pt may hold ----------------------------------------------------------


class _Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_a_crafted_or_damaged_weights_pt_is_one_line(capsys, tmp_path, sentences):
    torch.manual_seed(0)
    export = save_export(tmp_path / "export", BiLM(encoder_config()))
    weights = export / "weights.pt"
    good = weights.read_bytes()
    torch.save({"x": _Payload()}, weights)
    code, err = run(capsys, "embed", "--input", sentences, "--output", tmp_path / "e.hdf5", "--bilm", export)
    assert code == 1 and "this must never run" not in capsys.readouterr().out
    assert f"{weights}: holds objects other than tensors and plain data, and loading it could run code" in err
    weights.write_bytes(good[: len(good) // 2])
    code, err = run(capsys, "embed", "--input", sentences, "--output", tmp_path / "e.hdf5", "--bilm", export)
    assert code == 1 and f"{weights}: cannot be read (truncated or corrupt?" in err


# ---- 8. --model.init_from that is not there ----------------------------------------------------------------------


def _pretrain_args(tmp_path: Path) -> list[str]:
    sample = ROOT / "data" / "sample"
    return [
        "pretrain", "--config", str(ROOT / "configs" / "pretrain" / "tiny.yaml"),
        f"--data.sources=[{sample / 'us_speeches.txt.gz'}]", "--data.weights=null",
        f"--data.val_sources=[{sample / 'wikitext2_valid_excerpt.txt'}]", "--data.val_max_sentences=8",
        "--data.vocab_max_size=300", "--data.batch_size=4", "--model.bilm.cell_dim=16", "--model.bilm.projection_dim=8",
        "--model.bilm.num_samples=20", "--trainer.max_steps=2", "--trainer.val_check_interval=2",
        "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={tmp_path / 'runs'}",
        f"--model.export_dir={tmp_path / 'export'}", f"--data.vocab_path={tmp_path / 'vocab.txt'}",
    ]  # fmt: skip


def test_init_from_a_path_that_is_not_there_is_an_error_not_a_random_start(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    missing = tmp_path / "no_such_biLM"
    code, err = run(capsys, *_pretrain_args(tmp_path), f"--model.init_from={missing}")
    assert code == 1
    assert f"--model.init_from {missing}: no such biLM" in err
    assert not (tmp_path / "export").exists()


def test_the_init_from_architecture_notice_is_shown(capsys, tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    source = save_export(tmp_path / "source", BiLM(encoder_config(projection_dim=8, cell_dim=24)))
    with caplog.at_level("WARNING"):
        code, _ = run(capsys, *_pretrain_args(tmp_path), f"--model.init_from={source}")
    assert code == 0
    assert any(
        "init_from sets the architecture" in r.message and "cell_dim 16 -> 24" in r.message for r in caplog.records
    )


# ---- 4, 9, 10, 11: translate --------------------------------------------------------------------------------------


@pytest.fixture
def translation(tmp_path) -> tuple[Path, Path, Path]:
    """A seq2seq.pt (untrained weights are enough) made with an LM export, and a source file."""
    torch.manual_seed(1)
    lm_vocab = Vocabulary([*TARGET_WORDS, "woman"])
    lm = BiLM(encoder_config(vocab_size=len(lm_vocab), softmax="full", cell_clip=0.5, proj_clip=0.5)).eval()
    lm_export = save_export(tmp_path / "lm", lm, lm_vocab)
    torch.manual_seed(0)
    config = Seq2SeqConfig(len(SOURCE_WORDS), len(TARGET_WORDS), 8, 8, 16, 8, dropout=0.0)
    model = Seq2Seq(config).eval()
    saved = {
        "format": 1,
        "config": dataclasses.asdict(config),
        "lm": str(lm_export),
        "lm_fingerprint": TargetLM(lm, lm_vocab, TARGET_WORDS).fingerprint(),
        "lm_weight": 0.5,
        "beam": 2,
        "length_penalty": 1.0,
        "source_words": SOURCE_WORDS,
        "target_words": TARGET_WORDS,
        "state_dict": model.state_dict(),
    }
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    torch.save(saved, run_dir / "seq2seq.pt")
    source = tmp_path / "in.de"
    source.write_text("ein mann läuft .\nein hund .\n", encoding="utf-8")
    return run_dir, source, lm_export


def test_translate_runs_and_never_writes_over_its_input(capsys, tmp_path, translation):
    run_dir, source, _ = translation
    text = source.read_text(encoding="utf-8")
    code, err = run(capsys, "translate", "--model", run_dir, "--input", source, "--output", source, "--overwrite")
    assert code == 1 and f"--output {source} is the --input file" in err
    assert source.read_text(encoding="utf-8") == text
    out = tmp_path / "out.en"
    assert run(capsys, "translate", "--model", run_dir, "--input", source, "--output", out)[0] == 0
    assert len(out.read_text(encoding="utf-8").splitlines()) == 2
    assert not list(tmp_path.glob(".out.en.tmp*"))


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--lm-weight", "nan", "--lm-weight must be a finite number >= 0"),
        ("--lm-weight", "inf", "--lm-weight must be a finite number >= 0"),
        ("--lm-weight", "-0.5", "--lm-weight must be a finite number >= 0"),
        ("--beam", "0", "--beam must be at least 1"),
        ("--beam", "-3", "--beam must be at least 1"),
    ],
)
def test_translate_refuses_values_that_would_silently_change_the_search(capsys, translation, option, value, message):
    run_dir, source, _ = translation
    code, err = run(capsys, "translate", "--model", run_dir, "--input", source, option, value)
    assert code == 1 and message in err


def test_translate_refuses_an_lm_other_than_the_one_the_model_was_trained_with(capsys, tmp_path, translation):
    run_dir, source, lm_export = translation
    code, err = run(capsys, "translate", "--model", run_dir, "--input", source, "--lm", "random:tiny")
    assert code == 1
    torch.manual_seed(5)  # the same vocabulary, other weights
    other = save_export(
        tmp_path / "other_lm",
        BiLM(encoder_config(vocab_size=len(TARGET_WORDS) + 1, softmax="full", cell_clip=0.5, proj_clip=0.5)),
        Vocabulary([*TARGET_WORDS, "woman"]),
    )
    code, err = run(capsys, "translate", "--model", run_dir, "--input", source, "--lm", other)
    assert code == 1 and f"--lm {other}: not the LM this model was trained with" in err
    code, err = run(capsys, "translate", "--model", run_dir, "--input", source, "--lm", lm_export)
    assert code == 0  # the same LM, moved or not


def test_translate_names_a_crafted_foreign_or_truncated_model_and_a_folder_input(capsys, tmp_path, translation):
    run_dir, source, _ = translation
    model = run_dir / "seq2seq.pt"
    good = model.read_bytes()
    cases = [
        (lambda: torch.save({"config": _Payload()}, model), "loading it could run code"),
        (lambda: torch.save({"weights": torch.zeros(2)}, model), "not a seq2seq.pt of elmo-pipeline (no config"),
        (lambda: model.write_bytes(good[: len(good) // 3]), "cannot be read"),
        (lambda: model.write_bytes(pickle.dumps([1, 2])), "was not loaded"),  # a plain pickle: never unpickled
    ]
    for damage, message in cases:
        damage()
        code, err = run(capsys, "translate", "--model", run_dir, "--input", source)
        assert code == 1 and message in err and f"--model {model}" in err, err
    model.write_bytes(good)
    code, err = run(capsys, "translate", "--model", run_dir, "--input", tmp_path)
    assert code == 1 and f"--input {tmp_path} is a folder" in err


# ---- 12, 13: generate, curves, units, vocabularies -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "value"), [("--temperature", "nan"), ("--temperature", "0"), ("--top-k", "-1"), ("--max-tokens", "0")]
)
def test_generate_refuses_values_it_cannot_sample_with(capsys, tmp_path, option, value):
    code, err = run(capsys, "generate", "--bilm", tmp_path / "never_loaded", option, value)
    assert code == 1 and option in err and err.count("\n") == 1


def test_curves_and_units_name_the_line_of_a_byte_that_is_not_utf8(capsys, tmp_path):
    csv = tmp_path / "metrics.csv"
    csv.write_bytes(b"step,train/loss\n0,1.0\n1,caf\xe9\n")
    code, err = run(capsys, "curves", csv, "--output", tmp_path / "c.png")
    assert code == 1 and f"{csv}:3: not UTF-8 (byte 0xe9)" in err
    from elmo_pipeline.analysis.units import read_sequences

    text = tmp_path / "text.txt"
    text.write_bytes(b"fine line\nanother\ncaf\xe9 au lait\n")
    with pytest.raises(ValueError, match=f"{text}:3: not UTF-8"):
        read_sequences(text)


def test_a_duplicate_vocabulary_word_is_named_with_both_lines(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("<S>\n</S>\n<UNK>\nthe\ncat\nthe\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"vocab.txt:6: the word 'the' is already on line 4"):
        Vocabulary.load(path)


# ---- 13: --config files that are not plain data ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('trainer:\n  max_steps: !!python/object/apply:os.system ["echo PWNED"]\n', ":2: not a plain YAML config"),
        (
            "trainer:\n  callbacks:\n    - class_path: os.system\n      init_args: {command: echo PWNED}\n",
            "class_path 'os.system' is not a class of elmo_pipeline, lightning or torch",
        ),
    ],
)
@pytest.mark.parametrize("command", ["pretrain", "finetune"])
def test_a_config_with_a_python_tag_or_a_foreign_class_path_is_one_line(capsys, tmp_path, content, message, command):
    config = tmp_path / "evil.yaml"
    config.write_text(content)
    code = cli.main([command, "--config", str(config)])
    captured = capsys.readouterr()
    assert code == 1 and "PWNED" not in captured.out
    assert message in captured.err and captured.err.count("\n") == 1


# ---- options.json types -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("lstm", "dim"), "256", "lstm.dim must be a whole number, got '256'"),
        (("lstm", "dim"), 256.5, "lstm.dim must be a whole number, got 256.5"),
        (("lstm", "n_layers"), True, "lstm.n_layers must be a whole number, got True"),
        (("lstm", "cell_clip"), "3", "lstm.cell_clip must be a finite number or null"),
        (("lstm", "use_skip_connections"), "yes", "lstm.use_skip_connections must be true or false"),
        (("char_cnn", "filters"), [[1, "4"]], "char_cnn.filters must be a whole number"),
    ],
)
def test_options_json_fields_must_have_their_types(tmp_path, path, value, message):
    torch.manual_seed(0)
    options, _ = save_bilm_tf(BiLM(encoder_config()).eval(), tmp_path / "published")
    data = json.loads(Path(options).read_text())
    data[path[0]][path[1]] = value
    Path(options).write_text(json.dumps(data))
    from elmo_pipeline.models.bilm_tf import read_options

    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(")):
        read_options(options)
