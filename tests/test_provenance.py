"""One pretraining per results folder: reproduce keeps its export, bilm/, CSV log and curve together, and says so."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import torch

from elmo_pipeline.models import BiLM, BiLMConfig
from elmo_pipeline.models.export_folder import save_export
from elmo_pipeline.models.source import BiLMSource
from elmo_pipeline.reproduce.provenance import check_provenance, joined_log, keep_given_bilm, keep_pretraining
from elmo_pipeline.text import Vocabulary


def _pretraining(root: Path, seed: int, best: float) -> tuple[dict, Path]:
    """A pretraining run folder as reproduce leaves it: an export, and a CSV log in two attempts (resumed)."""
    torch.manual_seed(seed)
    vocab = Vocabulary.build([w.split() for w in ("the cat sat", "a dog ran")])
    bilm = BiLM(BiLMConfig.preset("tiny", vocab_size=len(vocab), cell_dim=16, projection_dim=8, num_samples=5))
    run_dir = root / f"pretrain{seed}"
    export = save_export(run_dir / "export", bilm, vocab, metrics={"best_score": best, "global_step": 40})
    fields = ["step", "train/loss", "train/tokens_seen", "val/ppl"]
    attempts = {
        "fit": [(s, 5.0 - s / 20, 100 * s, "") for s in (0, 10, 20, 30)] + [(19, "", "", 2 * best)],
        "fit-2": [(s, 5.0 - s / 20, 100 * s, "") for s in (20, 30, 40)] + [(39, "", "", best)],  # resumed at 20
    }
    for version, rows in attempts.items():
        path = run_dir / "logs" / version / "metrics.csv"
        path.parent.mkdir(parents=True)
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(fields)
            writer.writerows(rows)
    return {"export": str(export), "fingerprint": f"print{seed}", "global_step": 40}, run_dir


def test_a_results_folder_holds_one_pretraining_and_says_which(tmp_path):
    out = tmp_path / "results"
    first, first_dir = _pretraining(tmp_path, 0, best=300.0)
    provenance = keep_pretraining(first, first_dir, out)
    assert check_provenance(out) == []
    assert provenance["pretraining"]["fingerprint"] == "print0"
    assert (out / "pretrain_curve.png").stat().st_size > 1000
    assert BiLMSource.parse(str(out / "export")).identity() == BiLMSource.parse(first["export"]).identity()
    assert (out / "bilm" / "kept_from.txt").read_text().strip() == provenance["export_identity"]
    steps = [float(r["step"]) for r in csv.DictReader(open(out / "metrics.csv"))]
    assert steps == [0, 10, 19, 20, 30, 40, 39]  # the cut-off attempt's steps from 20 on are the resumed one's

    # a second pretraining replaces all of it: no file of the first is left to mix with the new table
    second, second_dir = _pretraining(tmp_path, 1, best=250.0)
    keep_pretraining(second, second_dir, out)
    assert check_provenance(out) == []
    assert BiLMSource.parse(str(out / "export")).identity() == BiLMSource.parse(second["export"]).identity()
    assert json.loads((out / "provenance.json").read_text())["pretraining"]["fingerprint"] == "print1"


def test_check_provenance_finds_a_mixed_folder(tmp_path):
    out = tmp_path / "results"
    first, first_dir = _pretraining(tmp_path, 0, best=300.0)
    second, second_dir = _pretraining(tmp_path, 1, best=250.0)
    keep_pretraining(first, first_dir, out)
    (out / "results.json").write_text(json.dumps({"pretrain": {"fingerprint": "print0"}}))
    assert check_provenance(out) == []

    shutil.rmtree(out / "export")  # the export of another run copied in by hand: what results/cpu_1h once held
    shutil.copytree(second["export"], out / "export")
    problems = check_provenance(out)
    assert any("export" in p and "not the export" in p for p in problems)
    assert any("bilm" in p and "kept_from.txt" in p for p in problems)

    keep_pretraining(first, first_dir, out)
    log = [r for r in csv.DictReader(open(second_dir / "logs" / "fit-2" / "metrics.csv"))]
    with open(out / "metrics.csv", "w", newline="") as f:  # another run's log
        writer = csv.DictWriter(f, fieldnames=list(log[0]))
        writer.writeheader()
        writer.writerows(log)
    problems = check_provenance(out)
    assert any("metrics.csv" in p and "sha256" in p for p in problems)
    assert any("metrics.csv" in p and "best val/ppl" in p for p in problems)

    keep_pretraining(first, first_dir, out)
    (out / "results.json").write_text(json.dumps({"pretrain": {"fingerprint": "print1"}}))
    assert any("another pretraining" in p for p in check_provenance(out))
    assert check_provenance(tmp_path / "nothing")[0].endswith("does not say which pretraining it holds")


def test_a_given_bilm_keeps_the_folder_only_if_it_is_that_pretrainings(tmp_path):
    out = tmp_path / "results"
    first, first_dir = _pretraining(tmp_path, 0, best=300.0)
    second, _ = _pretraining(tmp_path, 1, best=250.0)
    keep_pretraining(first, first_dir, out)
    # --bilm results/bilm (the documented way to rebuild the table): the folder stays as it is
    assert keep_given_bilm(str(out / "bilm"), out)["pretraining"]["fingerprint"] == "print0"
    assert (out / "export").is_dir() and (out / "metrics.csv").is_file()
    # another biLM: the first pretraining's files go, the folder names the biLM it used
    provenance = keep_given_bilm(second["export"], out)
    assert provenance["pretraining"] is None and provenance["bilm"] == second["export"]
    assert not any((out / name).exists() for name in ("export", "metrics.csv", "pretrain_curve.png", "bilm"))
    assert check_provenance(out) == []


def test_a_given_bilm_inside_the_results_folder_is_never_removed(tmp_path):
    out = tmp_path / "results"
    first, first_dir = _pretraining(tmp_path, 0, best=300.0)
    second, _ = _pretraining(tmp_path, 1, best=250.0)
    keep_pretraining(first, first_dir, out)
    shutil.rmtree(out / "export")
    shutil.copytree(second["export"], out / "export")  # the user put their own biLM there
    keep_given_bilm(str(out / "export"), out)
    assert BiLMSource.parse(str(out / "export")).identity() == BiLMSource.parse(second["export"]).identity()


def test_joined_log_keeps_the_later_attempt_of_a_repeated_step(tmp_path):
    paths = []
    for name, steps in (("fit", (0, 5, 9)), ("fit-2", (5, 9, 12))):
        path = tmp_path / name / "metrics.csv"
        path.parent.mkdir()
        path.write_text("step,train/loss\n" + "".join(f"{s},{name}\n" for s in steps))
        paths.append(path)
    assert [(r["step"], r["train/loss"]) for r in joined_log(paths)] == [
        ("0", "fit"),
        ("5", "fit-2"),
        ("9", "fit-2"),
        ("12", "fit-2"),
    ]
