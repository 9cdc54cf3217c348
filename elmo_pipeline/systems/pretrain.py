"""The pretraining system: how a BiLM trains, validates and is exported (Lightning lives here)."""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections import deque
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from torchmetrics import MeanMetric

from elmo_pipeline.data.unigram import unigram_log_probs, unigram_nll
from elmo_pipeline.errors import MissingFileError, TrainingDiverged, WouldOverwriteError
from elmo_pipeline.models.bilm import BiLM, check_targets
from elmo_pipeline.models.config import BiLMConfig
from elmo_pipeline.models.export_folder import check_replaceable
from elmo_pipeline.models.source import BiLMSource
from elmo_pipeline.modules.lstm import require_native_bf16
from elmo_pipeline.systems.divergence import DivergenceGuard
from elmo_pipeline.systems.init_from import adapted_config, load_encoder, source_exists
from elmo_pipeline.systems.lr_schedule import REHORIZON_EVERY, LRSchedule, time_budget_horizon
from elmo_pipeline.systems.rng import TrainingRNG
from elmo_pipeline.systems.run_export import export_run

log = logging.getLogger(__name__)


class PretrainSystem(L.LightningModule):
    """Trains a :class:`BiLM` with the LM loss; reports perplexity; writes the export folder.

    Args:
        bilm: the biLM's sizes (a preset's values; see ``configs/pretrain``).
        vocab_size: softmax rows; linked from the data module's vocabulary by the CLI.
        optimizer: ``adagrad`` (the paper: lr 0.2; see ``initial_accumulator_value``), ``adam``,
            ``adamw`` or ``sgd``.
        lr: learning rate (the peak, after warm-up).
        initial_accumulator_value: Adagrad's initial accumulator. bilm-tf differentiates the loss
            *summed* over its 20 unrolled steps, 20 times the per-token mean used here; Adagrad with
            lr 0.2 and accumulator 1.0 on 20x the gradient is Adagrad with accumulator 1/400 =
            0.0025 on this one (and bilm-tf's norm clip at 10 is a clip at 0.5 here).
        weight_decay: L2 weight decay (decoupled for ``adamw``).
        betas: Adam's and AdamW's (beta1, beta2).
        warmup_steps: linear learning-rate warm-up over this many steps (0: none).
        lr_schedule: after warm-up, ``constant``, or ``linear``/``cosine`` decay to
            ``min_lr_ratio * lr`` at the end of the budget: ``schedule_steps`` if set, else
            ``trainer.max_steps``, else ``trainer.max_time`` (see :meth:`schedule_horizon`).
        schedule_steps: the decay's last step (None: from the trainer's budget).
        min_lr_ratio: the learning rate at the end of the decay, as a fraction of ``lr``.
        export_dir: where to write the export folder when fitting ends (the best checkpoint by
            validation perplexity if there is one, else the final weights).
        spike_factor: stop training when a step's loss exceeds this many times the mean loss of the
            previous ``spike_window`` steps (0: off). A non-finite loss, gradient norm or validation
            perplexity always stops it, except the gradients of a step that fp16's GradScaler skips
            (``--trainer.precision 16-mixed``; up to 30 in a row). A stopped run raises
            :class:`TrainingDiverged` (the command exits non-zero, naming the step) and exports nothing.
        spike_window: steps in that running mean; the spike check starts once it is full.
        init_from: start from this biLM (any :class:`BiLMSource` form: an export folder, the published
            ``OPTIONS,WEIGHTS``, ...) and continue on this run's corpus: domain-adaptive pretraining.
            Its character CNN and LSTM layers (and their sizes, which replace ``bilm``'s) are loaded;
            the softmax is new, over this run's vocabulary, of ``bilm``'s kind, unless
            ``init_softmax``.
        init_softmax: also keep the source's softmax (an export folder whose softmax has the kind,
            sizes and vocabulary of this run: pass its ``vocab.txt`` as ``--data.vocab_path``).
        softmax_only_steps: train only the softmax for the first this many steps, then everything
            (a new softmax first learns the frozen features).
        overwrite: let a new run (one not resumed with ``--ckpt_path``) replace a finished export in
            ``export_dir`` and the checkpoints of an earlier run in the checkpoint folders. Without it
            such a run stops before its first step and says so.
    """

    def __init__(
        self,
        bilm: BiLMConfig | dict,
        vocab_size: int = 0,
        optimizer: Literal["adagrad", "adam", "adamw", "sgd"] = "adagrad",
        lr: float = 0.2,
        initial_accumulator_value: float = 1.0,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        warmup_steps: int = 0,
        lr_schedule: Literal["constant", "linear", "cosine"] = "constant",
        schedule_steps: int | None = None,
        min_lr_ratio: float = 0.0,
        export_dir: str | None = None,
        spike_factor: float = 0.0,
        spike_window: int = 100,
        init_from: str | None = None,
        init_softmax: bool = False,
        softmax_only_steps: int = 0,
        overwrite: bool = False,
    ) -> None:
        super().__init__()
        if isinstance(bilm, dict):  # from a checkpoint's hyper-parameters
            bilm = BiLMConfig.from_dict(bilm)
        if vocab_size:
            bilm = dataclasses.replace(bilm, vocab_size=vocab_size)
        source = BiLMSource.parse(init_from) if init_from else None
        self._init_from_missing: str | None = None
        if source is not None and not source_exists(source):
            # a run reloaded from its checkpoint (resumed, tested) needs no source: the checkpoint's
            # hyper-parameters hold the adapted architecture, and its weights are restored over these.
            # Without a checkpoint it is an error, raised when the run starts (on_fit_start, on_test_start)
            self._init_from_missing = str(init_from)
            source = None
        if source is not None:
            bilm = adapted_config(source.config(), bilm)
        if bilm.vocab_size < 4:
            raise ValueError(
                "pretrain: the biLM needs a vocabulary (--model.vocab_size, linked from --data.vocab_path)"
            )
        self.save_hyperparameters(
            {
                "bilm": bilm.to_dict(),
                "optimizer": optimizer,
                "lr": lr,
                "initial_accumulator_value": initial_accumulator_value,
                "weight_decay": weight_decay,
                "betas": tuple(betas),
                "warmup_steps": warmup_steps,
                "lr_schedule": lr_schedule,
                "schedule_steps": schedule_steps,
                "min_lr_ratio": min_lr_ratio,
                "export_dir": export_dir,
                "spike_factor": spike_factor,
                "spike_window": spike_window,
                "init_from": init_from,
                "init_softmax": init_softmax,
                "softmax_only_steps": softmax_only_steps,
                "overwrite": overwrite,
            }
        )
        self.bilm = BiLM(bilm)
        if source is not None:
            load_encoder(self.bilm, source, init_softmax)
        self.val_forward, self.val_backward = MeanMetric(), MeanMetric()
        self.test_forward, self.test_backward = MeanMetric(), MeanMetric()
        self.test_unigram = MeanMetric()  # the unigram baseline's -log p over the same test targets
        self._unigram_log_probs: torch.Tensor | None = None  # (V,), set by on_test_start
        self.tokens_seen = 0
        self.schedule = LRSchedule(warmup_steps, lr_schedule, min_lr_ratio, horizon=schedule_steps)
        self._attempt_start: tuple[float, int] | None = None  # (time, step) from which the step rate is measured
        self._attempt_first_step = 0
        self._window: deque[tuple[float, int]] = deque(maxlen=51)
        self._train_rng = TrainingRNG()  # the RNG as the last training step left it (systems/rng.py)
        self.guard = DivergenceGuard(spike_factor, spike_window)
        self.health_stop: str | None = None  # why training diverged, if it did (TrainingDiverged says it too)
        self._step_losses: list[torch.Tensor] = []  # the losses since the last update, on the device
        self._batch_tokens = 0  # tokens of the batch being trained on, read on the host

    def forward(self, chars: torch.Tensor):
        return self.bilm(chars)

    # ---- training ---------------------------------------------------------------------------
    # On a GPU the host must not wait for the device inside a step, or it cannot queue the next
    # kernels while the device runs: the counts of a batch are read on the host before the batch is
    # moved, and the one wait of a step is the guard's (the loss and the gradient norm, read together
    # just before the update; under DDP the loss decision is agreed over the ranks as well).
    # tests/test_host_syncs.py counts the waits.
    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if isinstance(batch, dict) and "num_tokens" in batch and self.trainer.training:
            self._batch_tokens = int(batch["num_tokens"])  # still on the host: no wait
            if self.bilm.softmax is not None and not self.bilm.may_wait(self.device):  # else the biLM checks them
                for key in ("forward_targets", "backward_targets"):
                    check_targets(batch[key], self.bilm.softmax.vocab_size)
        return batch

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        out = self.bilm(batch["chars"], batch["forward_targets"], batch["backward_targets"])
        self._train_rng.capture()
        self._step_losses.append(out.loss.detach())  # checked with the gradients (on_before_optimizer_step)
        tokens = self._batch_tokens * self.trainer.world_size
        self.tokens_seen += tokens
        self.log("train/loss_forward", out.forward_loss)
        self.log("train/loss_backward", out.backward_loss)
        # counted, never silent: over-long tokens (characters cut at 48 bytes), replaced bytes
        self.log("train/truncated_tokens", batch["num_truncated"].float(), reduce_fx="sum")
        self.log("train/replaced_tokens", batch["num_replaced"].float(), reduce_fx="sum")
        self._window.append((time.perf_counter(), tokens))
        return out.loss

    def _log_step(self, losses: list[float]) -> None:
        """The step's host values, logged right after the guard's wait (the device queue is empty then)."""
        self.log("train/loss", sum(losses) / len(losses), prog_bar=True)
        self.log("train/tokens_seen", float(self.tokens_seen))
        # tokens/s over the last 50 whole steps (data, forward, backward, update), all ranks
        if len(self._window) > 1:
            elapsed = self._window[-1][0] - self._window[0][0]
            self.log(
                "train/tokens_per_s", sum(n for _, n in list(self._window)[1:]) / max(elapsed, 1e-9), prog_bar=True
            )

    def _stop(self, problem: str) -> None:
        """Training diverged: stop now, before the update, with an error; nothing is exported.

        Every rank raises together (the loss decision is reduced across ranks, and the gradient norm
        and the validation perplexity are the same on every rank), so no rank waits for another.
        """
        self.health_stop = f"{problem} at global step {self.global_step}"
        log.warning("pretrain: %s; stopping instead of training on", self.health_stop)
        raise TrainingDiverged(
            f"pretrain: training diverged: {self.health_stop}. Nothing was exported; the checkpoints saved before "
            "it are kept. Lower --model.lr, clip the gradients (--trainer.gradient_clip_val) or warm up longer "
            "(--model.warmup_steps), then start again (--model.overwrite true replaces this run's folders)"
        )

    def on_train_epoch_start(self) -> None:
        self._window.clear()

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        losses, self._step_losses = self._step_losses, []
        grads = [p.grad for p in self.bilm.parameters() if p.grad is not None]
        norms = [torch.linalg.vector_norm(g.detach()).float() for g in grads]  # one () per parameter
        total = torch.linalg.vector_norm(torch.stack(norms)) if norms else None  # ()
        watched = [loss.float() for loss in losses] + ([total] if total is not None else [])
        values = torch.stack(watched).tolist() if watched else []  # the step's one wait for the device
        if losses:
            problem = self.guard.loss_problem(values[: len(losses)])
            # every rank must stop together, or the others would wait in the next collective forever
            if self.trainer.strategy.reduce_boolean_decision(problem is not None, all=False):
                self._stop(problem or "another rank's loss is non-finite or spiked")
            self._log_step(values[: len(losses)])
        if total is None:
            return
        self.log("train/grad_norm", values[-1])
        # the gradients are all-reduced, so every rank finds the same
        problem = self.guard.gradient_problem(values[-1], self._grad_scaler(), self.global_step)
        if problem is not None:
            optimizer.zero_grad(set_to_none=True)  # do not apply them
            self._stop(problem)

    def _grad_scaler(self) -> torch.amp.GradScaler | None:
        """The active GradScaler of ``--trainer.precision 16-mixed`` (None for other precisions)."""
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        return scaler if scaler is not None and scaler.is_enabled() else None

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        params = self.parameters()
        if hp.optimizer == "adagrad":
            opt = torch.optim.Adagrad(
                params, lr=hp.lr, initial_accumulator_value=hp.initial_accumulator_value, weight_decay=hp.weight_decay
            )
        elif hp.optimizer == "adam":
            opt = torch.optim.Adam(params, lr=hp.lr, betas=tuple(hp.betas), weight_decay=hp.weight_decay)
        elif hp.optimizer == "adamw":
            opt = torch.optim.AdamW(params, lr=hp.lr, betas=tuple(hp.betas), weight_decay=hp.weight_decay)
        elif hp.optimizer == "sgd":
            opt = torch.optim.SGD(params, lr=hp.lr, weight_decay=hp.weight_decay)
        else:
            raise ValueError(f"pretrain: unknown optimizer {hp.optimizer!r} (--model.optimizer adagrad|adam|adamw|sgd)")
        if hp.warmup_steps <= 0 and hp.lr_schedule == "constant":
            return opt
        scheduler = torch.optim.lr_scheduler.LambdaLR(opt, self.schedule.factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def follow_the_time_budget(self) -> None:
        """Re-estimate a time-budget horizon from the step rate so far, keeping the learning rate continuous.

        A horizon fixed once from the first minutes' rate overshoots when the steps slow down later
        (the one-hour bf16 run ended its decay at 35% of the peak instead of 5%: docs/pretraining.md).
        Every ``REHORIZON_EVERY`` steps the rate over this attempt so far (validation and saving
        included) and the time left give a new horizon; the decay goes on from where it is to the
        floor at that step. Both the horizon and the anchor are saved in checkpoints.
        """
        horizon = self.trainer.strategy.broadcast(self.schedule_horizon(), src=0)  # one schedule for all ranks
        if horizon is None or self.schedule.horizon is None:
            return
        self.schedule.move_horizon(self.trainer.global_step, horizon)
        self.log("train/lr_horizon", float(self.schedule.horizon))

    def schedule_horizon(self) -> int | None:
        """The step where the decay ends: ``schedule_steps``, else ``max_steps``, else from ``max_time``.

        With only a time budget, the horizon is first estimated at the end of warm-up (and no earlier
        than step 50) from this process's step rate (:func:`time_budget_horizon`);
        :meth:`follow_the_time_budget` re-estimates it as the run goes.
        """
        if self.hparams.schedule_steps:
            return int(self.hparams.schedule_steps)
        if self.trainer.max_steps and self.trainer.max_steps > 0:
            return int(self.trainer.max_steps)
        return time_budget_horizon(self.trainer, self._attempt_start)

    def _follows_time_budget(self) -> bool:
        """Whether the horizon comes from ``trainer.max_time`` (no step budget and no ``schedule_steps``)."""
        return (
            self.hparams.lr_schedule != "constant"
            and not self.hparams.schedule_steps
            and not (self.trainer.max_steps and self.trainer.max_steps > 0)
        )

    def _refuse_a_missing_init_from(self) -> None:
        """``--model.init_from`` that is not there, with no checkpoint to restore: never a silent random start."""
        if self._init_from_missing is None:
            return
        if self.trainer.ckpt_path is None:
            raise MissingFileError(
                f"--model.init_from {self._init_from_missing}: no such biLM (an export folder, or OPTIONS,WEIGHTS of "
                "the published files); fix the path, or drop --model.init_from to train from a random start"
            )
        log.warning(
            "pretrain: --model.init_from %s is not there; the checkpoint %s holds the biLM it started from",
            self._init_from_missing,
            self.trainer.ckpt_path,
        )

    def on_fit_start(self) -> None:
        self._refuse_a_missing_init_from()
        # bf16 (autocast: the LSTMP products in bf16, gates, cell state and loss in fp32) only with native bf16
        require_native_bf16("pretrain", self.trainer.precision, self.device)
        if self.trainer.ckpt_path is None and not self.hparams.overwrite:
            self._refuse_to_overwrite()
        if self.hparams.export_dir:  # the export replaces its folder: refuse now one holding the user's files
            check_replaceable(self.hparams.export_dir)

    def _refuse_to_overwrite(self) -> None:
        """A new run must not replace what an earlier one left: its export, or its checkpoints."""
        export = Path(self.hparams.export_dir) if self.hparams.export_dir else None
        if export is not None and (export / "weights.pt").is_file():
            raise WouldOverwriteError(
                f"pretrain: {export} holds the export of an earlier run, and this new run would replace it when it "
                "ends. Pass --ckpt_path last to continue that run, --model.export_dir to export elsewhere, or "
                "--model.overwrite true to replace it"
            )
        for callback in self.trainer.checkpoint_callbacks:
            folder = Path(callback.dirpath) if getattr(callback, "dirpath", None) else None
            if folder is not None and folder.is_dir() and any(folder.glob("*.ckpt")):
                raise WouldOverwriteError(
                    f"pretrain: {folder} holds the checkpoints of an earlier run, and this new run would overwrite "
                    "them. Pass --ckpt_path last to continue that run, give the run another folder "
                    "(--trainer.default_root_dir and the checkpoint dirpath), or pass --model.overwrite true"
                )

    def on_train_start(self) -> None:
        self._attempt_start = None
        self._attempt_first_step = self.trainer.global_step
        if self.hparams.lr_schedule != "constant" and (self.trainer.max_steps or 0) > 0:
            # a step budget is known from the start (and may have been raised for this attempt); only a
            # horizon estimated from max_time is kept from the checkpoint
            self.schedule.horizon = self.schedule_horizon()
            self.schedule.anchor = None

    # ---- evaluation (full softmax) -------------------------------------------------------------
    def _evaluate(self, batch: dict[str, torch.Tensor], forward: MeanMetric, backward: MeanMetric) -> None:
        out = self.bilm(batch["chars"], batch["forward_targets"], batch["backward_targets"], sampled=False)
        # weighted by targets: the empty batch that pads a rank (data/lm.py, empty_batch) adds nothing, and
        # the metric synced over the ranks is the mean over the whole set, as on one device
        forward.update(out.forward_loss, out.num_targets)
        backward.update(out.backward_loss, out.num_targets)

    def _log_perplexity(self, stage: str, forward: MeanMetric, backward: MeanMetric) -> None:
        if forward.weight == 0 and not self.trainer.world_size > 1:
            return
        loss_f, loss_b = forward.compute(), backward.compute()
        ppl_f, ppl_b = torch.exp(loss_f), torch.exp(loss_b)
        self.log(f"{stage}/loss", 0.5 * (loss_f + loss_b), sync_dist=False)
        self.log(f"{stage}/ppl_forward", ppl_f)
        self.log(f"{stage}/ppl_backward", ppl_b)
        self.log(f"{stage}/ppl", 0.5 * (ppl_f + ppl_b), prog_bar=True)  # the paper's "average of the two"
        forward.reset()
        backward.reset()

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, self.val_forward, self.val_backward)

    def on_validation_epoch_end(self) -> None:
        self._log_perplexity("val", self.val_forward, self.val_backward)
        ppl = self.trainer.callback_metrics.get("val/ppl")
        if self.trainer.state.fn == "fit" and ppl is not None and not math.isfinite(float(ppl)):
            self._stop(f"the validation perplexity is {float(ppl)}")

    def on_test_start(self) -> None:
        self._refuse_a_missing_init_from()
        # the unigram baseline (elmo_pipeline/data/unigram.py) from the data module's training counts
        counts = getattr(self.trainer.datamodule, "unigram_counts", None)
        self._unigram_log_probs = None if counts is None else unigram_log_probs(counts).to(self.device, torch.float32)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, self.test_forward, self.test_backward)
        if self._unigram_log_probs is not None:
            # the forward targets: the biLM's loss is over these (the backward ones give the same
            # unigram perplexity, since the counts of <S> and </S> are equal)
            self.test_unigram.update(unigram_nll(self._unigram_log_probs, batch["forward_targets"]))

    def on_test_epoch_end(self) -> None:
        self._log_perplexity("test", self.test_forward, self.test_backward)
        if self._unigram_log_probs is not None:
            self.log("test/unigram_ppl", torch.exp(self.test_unigram.compute()))
            self.test_unigram.reset()

    # ---- state and export ------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["tokens_seen"] = self.tokens_seen
        checkpoint["lr_horizon"] = self.schedule.horizon
        checkpoint["lr_anchor"] = self.schedule.anchor
        self._train_rng.save(checkpoint)  # a resumed run continues the training stream of random numbers

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.tokens_seen = int(checkpoint.get("tokens_seen", 0))
        self.schedule.horizon = checkpoint.get("lr_horizon", self.schedule.horizon)
        anchor = checkpoint.get("lr_anchor")
        self.schedule.anchor = None if anchor is None else (int(anchor[0]), float(anchor[1]))
        self._train_rng.load(checkpoint)

    def on_after_backward(self) -> None:
        # the first softmax_only_steps steps train only the softmax: the other gradients are dropped
        # after the backward pass (and after DDP's all-reduce), so no parameter goes unused in DDP
        if self.trainer.global_step < self.hparams.softmax_only_steps:
            softmax = {id(p) for p in self.bilm.softmax.parameters()} if self.bilm.softmax is not None else set()
            for parameter in self.bilm.parameters():
                if id(parameter) not in softmax:
                    parameter.grad = None

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self._attempt_start is None and self.trainer.global_step >= self._attempt_first_step + 10:
            self._attempt_start = (time.monotonic(), self.trainer.global_step)  # the step rate is measured from here
        if (
            self.schedule.horizon is None
            and self.hparams.lr_schedule != "constant"
            and self.trainer.global_step >= max(self.hparams.warmup_steps, 50)
        ):
            horizon = self.trainer.strategy.broadcast(self.schedule_horizon(), src=0)  # one schedule for all ranks
            self.schedule.horizon = horizon
            if horizon is not None:
                log.info("pretrain: the %s decay ends at step %d", self.hparams.lr_schedule, horizon)
        elif (
            self.schedule.horizon is not None
            and self._follows_time_budget()
            and self._attempt_start is not None
            and self.trainer.global_step % REHORIZON_EVERY == 0
            and self.trainer.global_step > self._attempt_start[1]
        ):
            self.follow_the_time_budget()
        self._train_rng.restore()

    def on_fit_end(self) -> None:
        if self.hparams.export_dir:
            # every rank reads trainer.log_dir (under DDP a broadcast from rank 0, which a rank-zero-only
            # export would wait on forever); rank 0 alone writes the export
            self.write_export_folder(self.hparams.export_dir, log_dir=self.trainer.log_dir)

    @rank_zero_only
    def write_export_folder(self, directory: str, log_dir: str | None = None) -> None:
        """Write the export folder (rank 0): :func:`~elmo_pipeline.systems.run_export.export_run`."""
        export_run(self, directory, log_dir)
