"""`elmo-pipeline curves` reads a Lightning CSV log and draws the learning curves."""

from __future__ import annotations

import pytest

from elmo_pipeline.analysis.curves import plot_curves, read_metrics


def test_curves_from_a_csv_log(tmp_path):
    log = tmp_path / "metrics.csv"
    rows = ["step,train/loss,train/tokens_seen,val/ppl"]
    rows += [f"{s},{10 - s / 10},{1000 * (s + 1)}," for s in range(0, 40)]
    rows += ["19,,,500.0", "39,,,300.0"]
    log.write_text("\n".join(rows) + "\n")
    parsed = read_metrics(log)
    assert parsed[0] == {"step": 0.0, "train/loss": 10.0, "train/tokens_seen": 1000.0}
    out = plot_curves(log, tmp_path / "img" / "curves.png", title="t")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000


def test_curves_reject_a_log_without_training_rows(tmp_path):
    log = tmp_path / "metrics.csv"
    log.write_text("step,val/acc\n1,0.5\n")
    with pytest.raises(ValueError, match="no train/loss"):
        plot_curves(log, tmp_path / "x.png")
