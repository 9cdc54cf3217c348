"""`elmo-pipeline ablation`: one biLM per recurrent cell, same data and budget; perplexity, speed, size.

In the spirit of Greff et al. 2017 ("LSTM: A Search Space Odyssey"), on a laptop scale: every cell
of elmo_pipeline/modules/cells.py trains the same biLM (same preset, seed, data order, optimizer)
for the same budget, ``--max-steps`` optimizer steps or ``--max-minutes`` of training, and is then
evaluated with the full softmax on held-out text. Tokens/s is the steady-state training rate (whole
steps: data, forward, backward, update), measured after the first 10 steps.

    elmo-pipeline ablation --cells lstmp,lstm,coupled,peephole,gru,layernorm_lstm \\
        --sources ../shared/data/lm/bbc_news/bbc_news.txt.gz \\
                  ../shared/data/lm/nltk_brown/brown_500docs_tags_stripped.txt.gz \\
        --val ../shared/data/wikitext2/valid.txt --val-tokenizer wikitext --max-steps 600 --out runs/ablation

Writes ``--out``/ablation.md (the table, the command and the machine), ablation.png (training loss
curves, held-out perplexity, tokens/s) and results.json (everything, including the loss curves).
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np

from elmo_pipeline.data.lm import load_or_build_vocabulary
from elmo_pipeline.data.lm_datamodule import LMDataModule
from elmo_pipeline.errors import TrainingDiverged
from elmo_pipeline.machine import describe_machine
from elmo_pipeline.models.config import BiLMConfig
from elmo_pipeline.modules.cells import CELLS
from elmo_pipeline.systems.pretrain import PretrainSystem

log = logging.getLogger(__name__)


class _Recorder(L.Callback):
    """Training loss and (time, tokens seen) after every step."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.marks: list[tuple[float, int]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if outputs is not None:
            self.losses.append(float(outputs["loss"]))
        self.marks.append((time.perf_counter(), pl_module.tokens_seen))

    def tokens_per_s(self, skip: int = 10) -> float:
        start = min(skip, max(0, len(self.marks) // 5))
        if len(self.marks) - start < 2:
            return float("nan")
        (t0, n0), (t1, n1) = self.marks[start], self.marks[-1]
        return (n1 - n0) / max(t1 - t0, 1e-9)


def train_cell(cell: str, args: argparse.Namespace, vocab_path: Path, out_dir: Path) -> dict[str, Any]:
    """Train and evaluate the biLM with ``cell``; return its row of the table."""
    L.seed_everything(args.seed, workers=True, verbose=False)
    sizes = {k: v for k, v in (("projection_dim", args.projection_dim), ("cell_dim", args.cell_dim)) if v}
    config = BiLMConfig.preset(args.preset, cell=cell, num_samples=args.num_samples, dropout=args.dropout, **sizes)
    system = PretrainSystem(config, vocab_size=args.vocab_size, optimizer=args.optimizer, lr=args.lr)
    data = LMDataModule(
        sources=args.sources,
        vocab_path=str(vocab_path),
        weights=args.weights,
        val_sources=args.val,
        tokenizer=args.tokenizer,
        eval_tokenizer=args.val_tokenizer,
        max_tokens=args.max_tokens,
        batch_size=args.batch_size,
        eval_batch_size=64,
        shuffle_buffer=args.shuffle_buffer,
        val_max_sentences=args.val_max_sentences,
        seed=args.seed,
    )
    recorder = _Recorder()
    common: dict[str, Any] = dict(
        accelerator="auto", devices=1, logger=False, enable_checkpointing=False, enable_model_summary=False
    )
    trainer = L.Trainer(
        **common,
        max_steps=args.max_steps or -1,
        max_epochs=-1,
        max_time=timedelta(minutes=args.max_minutes) if args.max_minutes else None,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        gradient_clip_val=10.0,
        callbacks=[recorder],
        enable_progress_bar=False,
        default_root_dir=out_dir,
    )
    start = time.perf_counter()
    try:
        trainer.fit(system, datamodule=data)
    except TrainingDiverged:  # recorded (stopped_early) and plotted; the other cells still run
        log.warning("ablation: %s diverged: %s", cell, system.health_stop)
    train_seconds = time.perf_counter() - start
    metrics = L.Trainer(**common, enable_progress_bar=False).validate(system, datamodule=data, verbose=False)[0]
    bilm = system.bilm
    recurrent = [*bilm.forward_layers, *bilm.backward_layers]
    return {
        "cell": cell,
        "parameters": bilm.num_parameters(),
        "parameters_without_softmax": bilm.num_parameters(include_softmax=False),
        "recurrent_parameters": sum(p.numel() for m in recurrent for p in m.parameters()),
        "steps": trainer.global_step,
        "train_seconds": train_seconds,
        "tokens_seen": system.tokens_seen,
        "tokens_per_s": recorder.tokens_per_s(),
        "train_loss_last50": float(np.mean(recorder.losses[-50:])) if recorder.losses else float("nan"),
        "val_ppl": float(metrics["val/ppl"]),
        "val_ppl_forward": float(metrics["val/ppl_forward"]),
        "val_ppl_backward": float(metrics["val/ppl_backward"]),
        "stopped_early": system.health_stop,
        "losses": recorder.losses,
        "config": config.to_dict(),
    }


def write_table(results: list[dict[str, Any]], header: str, path: Path) -> None:
    rows = [
        "| cell | parameters (all / without softmax / recurrent) | steps | tokens/s | train loss (last 50 steps) "
        "| held-out ppl (fwd / bwd) |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        rows.append(
            f"| {r['cell']} | {r['parameters'] / 1e6:.2f}M / {r['parameters_without_softmax'] / 1e6:.3f}M / "
            f"{r['recurrent_parameters'] / 1e3:.0f}k | {r['steps']} | {r['tokens_per_s']:.0f} | "
            f"{r['train_loss_last50']:.3f} | **{r['val_ppl']:.1f}** ({r['val_ppl_forward']:.1f} / "
            f"{r['val_ppl_backward']:.1f}) |"
        )
    path.write_text(header + "\n\n" + "\n".join(rows) + "\n")


def plot(results: list[dict[str, Any]], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_ppl, ax_speed) = plt.subplots(1, 3, figsize=(14, 4.2), gridspec_kw={"width_ratios": [1.6, 1, 1]})
    colours = plt.get_cmap("tab10")
    names = [r["cell"] for r in results]
    for k, r in enumerate(results):
        losses = np.asarray(r["losses"])
        window = max(1, min(25, len(losses) // 10))
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid") if len(losses) else losses
        label = f"{r['cell']} ({r['recurrent_parameters'] / 1e3:.0f}k recurrent)"
        ax_loss.plot(np.arange(len(smooth)) + window, smooth, color=colours(k), label=label, linewidth=1.2)
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel(f"training loss (sampled softmax, mean of {window} steps)")
    ax_loss.legend(fontsize=8)
    ax_ppl.bar(names, [r["val_ppl"] for r in results], color=[colours(k) for k in range(len(results))])
    ax_ppl.set_ylabel("held-out perplexity (full softmax)")
    ax_speed.bar(names, [r["tokens_per_s"] for r in results], color=[colours(k) for k in range(len(results))])
    ax_speed.set_ylabel("training tokens/s")
    for ax in (ax_ppl, ax_speed):
        ax.tick_params(axis="x", rotation=35)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="elmo-pipeline ablation", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cells", default=",".join(CELLS), help=f"comma-separated, from {', '.join(CELLS)}")
    parser.add_argument("--sources", nargs="+", required=True, help="training corpora (files, globs or hf:<id>)")
    parser.add_argument("--weights", type=float, nargs="+", default=None, help="sampling weight per source")
    parser.add_argument("--val", nargs="+", required=True, help="held-out text for the perplexity")
    parser.add_argument("--tokenizer", default="regex", choices=["regex", "whitespace", "wikitext"])
    parser.add_argument("--val-tokenizer", default="regex", choices=["regex", "whitespace", "wikitext"])
    parser.add_argument("--val-max-sentences", type=int, default=2000)
    parser.add_argument("--vocab", default=None, help="vocabulary file (default: <out>/vocab.txt, built if missing)")
    parser.add_argument("--vocab-max-size", type=int, default=20_000)
    budget = parser.add_mutually_exclusive_group(required=True)
    budget.add_argument("--max-steps", type=int, default=None, help="the budget in optimizer steps, per cell")
    budget.add_argument("--max-minutes", type=float, default=None, help="the budget in minutes of training, per cell")
    parser.add_argument("--preset", default="tiny", choices=["tiny", "small", "original"])
    parser.add_argument("--projection-dim", type=int, default=None, help="P (default: the preset's)")
    parser.add_argument("--cell-dim", type=int, default=None, help="H of lstmp (default: the preset's)")
    parser.add_argument("--num-samples", type=int, default=512, help="negatives of the sampled softmax")
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=40, help="tokens per training sentence piece")
    parser.add_argument("--shuffle-buffer", type=int, default=5000)
    parser.add_argument("--optimizer", default="adagrad", choices=["adagrad", "adam", "sgd"])
    parser.add_argument("--lr", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--resume", action="store_true", help="keep the cells already in <out>/results.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cells = [c.strip() for c in args.cells.split(",") if c.strip()]
    unknown = [c for c in cells if c not in CELLS]
    if unknown or not cells:
        raise ValueError(f"ablation: unknown cells {unknown}; choose from {list(CELLS)} (--cells)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    vocab_path = Path(args.vocab) if args.vocab else out / "vocab.txt"
    vocab = load_or_build_vocabulary(vocab_path, args.sources, tokenizer=args.tokenizer, max_size=args.vocab_max_size)
    args.vocab_size = len(vocab)

    results_path = out / "results.json"
    done = {}
    if args.resume and results_path.is_file():
        done = {r["cell"]: r for r in json.loads(results_path.read_text())["results"]}
    command = "elmo-pipeline ablation " + shlex.join(argv)
    budget_text = f"{args.max_steps} steps" if args.max_steps else f"{args.max_minutes:g} minutes"
    results = []
    for cell in cells:
        if cell in done:
            log.info("ablation: %s already in %s (--resume)", cell, results_path)
            results.append(done[cell])
            continue
        log.info("ablation: training %s for %s", cell, budget_text)
        results.append(train_cell(cell, args, vocab_path, out))
        record = {"command": command, "machine": describe_machine(), "results": results}
        results_path.write_text(json.dumps(record, indent=1) + "\n")
        row = results[-1]
        sys.stdout.write(f"{cell}: held-out ppl {row['val_ppl']:.1f}, {row['tokens_per_s']:.0f} tokens/s\n")

    header = (
        f"Cell ablation: preset {args.preset}, budget {budget_text} per cell, batch {args.batch_size}, "
        f"vocabulary {len(vocab)}, seed {args.seed}.\n\n"
        f"Command: `{command}`\n\nMachine: {describe_machine()}"
    )
    write_table(results, header, out / "ablation.md")
    plot(results, f"biLM cell ablation ({budget_text} per cell, preset {args.preset})", out / "ablation.png")
    print((out / "ablation.md").read_text())
    return 0
