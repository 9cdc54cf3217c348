"""Issue 25, weights and configs a user did not make: each refusal is one line naming the file and the fix.

Complements tests/test_hostile_inputs.py: the finetuning and BiLMSource paths of non-finite weights, the
error types of a crafted or damaged ``weights.pt``, a resumed run whose ``--model.init_from`` is gone,
``-c`` and group config files, and the same refusals through the ``elmo-pipeline`` entry point.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from cli_runs import run
from tiny_models import encoder_config

from elmo_pipeline import cli
from elmo_pipeline.errors import InputError, UnsafeCheckpointError
from elmo_pipeline.interop import save_bilm_tf
from elmo_pipeline.models import BiLM
from elmo_pipeline.models.export_folder import load_export, save_export
from elmo_pipeline.models.source import BiLMSource
from elmo_pipeline.systems.finetune_cli import check_config_files
from elmo_pipeline.text.vocab import SPECIALS, Vocabulary

ROOT = Path(__file__).parents[1]
SAMPLE = ROOT / "data" / "sample"


@pytest.fixture
def sentences(tmp_path) -> Path:
    path = tmp_path / "s.txt"
    path.write_text("the cat sat\na dog\n", encoding="utf-8")
    return path


@pytest.fixture
def published_nan(tmp_path) -> tuple[Path, Path]:
    """The published files of a tiny biLM with one NaN in ``CNN/W_cnn_0``."""
    options, weights = save_bilm_tf(BiLM(encoder_config()).eval(), tmp_path / "published")
    with h5py.File(weights, "r+") as f:
        f["CNN/W_cnn_0"][0, 0, 0, 0] = np.nan
    return Path(options), Path(weights)


# ---- 1. non-finite weights -------------------------------------------------------------------------------------


def test_every_form_of_bilm_source_refuses_non_finite_weights(tmp_path, published_nan):
    options, weights = published_nan
    with pytest.raises(InputError, match=re.escape(f"{weights}: dataset 'CNN/W_cnn_0' holds 1 non-finite")):
        BiLMSource.parse(f"{options},{weights}").load()
    bilm = BiLM(encoder_config())
    with torch.no_grad():
        bilm.token_encoder.highway.gate[0].bias[3] = float("-inf")
    export = save_export(tmp_path / "export", bilm)
    with pytest.raises(InputError, match=r"weights.pt: token_encoder.highway.gate.0.bias holds 1 non-finite"):
        BiLMSource.parse(export).load_with_vocab()


def test_finetune_says_the_weights_are_non_finite_and_names_the_file(tmp_path, monkeypatch, capsys, published_nan):
    # it used to fail much later with "a biLM activation does not fit in float16"
    options, weights = published_nan
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    code, err = run(
        capsys, "finetune", "--config", ROOT / "configs" / "finetune" / "ner_conll2003.yaml",
        "--model.head.init_args.hidden_size=16", "--model.head.init_args.num_layers=1", "--model.word_dim=8",
        "--model.word_vectors=none", "--model.char_filters=8", "--trainer.max_epochs=1",
        "--trainer.enable_progress_bar=false", f"--model.elmo={options},{weights}",
    )  # fmt: skip
    assert code == 1
    assert f"{weights}: dataset 'CNN/W_cnn_0' holds 1 non-finite value(s)" in err
    assert "float16" not in err and err.count("\n") == 1


# ---- 3. a crafted or damaged weights.pt ------------------------------------------------------------------------


class _Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_load_export_raises_the_error_classes_a_user_can_act_on(tmp_path, capsys):
    export = save_export(tmp_path / "export", BiLM(encoder_config()))
    weights = export / "weights.pt"
    good = weights.read_bytes()
    torch.save({"x": _Payload()}, weights)
    with pytest.raises(UnsafeCheckpointError, match=re.escape(f"{weights}: holds objects other than tensors")):
        load_export(export)
    assert "this must never run" not in capsys.readouterr().out
    weights.write_bytes(good[: len(good) // 2])
    with pytest.raises(InputError, match=re.escape(f"{weights}: cannot be read (truncated or corrupt?")):
        load_export(export)
    torch.save([torch.zeros(2)], weights)
    with pytest.raises(InputError, match=re.escape(f"{weights}: holds list, not a state dict of tensors")):
        load_export(export)
    weights.unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(f"{weights}: the export folder has no weights.pt")):
        load_export(export)


# ---- 4. a vocabulary with a duplicate word, through a command ------------------------------------------------


def test_embed_names_both_lines_of_a_duplicate_word_in_an_exports_vocabulary(tmp_path, capsys, sentences):
    vocab = Vocabulary([*SPECIALS, "the", "cat"])
    export = save_export(tmp_path / "export", BiLM(encoder_config(vocab_size=len(vocab), softmax="full")), vocab)
    with open(export / "vocab.txt", "a", encoding="utf-8") as f:
        f.write("dog\nthe\n")
    code, err = run(capsys, "embed", "--input", sentences, "--output", tmp_path / "e.hdf5", "--bilm", export)
    assert code == 1
    assert f"{export / 'vocab.txt'}:7: the word 'the' is already on line 4" in err
    assert not (tmp_path / "e.hdf5").exists()


# ---- 6. options.json field types, through a command ---------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "shown"), [("256", "'256' (str)"), (256.5, "256.5 (float)"), (False, "False (bool)")]
)
def test_embed_names_the_field_and_file_of_an_options_value_of_the_wrong_type(
    tmp_path, capsys, sentences, value, shown
):
    options, weights = save_bilm_tf(BiLM(encoder_config()).eval(), tmp_path / "published")
    data = json.loads(Path(options).read_text())
    data["lstm"]["dim"] = value
    Path(options).write_text(json.dumps(data))
    argv = ["embed", "--input", sentences, "--output", tmp_path / "e.hdf5", "--options", options, "--weights", weights]
    code, err = run(capsys, *argv)
    assert code == 1
    assert f"{options}: option lstm.dim must be a whole number, got {shown}" in err


def test_whole_clip_values_are_read_as_floats(tmp_path):
    from elmo_pipeline.models.bilm_tf import read_options

    options, _ = save_bilm_tf(BiLM(encoder_config()).eval(), tmp_path / "published")
    data = json.loads(Path(options).read_text())
    data["lstm"].update(cell_clip=3, proj_clip=2.5)
    Path(options).write_text(json.dumps(data))
    config = read_options(options)
    assert (config.cell_clip, config.proj_clip) == (3.0, 2.5) and isinstance(config.cell_clip, float)


# ---- 2. --model.init_from of a resumed run ------------------------------------------------------------------


def _pretrain_args(steps: int) -> list[str]:
    return [
        "--config", str(ROOT / "configs" / "pretrain" / "tiny.yaml"),
        f"--data.sources=[{SAMPLE / 'us_speeches.txt.gz'}]", "--data.weights=null",
        f"--data.val_sources=[{SAMPLE / 'wikitext2_valid_excerpt.txt'}]", "--data.val_max_sentences=8",
        "--data.vocab_max_size=300", "--data.batch_size=4", "--model.bilm.num_samples=20",
        f"--trainer.max_steps={steps}", "--trainer.val_check_interval=2", "--trainer.enable_progress_bar=false",
    ]  # fmt: skip


def test_a_resumed_run_whose_init_from_is_gone_warns_and_resumes(tmp_path, monkeypatch, capsys, caplog):
    # the source sets an architecture other than the config's: the checkpoint must supply it on resume
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    source = save_export(tmp_path / "source", BiLM(encoder_config()))
    assert run(capsys, "pretrain", *_pretrain_args(2), f"--model.init_from={source}")[0] == 0
    (checkpoint,) = (tmp_path / "runs" / "pretrain" / "tiny" / "checkpoints").glob("best-*.ckpt")
    (saved,) = (tmp_path / "runs" / "pretrain" / "tiny" / "logs").glob("version_*/config.yaml")
    check_config_files(["--config", str(saved)])  # the config a run saves passes the check it resumes through
    for path in sorted(source.iterdir()):
        path.unlink()
    source.rmdir()
    for ckpt_path in (checkpoint, "last"):  # a file (LightningCLI reads its hyper-parameters), or resolved later
        caplog.clear()
        with caplog.at_level("WARNING"):
            code, _ = run(capsys, "pretrain", "fit", "-c", saved, "--trainer.max_steps=4", "--ckpt_path", ckpt_path)
        assert code == 0
        assert any(f"--model.init_from {source} is not there; the checkpoint" in r.message for r in caplog.records)


# ---- 5. --config files that are not plain data --------------------------------------------------------------


EVIL_TAG = 'trainer:\n  max_steps: !!python/object/apply:os.system ["echo PWNED"]\n'
EVIL_CLASS = "trainer:\n  callbacks:\n    - class_path: os.system\n      init_args: {command: echo PWNED}\n"


@pytest.mark.parametrize(
    ("content", "option", "message"),
    [
        (EVIL_TAG, "-c", ":2: not a plain YAML config"),
        (EVIL_CLASS, "-c", "class_path 'os.system' is not a class of elmo_pipeline, lightning or torch"),
        ('max_steps: !!python/object/apply:os.system ["echo PWNED"]\n', "--trainer", ":1: not a plain YAML config"),
        ("max_steps: !!python/name:os.system\n", "--trainer=", ":1: not a plain YAML config"),
    ],
    ids=["c-tag", "c-class_path", "trainer-group-tag", "trainer=group-name-tag"],
)
@pytest.mark.parametrize("command", ["pretrain", "finetune"])
def test_short_and_group_config_files_are_checked_too(capsys, tmp_path, content, option, message, command):
    config = tmp_path / "evil.yaml"
    config.write_text(content)
    argv = [f"{option}{config}"] if option.endswith("=") else [option, str(config)]
    code = cli.main([command, *argv])
    captured = capsys.readouterr()
    assert code == 1 and "PWNED" not in captured.out
    assert f"{config}" in captured.err and message in captured.err and captured.err.count("\n") == 1


def test_every_shipped_config_passes_the_config_check():
    configs = sorted((ROOT / "configs").rglob("*.yaml"))
    assert len(configs) > 5
    for config in configs:
        check_config_files(["--config", str(config)])


@pytest.mark.parametrize("command", ["pretrain", "finetune"])
def test_help_and_ordinary_argument_errors_are_unchanged(capsys, command):
    with pytest.raises(SystemExit) as exit_:
        cli.main([command, "--help"])
    assert exit_.value.code == 0 and "--config" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        cli.main([command, "fit", "--trainer.max_steps=many"])
    assert exit_.value.code == 2 and "max_steps" in capsys.readouterr().err
