"""The LightningModule of translation: teacher-forced NLL, BLEU on val every epoch, beam search on test once.

- **train:** cross-entropy of every target word (``</S>`` included), the frozen LM (cold fusion) without
  gradient; gradient clipping is the Trainer's.
- **val:** the loss and the BLEU of greedy decoding (``val/bleu``, what early stopping and the
  checkpoint watch).
- **test:** beam search with length normalisation, plus ``lambda * log p_LM`` for shallow fusion; the CLI
  picks ``lambda`` on val first (:meth:`Seq2SeqSystem.translate` with each candidate), then tests once.

BLEU is sacrebleu's corpus BLEU, default settings (13a tokenisation, exact-case), on detokenised
output against the raw reference lines; its signature goes into ``results.json``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import sacrebleu
import torch
import torch.nn.functional as F
from tqdm import tqdm

from elmo_pipeline.data.translation import IGNORE_INDEX
from elmo_pipeline.models.search import Translation, greedy, replace_unknowns, translate
from elmo_pipeline.models.seq2seq import Seq2Seq, Seq2SeqConfig
from elmo_pipeline.models.source import BiLMSource
from elmo_pipeline.models.target_lm import TargetLM
from elmo_pipeline.systems.rng import TrainingRNG
from elmo_pipeline.text.tokenize import detokenize
from elmo_pipeline.text.vocab import Vocabulary

log = logging.getLogger(__name__)


def corpus_bleu(hypotheses: list[str], references: list[str]) -> tuple[float, str, str]:
    """sacrebleu's corpus BLEU (13a tokenisation, case-sensitive) of detokenised lines.

    Returns: the score, its full report (n-gram precisions, brevity penalty) and sacrebleu's signature.
    """
    metric = sacrebleu.metrics.BLEU()
    score = metric.corpus_score(hypotheses, [references])
    return score.score, str(score), str(metric.get_signature())


class Seq2SeqSystem(L.LightningModule):
    """Translation with an attention encoder-decoder and optional LM fusion.

    Args:
        source_vocab_size: linked from the data.
        target_vocab_size: linked from the data.
        target_vocabulary: linked from the data (the LM needs the words).
        embedding_dim: both embeddings.
        encoder_dim: the BiLSTM's size per direction.
        decoder_dim: the decoder LSTM's size.
        attention_dim: the additive attention's hidden size.
        dropout: on embeddings and before the output layer.
        fusion: ``none``, ``shallow`` (LM added at search) or ``cold`` (LM gated into the output layer).
        lm: the target-side LM, an export folder with its softmax (any ``BiLMSource`` name); also sets the
            target vocabulary (linked to ``--data.lm``), so give it in every arm of a comparison.
        cold_lm_dim: cold fusion's LM feature size.
        cold_hidden_dim: cold fusion's hidden size.
        lr: Adam's learning rate.
        beam: beam size at test.
        length_penalty: finished hypotheses ranked by score / length ** this.
        lm_weight: lambda of shallow fusion at test (the CLI replaces it with the best of ``lm_weights`` on val).
        lm_weights: the candidates for lambda, tried on val (shallow fusion only).
    """

    def __init__(
        self,
        source_vocab_size: int = 0,
        target_vocab_size: int = 0,
        target_vocabulary: Vocabulary | None = None,
        embedding_dim: int = 256,
        encoder_dim: int = 256,
        decoder_dim: int = 512,
        attention_dim: int = 256,
        dropout: float = 0.3,
        fusion: str = "none",
        lm: str | None = None,
        cold_lm_dim: int = 256,
        cold_hidden_dim: int = 512,
        lr: float = 1e-3,
        beam: int = 5,
        length_penalty: float = 1.0,
        lm_weight: float = 0.0,
        lm_weights: tuple[float, ...] = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5),
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["target_vocabulary"])
        if target_vocabulary is None:
            raise ValueError("seq2seq: no target vocabulary (it is linked from the data module)")
        if fusion != "none" and lm is None:
            raise ValueError(f"seq2seq: --model.fusion {fusion} needs --model.lm (an export folder with a softmax)")
        self.target_words = list(target_vocabulary.words)
        self.config = Seq2SeqConfig(
            source_vocab_size,
            target_vocab_size,
            embedding_dim,
            encoder_dim,
            decoder_dim,
            attention_dim,
            dropout,
            fusion,
            cold_lm_dim,
            cold_hidden_dim,
        )
        target_lm = None
        if lm is not None:  # cold fusion trains with it; the others decode with it (shallow fusion)
            bilm, lm_vocabulary = BiLMSource.parse(lm).load_with_vocab()
            target_lm = TargetLM(bilm, lm_vocabulary, self.target_words)
            log.info(
                "seq2seq: %d of the %d target words are outside the vocabulary of the LM %s (they take its <UNK> "
                "score)",
                target_lm.oov,
                len(self.target_words),
                lm,
            )
        self.model = Seq2Seq(self.config, target_lm)
        self.lm_weight = lm_weight
        self._val: list[tuple[str, str]] = []
        self._train_rng = TrainingRNG()  # dropout's stream, saved in checkpoints: a resumed run continues exactly

    def state_dict(self, *args, **kwargs):
        """Without the frozen LM's weights: they are read again from ``lm`` (hparams) when the model is built."""
        state = super().state_dict(*args, **kwargs)
        return {k: v for k, v in state.items() if not k.startswith("model.lm.")}

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        missing_ok = {k for k in super().state_dict() if k.startswith("model.lm.")}
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        if strict:
            missing = [k for k in result.missing_keys if k not in missing_ok]
            if missing or result.unexpected_keys:
                raise RuntimeError(
                    f"seq2seq: checkpoint mismatch; missing {missing}, unexpected {result.unexpected_keys}"
                )
        return result

    def _loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        logits = self.model(batch["source"], batch["lengths"], batch["target_in"])  # (B, T, V)
        targets = batch["target_out"]  # (B, T)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX)
        return loss, int((targets != IGNORE_INDEX).sum())

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._train_rng.restore()

    def training_step(self, batch, batch_idx):
        loss, words = self._loss(batch)
        self._train_rng.capture()
        self.log("train/loss", loss, prog_bar=True, batch_size=words)
        return loss

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._train_rng.save(checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._train_rng.load(checkpoint)

    def words(self, ids: list[int]) -> list[str]:
        return [self.target_words[i] for i in ids]

    def validation_step(self, batch, batch_idx):
        loss, words = self._loss(batch)
        self.log("val/loss", loss, prog_bar=True, batch_size=words)
        outputs = greedy(self.model, batch["source"], batch["lengths"])
        references = [self.trainer.datamodule.references["val"][i] for i in batch["index"].tolist()]
        self._val.extend((detokenize(self.words(o)), r) for o, r in zip(outputs, references, strict=True))

    def on_validation_epoch_end(self) -> None:
        if self._val:
            hypotheses, references = zip(*self._val, strict=True)
            self.log("val/bleu", corpus_bleu(list(hypotheses), list(references))[0], prog_bar=True)
        self._val = []

    def decode(
        self, sources: list[torch.Tensor], beam: int, lm_weight: float, progress: bool = False
    ) -> list[Translation]:
        """Beam search over source id tensors (S,), in eval mode: each output's ids and alignment."""
        was_training = self.training
        self.eval()
        try:
            return [
                translate(self.model, s.to(self.device), beam, lm_weight, self.hparams.length_penalty)
                for s in tqdm(sources, desc=f"beam {beam}, lambda {lm_weight}", disable=not progress, mininterval=2.0)
            ]
        finally:
            self.train(was_training)

    def render(self, found: Translation, source: list[str], unk: str = "keep") -> str:
        """The detokenised text of a translation, its ``<UNK>`` kept, copied from the aligned word of
        ``source`` (the source tokens as written) or deleted (:func:`replace_unknowns`)."""
        return detokenize(replace_unknowns(self.words(found.ids), found.aligned, source, unk))

    def configure_optimizers(self):
        trainable = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.Adam(trainable, lr=self.hparams.lr)

    def write_translator(self, path: str | Path, source_words: list[str], lm_weight: float) -> Path:
        """Everything ``elmo-pipeline translate`` needs, in one weights-only file (the LM by its name)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(
            {
                "format": 1,
                "config": self.config.to_dict(),
                "lm": self.hparams.lm,
                "lm_fingerprint": None if self.model.lm is None else self.model.lm.fingerprint(),
                "lm_identity": None if self.model.lm is None else self.model.lm.identity(),  # what translate compares
                "lm_weight": lm_weight,
                "beam": self.hparams.beam,
                "length_penalty": self.hparams.length_penalty,
                "source_words": source_words,
                "target_words": self.target_words,
                "state_dict": {k.removeprefix("model."): v for k, v in self.state_dict().items()},
            },
            path,
        )
        return path
