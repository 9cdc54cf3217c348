"""`elmo-pipeline ablation`: one biLM per recurrent cell, same data and budget; perplexity, speed, size.

In the spirit of Greff et al. 2017 ("LSTM: A Search Space Odyssey"), on a laptop scale: every cell
of elmo_pipeline/modules/cells.py trains the biLM of one pretraining YAML (the same sizes, seed,
data order and optimizer; only ``model.bilm.cell`` changes) for the same budget, ``--max-steps``
optimizer steps or ``--max-minutes`` of training, and is then evaluated with the full softmax on the
config's validation text. Tokens/s is the steady-state training rate (whole steps: data, forward,
backward, update), measured after the first 10 steps.

    elmo-pipeline ablation --config configs/pretrain/ablation_lm.yaml \
        --cells lstmp,lstm,coupled,peephole,gru,layernorm_lstm --max-steps 500 --out runs/ablation_lm

Any other option is an ``elmo-pipeline pretrain`` option applied to every cell, e.g.
``--model.bilm.projection_dim 8 --data.batch_size 4``. The config's loggers, checkpoints and export
are not used: each cell trains in memory. Writes ``--out``/ablation.md (the table, the command and
the machine), ablation.png (training loss curves, held-out perplexity, tokens/s) and results.json
(everything, including the loss curves).
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np

from elmo_pipeline.errors import TrainingDiverged
from elmo_pipeline.machine import describe_machine
from elmo_pipeline.modules.cells import CELLS
from elmo_pipeline.systems.pretrain_cli import build_cli

log = logging.getLogger(__name__)

PRETRAIN_GROUPS = ("model.", "data.", "trainer.", "seed_everything")  # what a cell's pretrain options may set


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


def cell_cli_args(cell: str, args: argparse.Namespace, overrides: list[str], out_dir: Path) -> list[str]:
    """The ``elmo-pipeline pretrain`` arguments of one cell: the config, the user's overrides, this cell and budget."""
    if args.max_minutes:
        seconds = int(round(args.max_minutes * 60))
        max_time = f"00:{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
    else:
        max_time = "null"
    cli_args = ["--config", args.config, *overrides, f"--model.bilm.cell={cell}", "--model.export_dir=null"]
    cli_args += ["--trainer.logger=false", "--trainer.callbacks=[]", "--trainer.enable_checkpointing=false"]
    cli_args += ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
    cli_args += ["--trainer.limit_val_batches=0", "--trainer.num_sanity_val_steps=0", "--trainer.max_epochs=-1"]
    cli_args += [f"--trainer.max_steps={args.max_steps or -1}", f"--trainer.max_time={max_time}"]
    cli_args += [f"--trainer.default_root_dir={out_dir / cell}"]
    if args.seed is not None:
        cli_args += [f"--seed_everything={args.seed}", f"--data.seed={args.seed}"]
    return cli_args


def train_cell(cell: str, args: argparse.Namespace, overrides: list[str], out_dir: Path) -> dict[str, Any]:
    """Train and evaluate the config's biLM with ``cell``; return its row of the table."""
    cli = build_cli(cell_cli_args(cell, args, overrides, out_dir), run=False)  # the pretrain command's wiring
    system, data, trainer = cli.model, cli.datamodule, cli.trainer
    recorder = _Recorder()
    trainer.callbacks.append(recorder)
    start = time.perf_counter()
    try:
        trainer.fit(system, datamodule=data)
    except TrainingDiverged:  # recorded (stopped_early) and plotted; the other cells still run
        log.warning("ablation: %s diverged: %s", cell, system.health_stop)
    train_seconds = time.perf_counter() - start
    common: dict[str, Any] = dict(logger=False, enable_checkpointing=False, enable_model_summary=False)
    evaluator = L.Trainer(accelerator="auto", devices=1, enable_progress_bar=False, **common)
    metrics = evaluator.validate(system, datamodule=data, verbose=False)[0]
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
        "config": bilm.config.to_dict(),
        "vocab_size": data.vocab_size,
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


def run(args: argparse.Namespace, overrides: list[str], argv: list[str]) -> int:
    """Run ``elmo-pipeline ablation`` (``commands/ablation.py``): ``overrides`` are pretrain options, ``argv``
    the whole command line (recorded in the results)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cells = [c.strip() for c in args.cells.split(",") if c.strip()]
    unknown = [c for c in cells if c not in CELLS]
    if unknown or not cells:
        raise ValueError(f"ablation: unknown cells {unknown}; choose from {list(CELLS)} (--cells)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

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
        results.append(train_cell(cell, args, overrides, out))
        record = {"command": command, "machine": describe_machine(), "results": results}
        results_path.write_text(json.dumps(record, indent=1) + "\n")
        row = results[-1]
        sys.stdout.write(f"{cell}: held-out ppl {row['val_ppl']:.1f}, {row['tokens_per_s']:.0f} tokens/s\n")

    header = (
        f"Cell ablation: {args.config}, budget {budget_text} per cell, "
        f"vocabulary {results[-1].get('vocab_size', '?')}, "
        f"seed {args.seed if args.seed is not None else 'of the config'}.\n\n"
        f"Command: `{command}`\n\nMachine: {describe_machine()}"
    )
    write_table(results, header, out / "ablation.md")
    plot(results, f"biLM cell ablation ({budget_text} per cell, {Path(args.config).stem})", out / "ablation.png")
    print((out / "ablation.md").read_text())
    return 0
