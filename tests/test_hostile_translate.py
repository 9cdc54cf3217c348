"""Issue 25, translate/generate/curves/units: each hostile input is one line naming the file or option, and no file
the user has is destroyed.

The seq2seq.pt is written by the real ``Seq2SeqSystem.export`` (untrained weights are enough), with a
tiny LM export for shallow fusion; every command runs through ``elmo_pipeline.cli.main``.
"""

from __future__ import annotations

import errno
import logging
import os
import pathlib
import pickle
import shutil
from pathlib import Path

import lightning  # noqa: F401  (imported here, not under capsys: its log handler keeps a stream that stays open)
import pytest
import torch

from elmo_pipeline import cli
from elmo_pipeline.analysis.generate import generate
from elmo_pipeline.analysis.units import read_sequences
from elmo_pipeline.models import BiLM, BiLMConfig
from elmo_pipeline.models.export_folder import load_export, save_export
from elmo_pipeline.systems.seq2seq import Seq2SeqSystem
from elmo_pipeline.text.vocab import SPECIALS, Vocabulary

SOURCE_WORDS = [*SPECIALS, "ein", "mann", "hund", "läuft", "."]
TARGET_WORDS = [*SPECIALS, "a", "man", "dog", "runs", "."]
SOURCE_TEXT = "ein mann läuft .\nein hund .\n"


def lm_export(folder: Path, seed: int = 1, words: list[str] | None = None, cell_dim: int = 16) -> Path:
    """A tiny LM export with a softmax over ``words`` (default: the target words and one more)."""
    torch.manual_seed(seed)
    vocab = Vocabulary(words or [*TARGET_WORDS, "woman"])
    config = BiLMConfig(
        vocab_size=len(vocab), char_embed_dim=4, filters=[[1, 4], [2, 4]], num_highway=1, projection_dim=8,
        cell_dim=cell_dim, num_layers=2, cell_clip=0.5, proj_clip=0.5, num_samples=0, softmax="full",
    )  # fmt: skip
    return save_export(folder, BiLM(config).eval(), vocab)


def export_run(folder: Path, lm: Path | None) -> Path:
    """``seq2seq.pt`` of a shallow-fusion model trained (here: initialised) with ``lm``, as the CLI writes it."""
    torch.manual_seed(0)
    system = Seq2SeqSystem(
        len(SOURCE_WORDS), len(TARGET_WORDS), Vocabulary(TARGET_WORDS), 8, 8, 16, 8, dropout=0.0,
        fusion="none" if lm is None else "shallow", lm=None if lm is None else str(lm), beam=2,
    )  # fmt: skip
    system.write_translator(folder / "seq2seq.pt", SOURCE_WORDS, 0.5)
    return folder


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict[str, Path]:
    """One run and its LM, built once; tests copy what they change."""
    root = tmp_path_factory.mktemp("made")
    lm = lm_export(root / "lm")
    return {"lm": lm, "run": export_run(root / "run", lm)}


@pytest.fixture
def setup(tmp_path, made) -> tuple[Path, Path, Path]:
    """(run folder, source file, LM export): a private copy of the run, whose LM is the shared one."""
    run_dir = tmp_path / "run"
    shutil.copytree(made["run"], run_dir)
    source = tmp_path / "in.de"
    source.write_text(SOURCE_TEXT, encoding="utf-8")
    return run_dir, source, made["lm"]


def run(capsys, *argv: object) -> tuple[int, str]:
    """rc and the one error line (or all of stderr when it succeeded); never a traceback."""
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err, captured.err[-3000:]
    errors = [line for line in captured.err.splitlines() if line.startswith(f"elmo-pipeline {argv[0]}: error:")]
    if code:
        assert len(errors) == 1 and "--debug" not in captured.err, captured.err
        return code, errors[0]
    return code, captured.out


def translate(capsys, run_dir: Path, source: Path, *extra: object) -> tuple[int, str]:
    return run(capsys, "translate", "--model", run_dir, "--input", source, *extra)


# ---- 1: --output is --input; atomic output ---------------------------------------------------------------------


@pytest.mark.parametrize("link", ["same path", "symlink", "hard link"])
def test_translate_never_writes_over_its_input_even_with_overwrite(capsys, tmp_path, setup, link):
    run_dir, source, _ = setup
    output = {"same path": source, "symlink": tmp_path / "sym.en", "hard link": tmp_path / "hard.en"}[link]
    if link == "symlink":
        output.symlink_to(source)
    elif link == "hard link":
        os.link(source, output)
    code, err = translate(capsys, run_dir, source, "--output", output, "--overwrite")
    assert code == 1 and f"--output {output} is the --input file {source}" in err and "Give another --output" in err
    assert source.read_text(encoding="utf-8") == SOURCE_TEXT


def test_translate_never_writes_over_its_model(capsys, setup):
    run_dir, source, _ = setup
    model = run_dir / "seq2seq.pt"
    before = model.read_bytes()
    code, err = translate(capsys, run_dir, source, "--output", model, "--overwrite")
    assert code == 1 and f"--output {model} is the --model file {model}" in err and model.read_bytes() == before


def test_a_failed_write_keeps_the_earlier_output_and_leaves_no_temporary_file(capsys, tmp_path, setup, monkeypatch):
    run_dir, source, _ = setup
    output = tmp_path / "out" / "de.en"
    code, first = translate(capsys, run_dir, source, "--output", output)  # its folder is made
    assert code == 0 and len(output.read_text(encoding="utf-8").splitlines()) == 2
    earlier = output.read_bytes()

    def disk_full(self, data, *args, **kwargs):  # half of it lands, then the disk is full
        with open(self, "wb" if isinstance(data, bytes) else "w") as handle:
            handle.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(pathlib.Path, "write_bytes", disk_full)
    monkeypatch.setattr(pathlib.Path, "write_text", disk_full)
    code, err = translate(capsys, run_dir, source, "--output", output, "--overwrite")
    assert code == 1 and f"{output}: the disk is full" in err and "nothing was written there" in err
    assert output.read_bytes() == earlier and sorted(p.name for p in output.parent.iterdir()) == ["de.en"]


# ---- 2: --lm-weight, --beam ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "value"),
    [("--lm-weight", "nan"), ("--lm-weight", "inf"), ("--lm-weight", "-inf"), ("--lm-weight", "-0.5")]
    + [("--beam", "0"), ("--beam", "-2")],
)
def test_translate_refuses_a_search_value_it_would_misuse(capsys, tmp_path, setup, option, value):
    run_dir, source, _ = setup
    output = tmp_path / "out.en"
    code, err = translate(capsys, run_dir, source, f"{option}={value}", "--output", output)
    assert code == 1 and f"{option} must be" in err and value in err and not output.exists()


# ---- 3: the LM is the LM of training; out-of-vocabulary words are reported ---------------------------------------


@pytest.mark.parametrize(
    ("other", "difference"),
    [
        (lambda folder: lm_export(folder, seed=2), "its weights differ"),
        (lambda folder: lm_export(folder, words=[*SPECIALS, "woman", *TARGET_WORDS[len(SPECIALS) :]]), "vocabulary"),
        (lambda folder: lm_export(folder, cell_dim=32), "its config differs (cell_dim 32, trained with 16)"),
        (lambda folder: f"random:{lm_export(folder)}", "its weights differ"),
    ],
    ids=["weights", "vocabulary order", "config", "random control"],
)
def test_translate_refuses_another_lm_naming_what_differs(capsys, tmp_path, setup, other, difference):
    run_dir, source, lm = setup
    name = other(tmp_path / "other_lm")
    code, err = translate(capsys, run_dir, source, "--lm", name)
    assert code == 1 and f"--lm {name}: not the LM this model was trained with ({lm})" in err and difference in err


def test_the_same_lm_moved_translates_as_the_run_and_a_replaced_one_is_named(capsys, tmp_path, setup):
    run_dir, source, lm = setup
    code, expected = translate(capsys, run_dir, source)
    assert code == 0 and len(expected.splitlines()) == 2
    moved = shutil.copytree(lm, tmp_path / "moved_lm")
    assert translate(capsys, run_dir, source, "--lm", moved) == (0, expected)
    # the folder the run names now holds another LM: named as the run's LM, and --lm is the fix
    saved = torch.load(run_dir / "seq2seq.pt", weights_only=True)
    saved["lm"] = str(lm_export(tmp_path / "replaced", seed=3))
    torch.save(saved, run_dir / "seq2seq.pt")
    code, err = translate(capsys, run_dir, source)
    assert code == 1 and f"the LM {saved['lm']} that {run_dir / 'seq2seq.pt'} names has changed" in err
    assert "its weights differ" in err and "Pass --lm with the LM the model was trained with" in err


def test_a_missing_lm_is_named_as_the_option(capsys, tmp_path, setup):
    run_dir, source, _ = setup
    code, err = translate(capsys, run_dir, source, "--lm", tmp_path / "nowhere")
    assert code == 1 and f"--lm {tmp_path / 'nowhere'}: " in err


def test_a_seq2seq_pt_from_before_the_lm_record_warns_and_translates(capsys, caplog, setup):
    run_dir, source, _ = setup
    saved = torch.load(run_dir / "seq2seq.pt", weights_only=True)
    for key in ("lm_identity", "lm_fingerprint"):
        saved.pop(key, None)
    torch.save(saved, run_dir / "seq2seq.pt")
    with caplog.at_level(logging.INFO):
        assert translate(capsys, run_dir, source)[0] == 0
    assert "made before seq2seq.pt recorded its LM" in caplog.text


def test_an_lm_given_to_a_run_trained_without_one_joins_at_search_only(capsys, caplog, tmp_path, made):
    run_dir = export_run(tmp_path / "run", None)
    source = tmp_path / "in.de"
    source.write_text(SOURCE_TEXT, encoding="utf-8")
    with caplog.at_level(logging.INFO):
        assert translate(capsys, run_dir, source, "--lm", made["lm"], "--lm-weight", "0.3")[0] == 0
    assert "was trained without an LM" in caplog.text and "made before" not in caplog.text


def test_target_words_outside_the_lm_vocabulary_are_reported_in_training_and_translation(capsys, caplog, tmp_path):
    lm = lm_export(tmp_path / "lm", words=[w for w in TARGET_WORDS if w not in ("dog", "runs")])
    with caplog.at_level(logging.INFO):
        run_dir = export_run(tmp_path / "run", lm)
    line = f"2 of the {len(TARGET_WORDS)} target words are outside the vocabulary of the LM {lm}"
    assert f"seq2seq: {line}" in caplog.text
    caplog.clear()
    source = tmp_path / "in.de"
    source.write_text(SOURCE_TEXT, encoding="utf-8")
    with caplog.at_level(logging.INFO):
        assert translate(capsys, run_dir, source)[0] == 0
    assert f"translate: {line}" in caplog.text


# ---- 4: a crafted, foreign or damaged seq2seq.pt -------------------------------------------------------------------


class _Payload:
    """Unpickling this would call print: the weights-only loader must refuse it, never run it."""

    def __reduce__(self):
        return (print, ("this ran",))


def _edit(**changes):
    def damage(model: Path) -> None:
        saved = torch.load(model, weights_only=True)
        for key, value in changes.items():
            if callable(value):
                value(saved)
            else:
                saved[key] = value
        torch.save(saved, model)

    return damage


DAMAGES = {
    "crafted pickle": (lambda m: torch.save({"config": _Payload()}, m), "loading it could run code"),
    "plain pickle": (lambda m: m.write_bytes(pickle.dumps({"config": 1})), "was not loaded"),
    "empty": (lambda m: m.write_bytes(b""), "cannot be read (truncated or corrupt? EOFError)"),
    "truncated": (lambda m: m.write_bytes(m.read_bytes()[: m.stat().st_size // 3]), "cannot be read"),
    "text": (lambda m: m.write_text("hello\n"), "cannot be read"),
    "foreign dict": (lambda m: torch.save({"weights": torch.zeros(2)}, m), "not a seq2seq.pt of elmo-pipeline (no"),
    "state_dict list": (_edit(state_dict=[1]), "its state_dict should be a dict of tensors, got list"),
    "state_dict int": (_edit(state_dict=lambda s: s["state_dict"].update(x=3)), "got int at 'x'"),
    "target_words": (_edit(target_words=5), "its target_words should be a list of words"),
    "source_words": (_edit(source_words=None), "its source_words should be a list of words"),
    "beam": (_edit(beam="5"), "its beam should be an int >= 1, got '5'"),
    "lm_weight": (_edit(lm_weight=float("nan")), "its lm_weight should be a finite number >= 0"),
    "config": (_edit(config=[1]), "its config should be a dict"),
    "source vocabulary": (_edit(source_words=[*SOURCE_WORDS[:-1], "ein"]), "its source_words are not a vocabulary"),
    "vocabulary size": (_edit(target_words=TARGET_WORDS[:4]), f"4 target_words for a model of {len(TARGET_WORDS)}"),
    "weight shape": (
        _edit(state_dict=lambda s: s["state_dict"].update({"source_embedding.weight": torch.zeros(3, 8)})),
        "size mismatch for source_embedding.weight",
    ),
    "non-finite weight": (
        _edit(state_dict=lambda s: s["state_dict"]["source_embedding.weight"].__setitem__((0, 0), float("inf"))),
        "source_embedding.weight holds 1 non-finite value",
    ),
}


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch's note on the plain pickle
@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_crafted_foreign_or_damaged_model_is_one_line_naming_it(capsys, tmp_path, setup, damage):
    run_dir, source, _ = setup
    model = run_dir / "seq2seq.pt"
    output = tmp_path / "out.en"
    output.write_text("earlier\n", encoding="utf-8")
    make, message = DAMAGES[damage]
    make(model)
    code, err = translate(capsys, run_dir, source, "--output", output, "--overwrite")
    assert code == 1 and f"--model {model}" in err and message in err, err
    assert "this ran" not in err and output.read_text(encoding="utf-8") == "earlier\n"
    assert source.read_text(encoding="utf-8") == SOURCE_TEXT


# ---- 5: --input ---------------------------------------------------------------------------------------------------


def test_a_folder_missing_or_non_utf8_input_is_named_as_translates_input(capsys, tmp_path, setup):
    run_dir, _, _ = setup
    code, err = translate(capsys, run_dir, tmp_path)
    assert code == 1 and f"--input {tmp_path} is a folder" in err and "--data" not in err
    code, err = translate(capsys, run_dir, tmp_path / "nowhere.de")
    assert code == 1 and f"--input {tmp_path / 'nowhere.de'}: no such file" in err and "--data" not in err
    latin1 = tmp_path / "latin1.de"
    latin1.write_bytes(b"ein mann .\nein m\xe4nnchen .\n")
    code, err = translate(capsys, run_dir, latin1)
    assert code == 1 and f"{latin1}:2: not UTF-8" in err


# ---- 6: generate --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "value"),
    [("--temperature", v) for v in ("nan", "inf", "-inf", "0", "-1")]
    + [("--top-k", "-1"), ("--max-tokens", "0"), ("--num-samples", "0")],
)
def test_generate_refuses_values_it_cannot_sample_with(capsys, made, option, value):
    code, err = run(capsys, "generate", "--bilm", made["lm"], f"{option}={value}")
    assert code == 1 and f"{option} must be" in err and value in err


def test_a_tiny_temperature_is_greedy_not_a_traceback(capsys, made):
    bilm, vocab = load_export(made["lm"])
    greedy = generate(bilm.eval(), vocab, ["a"], max_tokens=5, top_k=1)
    assert generate(bilm, vocab, ["a"], max_tokens=5, temperature=1e-300, seed=7) == greedy
    code, out = run(
        capsys, "generate", "--bilm", made["lm"], "--prompt", "a", "--max-tokens", "5", "--temperature", "1e-40"
    )
    assert code == 0 and out.split() == ["a", *greedy]


# ---- 7: curves and units on text that is not UTF-8 ----------------------------------------------------------------


def test_curves_and_units_name_the_file_and_line_of_a_byte_that_is_not_utf8(capsys, tmp_path, made):
    csv = tmp_path / "metrics.csv"
    csv.write_bytes(b"step,train/loss,train/tokens_seen\n0,1.0,10\n1,caf\xe9,20\n")
    code, err = run(capsys, "curves", csv, "--output", tmp_path / "c.png")
    assert code == 1 and f"{csv}:3: not UTF-8 (byte 0xe9)" in err and "re-encode the file as UTF-8" in err
    assert not (tmp_path / "c.png").exists()
    text = tmp_path / "text.txt"
    text.write_bytes(b"fine line\nanother\n\ncaf\xe9 au lait\n")
    code, err = run(capsys, "units", "--bilm", made["lm"], "--text", text, "--out", tmp_path / "cells")
    assert code == 1 and f"{text}:4: not UTF-8 (byte 0xe9 at column 4)" in err and "re-encode" in err
    assert read_sequences(text, max_lines=2) == [["fine", "line"], ["another"]]  # read only as far as it needs


@pytest.mark.parametrize("option", ["--max-lines", "--max-tokens", "--top"])
def test_units_refuses_a_count_below_one(capsys, tmp_path, made, option):
    text = tmp_path / "text.txt"
    text.write_text("the cat sat .\n", encoding="utf-8")
    code, err = run(capsys, "units", "--bilm", made["lm"], "--text", text, "--out", tmp_path / "cells", option, "0")
    assert code == 1 and f"{option} must be at least 1, got 0" in err


def test_curves_names_a_missing_log(capsys, tmp_path):
    code, err = run(capsys, "curves", tmp_path / "metrics.csv", "--output", tmp_path / "c.png")
    assert code == 1 and f"{tmp_path / 'metrics.csv'}: no such file" in err
