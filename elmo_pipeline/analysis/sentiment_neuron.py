"""`elmo-pipeline sentiment-neuron`: is there a sentiment unit in the biLM? (after Radford et al. 2017)

Each SST sentence (binary: labels 0, 1 negative, 3, 4 positive, 2 dropped; whole sentences only) is
represented by the biLM's *final states*: the forward LM's top-layer output at ``</S>`` (it has
read the whole sentence) next to the backward LM's top-layer output at ``<S>`` (the same, read
backwards) — 2P units, the outputs the LMs predict words from. (Radford et al. used the cell states
of their mLSTM; the LSTMP's cell is internal to the layer, its output is what the biLM exposes.)
The units are standardised on train, then an L1-regularised logistic regression is fitted by
proximal gradient descent (FISTA); the L1 strength is chosen on dev, and test accuracy is reported
once. The single best unit is found the same way: every unit gets its own one-feature logistic
regression on train, the one with the best dev accuracy is kept and its test accuracy reported. (The
unit with the largest weight in the L1 model, Radford et al.'s pick, is recorded too.) The picture
shows the best unit's values on test, by class.

    elmo-pipeline sentiment-neuron --bilm runs/pretrain/tiny_shared_lm/export --out runs/sentiment_neuron

SST comes from ``--sst-dir`` (default ``<--data-root>/sst5/trees``: train.txt, dev.txt, test.txt,
one labelled PTB tree per line).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from elmo_pipeline.analysis.common import batched_outputs, load_for_inference
from elmo_pipeline.data.readers import sst as sst_reader
from elmo_pipeline.models.bilm import BiLM

log = logging.getLogger(__name__)

L1_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
SST_LABELS = ["0", "1", "2", "3", "4"]


def read_sst(path: str | Path) -> list[tuple[int, list[str]]]:
    """(root label 0-4, words as raw text) of every tree in an SST trees file (the task reader's parsing)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"sentiment-neuron: {path} does not exist (--sst-dir or --data-root)")
    examples, _ = sst_reader.read_sst(path, SST_LABELS)
    return [(int(example.label), example.tokens) for example in examples]


def binary(examples: list[tuple[int, list[str]]]) -> tuple[list[list[str]], torch.Tensor]:
    """SST-2 from SST-5: 0, 1 -> 0 (negative), 3, 4 -> 1 (positive), 2 dropped."""
    kept = [(words, float(label >= 3)) for label, words in examples if label != 2]
    return [w for w, _ in kept], torch.tensor([y for _, y in kept])


# ---------------------------------------------------------------------------------------------- features


def final_states(bilm: BiLM, sentences: list[list[str]], batch_size: int = 64) -> torch.Tensor:
    """(N, 2P): the forward top layer at ``</S>`` and the backward top layer at ``<S>`` of each sentence."""
    P = bilm.config.projection_dim
    out = torch.zeros(len(sentences), 2 * P)
    for index, result in batched_outputs(bilm, sentences, batch_size):
        top = result.activations[-1].float()  # (B, T, 2P)
        last = torch.tensor([len(sentences[i]) + 1 for i in index])  # position of </S>
        rows = torch.arange(len(index))
        out[index] = torch.cat([top[rows, last, :P], top[:, 0, P:]], dim=-1)  # (B, 2P)
    return out


# ---------------------------------------------------------------------------------------------- L1 logistic regression


def fit_l1_logistic(x: torch.Tensor, y: torch.Tensor, l1: float, iterations: int = 1000) -> tuple[torch.Tensor, float]:
    """Minimise ``mean(log(1 + exp(-s z))) + l1 * |w|_1``, ``z = x w + b``, by FISTA (b unpenalised).

    Args:
        x: (N, D) features; y: (N,) labels in {0, 1}; l1: the L1 strength (0: plain logistic regression).

    Returns:
        (w (D,), b).
    """
    x, y = x.double(), y.double()
    n, d = x.shape
    xa = torch.cat([x, torch.ones(n, 1, dtype=x.dtype)], dim=1)  # (N, D + 1), the last column for b
    lipschitz = float(torch.linalg.matrix_norm(xa, ord=2)) ** 2 / (4 * n) + 1e-12
    step = 1.0 / lipschitz
    theta = torch.zeros(d + 1, dtype=x.dtype)  # (D + 1,)
    momentum, t = theta.clone(), 1.0
    for _ in range(iterations):
        grad = xa.T @ (torch.sigmoid(xa @ momentum) - y) / n  # (D + 1,)
        new = momentum - step * grad
        new[:d] = torch.sign(new[:d]) * torch.clamp(new[:d].abs() - step * l1, min=0.0)  # soft threshold
        t_next = (1 + math.sqrt(1 + 4 * t * t)) / 2
        momentum = new + (t - 1) / t_next * (new - theta)
        theta, t = new, t_next
    return theta[:d].float(), float(theta[d])


def accuracy(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, b: float) -> float:
    return float(((x @ w + b > 0).float() == y).float().mean())


@dataclass
class NeuronResult:
    """What the probe found (accuracies on test, chosen on dev)."""

    l1: float
    dev_accuracy_all: float
    test_accuracy_all: float
    nonzero_units: int
    l1_top_unit: int
    unit: int
    dev_accuracy_unit: float
    test_accuracy_unit: float
    num_units: int
    sizes: dict[str, int]
    test_accuracy_majority: float


def probe(
    train: tuple[torch.Tensor, torch.Tensor],
    dev: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    grid: tuple[float, ...] = L1_GRID,
) -> NeuronResult:
    """Fit the L1 logistic regression on train for each L1 strength, pick one on dev, report test once.

    Features are standardised with the train mean and standard deviation (so that one L1 strength
    treats every unit alike). The single unit is the best on dev of one-unit models fitted on train.
    """
    (xtr, ytr), (xdv, ydv), (xte, yte) = train, dev, test
    mean, std = xtr.mean(0), xtr.std(0).clamp(min=1e-6)
    xtr, xdv, xte = (xtr - mean) / std, (xdv - mean) / std, (xte - mean) / std
    fits = []
    for l1 in grid:
        w, b = fit_l1_logistic(xtr, ytr, l1)
        fits.append((accuracy(xdv, ydv, w, b), l1, w, b))
        log.info("L1 %.0e: dev accuracy %.4f with %d units", l1, fits[-1][0], int((w != 0).sum()))
    best_dev = max(f[0] for f in fits)
    dev_all, l1, w, b = max((f for f in fits if f[0] == best_dev), key=lambda f: f[1])  # ties: the sparser
    singles = []
    for u in range(xtr.shape[1]):
        wu, bu = fit_l1_logistic(xtr[:, u : u + 1], ytr, 0.0, iterations=300)
        singles.append((accuracy(xdv[:, u : u + 1], ydv, wu, bu), -u, wu, bu))
    dev_unit, unit, wu, bu = max(singles, key=lambda s: s[:2])  # ties: the lower index
    unit = -unit
    return NeuronResult(
        l1=l1,
        dev_accuracy_all=dev_all,
        test_accuracy_all=accuracy(xte, yte, w, b),
        nonzero_units=int((w != 0).sum()),
        l1_top_unit=int(w.abs().argmax()),
        unit=unit,
        dev_accuracy_unit=dev_unit,
        test_accuracy_unit=accuracy(xte[:, unit : unit + 1], yte, wu, bu),
        num_units=xtr.shape[1],
        sizes={"train": len(ytr), "dev": len(ydv), "test": len(yte)},
        test_accuracy_majority=float((yte == float(ytr.mean() >= 0.5)).float().mean()),
    )


def unit_name(unit: int, projection_dim: int) -> str:
    return f"fwd.{unit}" if unit < projection_dim else f"bwd.{unit - projection_dim}"


def plot_unit(values: torch.Tensor, labels: torch.Tensor, title: str, path: Path) -> None:
    """Histograms of one unit's values on the test sentences, negative vs positive."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.4))
    bins = torch.linspace(float(values.min()), float(values.max()), 41).numpy()
    ax.hist(values[labels == 0].numpy(), bins=bins, alpha=0.6, color="tab:blue", label="negative")
    ax.hist(values[labels == 1].numpy(), bins=bins, alpha=0.6, color="tab:red", label="positive")
    ax.set_xlabel("unit value")
    ax.set_ylabel("test sentences")
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    """Run ``elmo-pipeline sentiment-neuron`` with its parsed options (``commands/sentiment_neuron.py``)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sst = Path(args.sst_dir) if args.sst_dir else Path(args.data_root) / "sst5" / "trees"
    bilm, _ = load_for_inference(args.bilm)
    splits = {}
    for split in ("train", "dev", "test"):
        sentences, labels = binary(read_sst(sst / f"{split}.txt"))
        if len(set(labels.tolist())) < 2:
            raise ValueError(f"sentiment-neuron: {sst / f'{split}.txt'} needs both positive and negative sentences")
        splits[split] = (final_states(bilm, sentences, args.batch_size), labels)
        log.info("%s: %d sentences", split, len(labels))
    result = probe(splits["train"], splits["dev"], splits["test"])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = unit_name(result.unit, bilm.config.projection_dim)
    title = (
        f"unit {name}: test accuracy {result.test_accuracy_unit:.3f} alone, "
        f"{result.test_accuracy_all:.3f} with all {result.num_units} units (L1 {result.l1:g})"
    )
    plot_unit(splits["test"][0][:, result.unit], splits["test"][1], title, out / "sentiment_unit.png")
    record = {**asdict(result), "unit_name": name, "bilm": str(args.bilm), "sst": str(sst)}
    record["l1_top_unit_name"] = unit_name(result.l1_top_unit, bilm.config.projection_dim)
    (out / "results.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"SST-2 sentences: {result.sizes}; train's majority class: test accuracy {result.test_accuracy_majority:.4f}")
    print(
        f"all {result.num_units} units (L1 {result.l1:g}, {result.nonzero_units} non-zero): "
        f"test accuracy {result.test_accuracy_all:.4f} (dev {result.dev_accuracy_all:.4f})"
    )
    print(
        f"best single unit {name}: test accuracy {result.test_accuracy_unit:.4f} (dev {result.dev_accuracy_unit:.4f})"
    )
    print(f"wrote {out / 'sentiment_unit.png'} and {out / 'results.json'}")
    return 0
