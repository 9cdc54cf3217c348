"""The task-finetuning system: ONE LightningModule for every downstream task (DESIGN.md).

    v_k      = [word_k; charCNN_k]                              the baseline input (modules/token_embedder.py;
                                                                word_k from GloVe with --model.word_vectors)
    v_k     <- [v_k; ELMo_k^input]                              ELMo at the input, if used (the head drops
                                                                its input out: ELMo is dropped out once)
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

from elmo_pipeline.data.word_vectors import is_none
from elmo_pipeline.metrics.span_f1 import SpanF1
from elmo_pipeline.modules.elmo_mix import ElmoMix
from elmo_pipeline.modules.heads import Head, HeadOutput
from elmo_pipeline.modules.lstm import require_native_bf16
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
        labels: the label or tag set (linked from the data module).
        num_words: word vocabulary size (linked).
        num_chars: character vocabulary size (linked).
        elmo_num_layers: biLM layers, token layer included (linked from ``--data.elmo``, the biLM's one home;
            0, the baseline, means no ELMo).
        elmo_dim: size of a biLM layer, 2P (linked).
        elmo_places: where ELMo goes: ``input`` and/or ``output`` (default ``[input]``).
        elmo_dropout: dropout on ELMo at the output place. ELMo at the input gets none here: every head drops
            its input out, and ELMo is dropped out once (AllenNLP sets ELMo's own dropout to 0 for this reason).
        elmo_l2: lambda of the L2 penalty on each mix's weights (0.001 in the paper).
        elmo_layer_norm: normalise each layer before mixing.
        elmo_gamma: the initial gamma of the mixes: one value, or one per place (``{input: 1.0, output: 0.25}``).
        elmo_lr: learning rate of the mixes' w and gamma (null: ``lr``), so that the mix can move in a short run.
        word_vectors: pretrained word vectors for the word embedding: ``glove-6b-50d`` (the ``[glove]`` extra),
            ``none`` (random), or the path of a GloVe-format text file. ``word_dim`` must equal their size.
        freeze_word_vectors: keep the pretrained word vectors fixed (AllenNLP's BCN and ESIM setups do).
        word_dim: size of the word embedding (0: none).
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
        labels: list[str] | None = None,
        num_words: int = 2,
        num_chars: int = 2,
        elmo_num_layers: int = 0,
        elmo_dim: int = 0,
        elmo_places: list[Place] | None = None,
        elmo_dropout: float = 0.5,
        elmo_l2: float = 0.001,
        elmo_layer_norm: bool = False,
        elmo_gamma: float | dict[str, float] = 1.0,
        elmo_lr: float | None = None,
        word_vectors: str | None = None,
        freeze_word_vectors: bool = False,
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
        elmo = elmo_num_layers > 0  # the biLM is --data.elmo's; the model sees only its sizes
        if elmo and elmo_dim < 1:
            raise ValueError(
                "finetune: --data.elmo is set but the biLM layers have no size (linked from the data module)"
            )
        if not set(places) <= {"input", "output"} or not places:
            raise ValueError(
                f"finetune: --model.elmo_places must be a non-empty subset of [input, output], got {places}"
            )
        self.places: list[str] = places if elmo else []
        self.embedder = TokenEmbedder(num_words, num_chars, word_dim, char_dim, char_filters, char_width)
        if isinstance(elmo_gamma, dict) and not set(elmo_gamma) <= {"input", "output"}:
            raise ValueError(f"finetune: --model.elmo_gamma keys are input and output, got {sorted(elmo_gamma)}")
        self.mixes = (
            ElmoMix(
                elmo_num_layers,
                names=self.places,
                dropout=[0.0 if place == "input" else elmo_dropout for place in self.places],
                layer_norm=elmo_layer_norm,
                l2_coefficient=elmo_l2,
                initial_gamma=[
                    elmo_gamma.get(place, 1.0) if isinstance(elmo_gamma, dict) else elmo_gamma for place in self.places
                ],
            )
            if self.places
            else None
        )
        # where the mixes start (w = 0: the average), for the picture of what they learned; computed
        # from the options, not the tensors, which a dry run builds on the meta device
        self.initial_mix_weights = {
            place: {"softmax_w": [1.0 / elmo_num_layers] * elmo_num_layers, "gamma": mix.gamma_init}
            for place, mix in zip(self.places, self.mixes or [], strict=True)
        }
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
        self.test_predictions: dict[int, int | list[int]] = {}  # example index -> label or tag ids

    def setup(self, stage: str) -> None:
        """Copy the pretrained word vectors into the word embedding before training starts.

        Lightning restores a checkpoint after ``setup``, so a resumed run keeps its trained rows.
        bf16 (``--trainer.precision bf16-mixed``: autocast, with the heads' losses, CRF and attention
        softmaxes in float32) is refused where the processor has no native bf16.
        """
        if self._trainer is not None:
            require_native_bf16("finetune", self.trainer.precision, self.device)
        if stage != "fit" or is_none(self.hparams.word_vectors):
            return
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        matrix = getattr(datamodule, "word_vector_matrix", None)
        if matrix is None:
            raise ValueError("finetune: --model.word_vectors is set but the data module built no word vectors")
        embedding = self.embedder.word_embedding
        if embedding is None or embedding.weight.shape != matrix.shape:
            have = tuple(embedding.weight.shape) if embedding is not None else "no word embedding"
            raise ValueError(
                f"finetune: the word vectors are {tuple(matrix.shape)} (words x dim) but the word embedding is "
                f"{have}; set --model.word_dim {matrix.shape[1]}"
            )
        with torch.no_grad():
            embedding.weight.copy_(matrix)
        embedding.weight.requires_grad_(not self.hparams.freeze_word_vectors)

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
        if stage == "test" and "index" in batch:  # kept for the predictions file and the bootstrap
            lengths = batch["masks"][0].sum(dim=1).tolist()
            for b, index in enumerate(batch["index"].tolist()):
                row = predictions[b]
                self.test_predictions[index] = row[: lengths[b]].tolist() if row.dim() else int(row)

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

    def on_test_epoch_start(self) -> None:
        self.test_predictions = {}

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
        mix = {id(p) for p in self.mixes.parameters()} if self.mixes is not None else set()
        embedding = self.embedder.word_embedding
        pretrained = embedding is not None and embedding.weight.requires_grad and not is_none(self.hparams.word_vectors)
        skip = mix | ({id(embedding.weight)} if pretrained else set())
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in skip]
        groups: list[dict[str, Any]] = [{"params": rest}]
        if pretrained:  # coupled L2 would shrink every pretrained row, even those of words training never sees
            groups.append({"params": [embedding.weight], "weight_decay": 0.0})
        if self.mixes is not None and any(p.requires_grad for p in self.mixes.parameters()):
            # the mix has its own regulariser (the L2 penalty on w): no weight decay on it
            lr = self.hparams.elmo_lr if self.hparams.elmo_lr is not None else self.hparams.lr
            mix_params = [p for p in self.mixes.parameters() if p.requires_grad]
            groups.append({"params": mix_params, "lr": lr, "weight_decay": 0.0})
        return torch.optim.Adam(groups, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
