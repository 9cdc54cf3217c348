"""The task-finetuning system: ONE LightningModule for every downstream task (DESIGN.md).

    v_k      = [word_k; charCNN_k]                              the baseline input (modules/token_embedder.py)
    v_k     <- [v_k; dropout(ELMo_k^input)]                     ELMo at the input, if used
    o_k      = dropout(ELMo_k^output)                           ELMo at the head's output, if used
    ELMo_k^n = gamma^n sum_j softmax(w^n)_j h_k,j               one scalar mix per place n (Peters et al. 2018, Eq. 1)
    loss     = head loss + lambda sum_n ||w^n||^2               the L2 penalty on the mix weights

The biLM layers ``h_k,j`` come from the activation cache (``TaskDataModule``), so the biLM never runs
during training and checkpoints hold the head, the embedder and the mixes only. The head (CRF
tagger, BCN, ESIM) is chosen in YAML; the task's kind and metric come from its spec.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Literal

import lightning as L
import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from elmo_pipeline.metrics.span_f1 import SpanF1
from elmo_pipeline.modules.elmo_mix import ElmoMix
from elmo_pipeline.modules.heads import Head, HeadOutput
from elmo_pipeline.modules.token_embedder import TokenEmbedder
from elmo_pipeline.tasks import load_task

log = logging.getLogger(__name__)

Place = Literal["input", "output"]
HeadFactory = Callable[[int, list[str], int], nn.Module]


class FinetuneSystem(L.LightningModule):
    """Trains a head on a task, with or without ELMo.

    Args:
        head: the head, built as ``head(input_dim, labels, output_elmo_dim)`` (``class_path`` + ``init_args`` in YAML).
        task: the task name (linked from ``--data.task``): its kind and metric.
        elmo: the biLM (null: the baseline; an export folder or published files: ELMo; ``random:<folder>``:
            a randomly initialised frozen biLM of that size). The data module builds its activation cache.
        labels: the label or tag set (linked from the data module).
        num_words: word vocabulary size (linked).
        num_chars: character vocabulary size (linked).
        elmo_num_layers: biLM layers, token layer included (linked).
        elmo_dim: size of a biLM layer, 2P (linked).
        elmo_places: where ELMo goes: ``input`` and/or ``output`` (default ``[input]``).
        elmo_dropout: dropout on each mix.
        elmo_l2: lambda of the L2 penalty on each mix's weights (0.001 in the paper).
        elmo_layer_norm: normalise each layer before mixing.
        word_dim: size of the randomly initialised word embedding (0: none).
        char_dim: character embedding size.
        char_filters: character CNN filters (0: no character CNN).
        char_width: character CNN width.
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
    """

    def __init__(
        self,
        head: HeadFactory,
        task: str = "ner_conll2003",
        elmo: str | None = None,
        labels: list[str] | None = None,
        num_words: int = 2,
        num_chars: int = 2,
        elmo_num_layers: int = 0,
        elmo_dim: int = 0,
        elmo_places: list[Place] | None = None,
        elmo_dropout: float = 0.5,
        elmo_l2: float = 0.001,
        elmo_layer_norm: bool = False,
        word_dim: int = 50,
        char_dim: int = 16,
        char_filters: int = 128,
        char_width: int = 3,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["head"])
        self.spec = load_task(task)
        if not labels:
            raise ValueError("finetune: no labels (--model.labels is linked from the data module; is --data.task set?)")
        self.labels = list(labels)
        places = list(elmo_places if elmo_places is not None else ["input"])
        if elmo and elmo_num_layers < 1:
            raise ValueError("finetune: --model.elmo is set but the biLM has no layers (linked from the data module)")
        if not set(places) <= {"input", "output"} or not places:
            raise ValueError(
                f"finetune: --model.elmo_places must be a non-empty subset of [input, output], got {places}"
            )
        self.places: list[str] = places if elmo else []
        self.embedder = TokenEmbedder(num_words, num_chars, word_dim, char_dim, char_filters, char_width)
        self.mixes = (
            ElmoMix(
                elmo_num_layers,
                names=self.places,
                dropout=elmo_dropout,
                layer_norm=elmo_layer_norm,
                l2_coefficient=elmo_l2,
            )
            if self.places
            else None
        )
        input_dim = self.embedder.output_dim + (elmo_dim if "input" in self.places else 0)
        output_dim = elmo_dim if "output" in self.places else 0
        self.head = head(input_dim, self.labels, output_dim)
        if not isinstance(self.head, Head):
            raise TypeError(f"finetune: {type(self.head).__name__} does not implement the Head protocol")
        self.hparams["head_class"] = type(self.head).__name__
        expected = 2 if self.spec.kind == "pair_classification" else 1
        if self.head.num_inputs != expected:
            raise ValueError(
                f"finetune: {type(self.head).__name__} reads {self.head.num_inputs} text(s) per example but "
                f"{self.spec.name} has {expected} (--model.head)"
            )
        self.val_metric = self._metric()
        self.test_metric = self._metric()

    def _metric(self) -> nn.Module:
        if self.spec.metric == "span_f1":
            return SpanF1(self.labels)
        return MulticlassAccuracy(num_classes=len(self.labels), average="micro")

    # ---- the model ---------------------------------------------------------------------------
    def forward(self, batch: dict[str, Any], with_labels: bool = True) -> HeadOutput:
        """Shapes: B batch, T_i tokens of text i, C chars, L biLM layers, P biLM projection.

        Args:
            batch: ``words`` [(B, T_i)], ``chars`` [(B, T_i, C)], ``masks`` [(B, T_i)], ``elmo`` [L x (B, T_i, 2P)]
                per text, ``labels``.
        """
        inputs, outputs = [], []
        for i, (words, chars, mask) in enumerate(zip(batch["words"], batch["chars"], batch["masks"], strict=True)):
            x = self.embedder(words, chars)  # (B, T, W + F)
            if self.mixes is not None:
                elmo = self.mixes(batch["elmo"][i], mask)  # place -> (B, T, 2P)
                if "input" in elmo:
                    x = torch.cat([x, elmo["input"]], dim=-1)  # (B, T, W + F + 2P)
                if "output" in elmo:
                    outputs.append(elmo["output"])  # (B, T, 2P)
            inputs.append(x)
        labels = batch["labels"] if with_labels else None
        return self.head(inputs, batch["masks"], labels, outputs or None)

    def penalty(self) -> torch.Tensor:
        """The L2 penalty of every mix's weights (0 without ELMo)."""
        return self.mixes.penalty() if self.mixes is not None else torch.zeros((), device=self.device)

    def mix_weights(self) -> dict[str, dict[str, Any]]:
        """softmax(w) (token layer first) and gamma of each mix, for plots of what each task uses."""
        return self.mixes.weights() if self.mixes is not None else {}

    # ---- steps -------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        out = self(batch)
        penalty = self.penalty()
        loss = out.loss + penalty
        size = batch["labels"].shape[0]
        self.log("train/loss", out.loss, prog_bar=True, batch_size=size)
        if self.places:
            self.log("train/mix_penalty", penalty, batch_size=size)
        return loss

    def _evaluate(self, batch: dict[str, Any], metric: nn.Module, stage: str) -> None:
        out = self(batch)
        predictions = self.head.decode(out, batch["masks"])
        if self.spec.metric == "span_f1":
            metric.update(predictions, batch["labels"].clamp(min=0), batch["masks"][0])
        else:
            metric.update(predictions, batch["labels"])
        self.log(f"{stage}/loss", out.loss, batch_size=batch["labels"].shape[0])

    def _log_metric(self, metric: nn.Module, stage: str) -> None:
        value = metric.compute()
        if isinstance(value, dict):
            self.log(f"{stage}/f1", value.pop("f1"), prog_bar=True)
            self.log_dict({f"{stage}/{k}": v for k, v in value.items()})
        else:
            self.log(f"{stage}/acc", value, prog_bar=True)
        metric.reset()

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, self.val_metric, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_metric(self.val_metric, "val")
        for place, mix in self.mix_weights().items():  # the mix weights over training, for plots
            for j, weight in enumerate(mix["softmax_w"]):
                self.log(f"mix/{place}_w{j}", weight)
            self.log(f"mix/{place}_gamma", mix["gamma"])

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, self.test_metric, "test")

    def on_test_epoch_end(self) -> None:
        self._log_metric(self.test_metric, "test")

    def on_fit_end(self) -> None:
        if self.mixes is not None:
            final = {
                f"final_mix/{place}_w{j}": w
                for place, mix in self.mix_weights().items()
                for j, w in enumerate(mix["softmax_w"])
            }
            for logger in self.loggers:
                logger.log_metrics(final, step=self.global_step)
            log.info("mix weights softmax(w) at the end of training: %s", self.mix_weights())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        params = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.Adam(params, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
