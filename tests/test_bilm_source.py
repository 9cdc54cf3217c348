"""One biLM loader: every form of ``--bilm`` parses once, reads only what it needs, and works in every command."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import pytest
import torch

import elmo_pipeline.systems.pretrain_cli  # noqa: F401  (Lightning's log handler binds the real stderr)
from elmo_pipeline.cli import main as cli_main
from elmo_pipeline.interop import save_bilm_tf
from elmo_pipeline.models import BiLM, BiLMConfig
from elmo_pipeline.models.export_folder import save_export
from elmo_pipeline.models.source import BiLMSource, arm_of
from elmo_pipeline.text import Vocabulary

ROOT = Path(__file__).parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "tasks"


def _tiny_bilm(seed: int = 0) -> tuple[BiLM, Vocabulary]:
    torch.manual_seed(seed)
    vocab = Vocabulary.build([w.split() for w in ("the cat sat", "a dog ran", "the film was good")])
    config = BiLMConfig.preset("tiny", vocab_size=len(vocab), cell_dim=16, projection_dim=8, num_samples=5)
    return BiLM(config), vocab


@pytest.fixture
def forms(tmp_path) -> dict[str, str]:
    """The same tiny biLM as an export folder, a published folder, a published pair, and the random control."""
    bilm, vocab = _tiny_bilm()
    export = save_export(tmp_path / "export", bilm, vocab)
    options, weights = save_bilm_tf(bilm, tmp_path / "published")
    return {
        "export": str(export),
        "published folder": str(tmp_path / "published"),
        "OPTIONS,WEIGHTS": f"{options},{weights}",
        "random": f"random:{export}",
    }


def test_parse_reads_no_file_and_names_the_arm():
    assert BiLMSource.parse("random:nowhere/export").arm == "random_bilm"
    assert BiLMSource.parse("a.json,b.hdf5").paths == (Path("a.json"), Path("b.hdf5"))
    assert str(BiLMSource.parse("random:a.json, b.hdf5")) == "random:a.json,b.hdf5"
    assert arm_of(None) == "baseline" and arm_of("x") == "elmo" and arm_of("random:x") == "random_bilm"
    with pytest.raises(ValueError, match="expected an export folder"):
        BiLMSource.parse("a,b,c")


def test_config_needs_no_weights_and_the_control_is_seeded(forms, monkeypatch):
    expected = BiLMSource.parse(forms["export"]).load().config
    for name, spec in forms.items():
        config = BiLMSource.parse(spec).config()
        assert (config.cell_dim, config.projection_dim) == (16, 8), name
    # the random control reads only the configuration: no weight file is opened
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("the random control loaded weights"))
    random_a = BiLMSource.parse(forms["random"]).load(seed=3, frozen=True)
    random_b = BiLMSource.parse(forms["random"]).load(seed=3)
    assert random_a.config == expected and not any(p.requires_grad for p in random_a.parameters())
    for a, b in zip(random_a.state_dict().values(), random_b.state_dict().values()):
        assert torch.equal(a, b)


def test_identity_follows_the_weights(forms, tmp_path):
    export = BiLMSource.parse(forms["export"])
    assert export.identity() == BiLMSource.parse(forms["random"]).identity()
    published = BiLMSource.parse(forms["published folder"])
    assert published.identity() == BiLMSource.parse(forms["OPTIONS,WEIGHTS"]).identity()
    before = export.identity()
    (Path(forms["export"]) / "weights.pt").write_bytes(b"retrained")
    assert export.identity() != before
    with pytest.raises(FileNotFoundError, match="no biLM at"):
        BiLMSource.parse(str(tmp_path / "missing")).config()


# ---- every command that takes a biLM accepts every form ---------------------------------------------------------
FORMS = ["export", "published folder", "OPTIONS,WEIGHTS", "random"]


@pytest.mark.parametrize("form", FORMS)
def test_embed_and_export_take_every_form(forms, form, tmp_path):
    text = tmp_path / "s.txt"
    text.write_text("the cat sat\na dog ran far\n")
    out = tmp_path / f"{form}.hdf5"
    assert cli_main(["embed", "--bilm", forms[form], "--input", str(text), "--output", str(out), "--no-progress"]) == 0
    with h5py.File(out) as f:
        assert f["1"].shape == (3, 4, 16)
    folder = tmp_path / f"published-{form}"
    assert cli_main(["export", "--bilm", forms[form], "--format", "bilm-tf", "--output", str(folder)]) == 0
    assert BiLMSource.parse(str(folder)).config().projection_dim == 8


@pytest.mark.parametrize("form", FORMS)
def test_analysis_commands_take_every_form(forms, form, tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text('He said " the cat sat " and left .\nThe dog ran .\n')
    assert cli_main(["units", "--bilm", forms[form], "--text", str(text), "--out", str(tmp_path / "cells")]) == 0
    sst = tmp_path / "trees"
    sst.mkdir(exist_ok=True)
    lines = ["(4 (3 great) (2 film))", "(0 (1 awful) (2 film))", "(3 (3 good) (2 fun))", "(1 (1 dull) (2 plot))"]
    for split in ("train", "dev", "test"):
        (sst / f"{split}.txt").write_text("\n".join(lines * 3) + "\n")
    neuron = ["sentiment-neuron", "--bilm", forms[form], "--sst-dir", str(sst), "--out", str(tmp_path / "neuron")]
    assert cli_main(neuron) == 0
    capsys.readouterr()
    code = cli_main(["generate", "--bilm", forms[form], "--prompt", "the", "--max-tokens", "3"])
    if form in ("export", "random"):  # a softmax and a vocabulary: it writes words
        assert code == 0 and capsys.readouterr().out.strip()
    else:  # the published files hold no softmax: a clear refusal, not a crash
        assert code == 1 and "cannot predict words" in capsys.readouterr().err


@pytest.mark.parametrize("form", FORMS)
def test_finetune_takes_every_form(forms, form, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    config = str(ROOT / "configs" / "finetune" / "sentiment_sst5.yaml")
    results = tmp_path / "results.json"
    args = ["finetune", "--config", config, "--data.data_root", str(FIXTURES), "--model.elmo", forms[form]]
    args += ["--model.word_vectors", "none"]
    args += ["--trainer.max_epochs", "1", "--data.train_subtrees", "false", "--results_path", str(results)]
    args += ["--trainer.enable_progress_bar", "false", "--data.cache_dir", str(tmp_path / "cache")]
    assert cli_main(args) == 0
    record = json.loads(results.read_text())
    assert record["arm"] == ("random_bilm" if form == "random" else "elmo") and record["mix_weights"]


@pytest.mark.parametrize("form", FORMS)
def test_reproduce_takes_every_form(forms, form, tmp_path, capsys):
    preset = ["--preset", "demo", "--work-dir", str(tmp_path / "work"), "--output", str(tmp_path / "out")]
    assert cli_main(["reproduce", *preset, "--bilm", forms[form], "--dry-run", "--no-wandb"]) == 0
    assert "elmo" in capsys.readouterr().out


def test_keep_bilm_replaces_a_biLM_kept_from_another_pretraining(tmp_path):
    from elmo_pipeline.reproduce.provenance import keep_bilm

    first, second = (str(save_export(tmp_path / f"export{seed}", *_tiny_bilm(seed))) for seed in (0, 1))
    kept = keep_bilm(first, tmp_path / "results" / "bilm")
    weights = kept / "weights.hdf5"
    written = weights.stat().st_mtime_ns
    assert keep_bilm(first, kept) == kept and weights.stat().st_mtime_ns == written  # same export: not rewritten

    def conv(spec: str | Path) -> torch.Tensor:
        return BiLMSource.parse(str(spec)).load().state_dict()["token_encoder.convs.0.weight"]

    assert not torch.equal(conv(kept), conv(second))
    keep_bilm(second, kept)  # a new pretraining: the folder must now hold its weights, not the earlier ones
    assert torch.equal(conv(kept), conv(second))
    assert (kept / "kept_from.txt").read_text().strip() == BiLMSource.parse(second).identity()
    assert not any(p.name.startswith(".bilm.tmp") for p in kept.parent.iterdir())
