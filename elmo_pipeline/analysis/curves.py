"""`elmo-pipeline curves`: learning curves of a pretraining run from its CSV log.

elmo-pipeline curves runs/pretrain/tiny/logs/version_0/metrics.csv --output curves.png
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from elmo_pipeline.errors import InputError, MissingFileError
from elmo_pipeline.files import read_utf8


def read_metrics(path: str | Path) -> list[dict[str, float]]:
    """Rows of a Lightning CSV log, numbers only (empty cells left out)."""
    rows = []
    if not Path(path).is_dir() and not Path(path).is_file():
        raise MissingFileError(f"{path}: no such file; give a run's logs/version_N/metrics.csv")
    text = read_utf8(path, "metrics CSV")
    for number, row in enumerate(csv.DictReader(io.StringIO(text, newline="")), start=2):
        try:
            rows.append({k: float(v) for k, v in row.items() if v not in ("", None)})
        except (TypeError, ValueError):
            raise InputError(f"{path}:{number}: a cell is not a number; is this a Lightning metrics.csv?") from None
    return rows


def plot_curves(metrics_csv: str | Path, output: str | Path, title: str | None = None) -> Path:
    """Training loss (per step and a moving average) and validation perplexity against tokens seen."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_csv)
    train = [(r["train/tokens_seen"], r["train/loss"]) for r in rows if "train/loss" in r and "train/tokens_seen" in r]
    if not train:
        raise ValueError(f"{metrics_csv}: no train/loss with train/tokens_seen rows; is this a pretraining log?")
    tokens_at_step = {r["step"]: r["train/tokens_seen"] for r in rows if "train/tokens_seen" in r}
    steps = sorted(tokens_at_step)
    val = []
    for r in rows:
        if "val/ppl" in r:  # place a validation at the tokens seen by its step
            before = [s for s in steps if s <= r["step"]]
            val.append((tokens_at_step[before[-1]] if before else 0.0, r["val/ppl"]))
    window = max(1, len(train) // 50)
    smooth = [
        sum(loss for _, loss in train[max(0, i - window + 1) : i + 1]) / len(train[max(0, i - window + 1) : i + 1])
        for i in range(len(train))
    ]
    fig, (ax_loss, ax_ppl) = plt.subplots(1, 2, figsize=(11, 4))
    xs = [t / 1e6 for t, _ in train]
    ax_loss.plot(xs, [loss for _, loss in train], color="0.8", lw=0.6, label="per step")
    ax_loss.plot(xs, smooth, color="C0", label=f"moving average ({window} logs)")
    ax_loss.set(xlabel="tokens seen (millions)", ylabel="training loss (training softmax)", title="training loss")
    ax_loss.legend()
    if val:
        ax_ppl.plot([t / 1e6 for t, _ in val], [p for _, p in val], "o-", color="C1")
        ax_ppl.set_yscale("log")
        for t, p in val:
            if math.isfinite(p):
                ax_ppl.annotate(f"{p:.0f}", (t / 1e6, p), textcoords="offset points", xytext=(0, 6), ha="center")
    ax_ppl.set(xlabel="tokens seen (millions)", ylabel="perplexity (full softmax)", title="validation perplexity")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=110)
    plt.close(fig)
    return output
