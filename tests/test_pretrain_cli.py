"""`elmo-pipeline pretrain` end to end on the bundled sample: fit, export, resume, test, W&B offline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from elmo_pipeline.cli import main as cli_main
from elmo_pipeline.models.export_folder import load_export

ROOT = Path(__file__).parents[1]
SAMPLE = ROOT / "data" / "sample"
TINY = str(ROOT / "configs" / "pretrain" / "tiny.yaml")
WANDB = str(ROOT / "configs" / "common" / "wandb.yaml")


def _overrides(steps: int) -> list[str]:
    sources = json.dumps([str(SAMPLE / "us_speeches.txt.gz")])
    return [
        f"--data.sources={sources}",
        "--data.weights=null",
        f"--data.val_sources=[{SAMPLE / 'wikitext2_valid_excerpt.txt'}]",
        f"--data.test_sources=[{SAMPLE / 'wikitext2_test_excerpt.txt'}]",
        "--data.val_max_sentences=40",
        "--data.batch_size=8",
        "--data.vocab_max_size=2000",
        "--model.bilm.cell_dim=32",
        "--model.bilm.projection_dim=16",
        "--model.bilm.num_samples=50",
        f"--trainer.max_steps={steps}",
        "--trainer.val_check_interval=4",
        "--trainer.enable_progress_bar=false",
        "--trainer.log_every_n_steps=2",
    ]


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    return tmp_path


def test_fit_exports_resumes_and_tests(in_tmp, capsys):
    assert cli_main(["pretrain", "--config", TINY, *_overrides(8)]) == 0
    export = in_tmp / "runs" / "pretrain" / "tiny" / "export"
    assert {p.name for p in export.iterdir()} >= {"config.json", "weights.pt", "vocab.txt", "run.yaml", "metrics.json"}
    bilm, vocab = load_export(export)
    assert bilm.config.cell_dim == 32 and len(vocab) == bilm.config.vocab_size <= 2000
    metrics = json.loads((export / "metrics.json").read_text())
    assert metrics["global_step"] == 8 and metrics["monitor"] == "val/ppl"
    assert "cell_dim: 32" in (export / "run.yaml").read_text()  # the resolved config travels with the weights
    rows = (in_tmp / "runs/pretrain/tiny/logs/version_0/metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert {"train/loss", "train/tokens_per_s", "val/ppl", "val/ppl_forward", "val/ppl_backward"} <= set(header)

    # resume from last.ckpt and train 4 more steps. A run that stopped at max_steps counts its epoch
    # as finished (Lightning's rule), so the continuation is the next epoch; an interrupted run resumes
    # mid-epoch exactly (tests/test_pretrain_resume.py)
    resume = ["pretrain", "fit", "--config", TINY, *_overrides(12), "--trainer.max_epochs=2", "--ckpt_path", "last"]
    assert cli_main(resume) == 0
    metrics = json.loads((export / "metrics.json").read_text())
    assert metrics["global_step"] == 12  # continued from step 8, not from 0
    assert metrics["tokens_seen"] > 0

    capsys.readouterr()
    assert cli_main(["pretrain", "test", "--config", TINY, *_overrides(12), "--ckpt_path", "best"]) == 0
    out = capsys.readouterr().out
    assert "test/ppl" in out


def test_wandb_logs_offline_with_resolved_config(in_tmp, monkeypatch):
    from elmo_pipeline.systems import tracking

    seen = {}
    finalize = tracking.WandbLogger.finalize

    def capture(self, status):  # read the run's state just before it is finished
        seen["config"] = dict(self.experiment.config)
        seen["summary"] = {k: self.experiment.summary[k] for k in self.experiment.summary.keys()}
        seen["offline"] = self.experiment.settings.mode
        finalize(self, status)

    monkeypatch.setattr(tracking.WandbLogger, "finalize", capture)
    assert cli_main(["pretrain", "--config", TINY, "--config", WANDB, *_overrides(4)]) == 0
    assert seen["offline"] in ("offline", "dryrun")  # no API key: offline (wandb calls it dryrun), synced later
    assert len(list((in_tmp / "runs" / "wandb" / "wandb").glob("offline-run-*/*.wandb"))) == 1
    resolved = seen["config"]["resolved_config"]
    assert resolved["model"]["bilm"]["cell_dim"] == 32 and resolved["data"]["batch_size"] == 8
    assert {"train/loss", "train/tokens_per_s", "train/grad_norm", "val/ppl", "val/ppl_forward"} <= set(seen["summary"])
