"""`elmo-pipeline seq2seq`: LightningCLI over :class:`Seq2SeqSystem` and :class:`TranslationDataModule`.

    elmo-pipeline seq2seq --config configs/seq2seq/multi30k_de_en.yaml                          # no fusion
    elmo-pipeline seq2seq --config configs/seq2seq/multi30k_de_en.yaml --model.fusion shallow
    elmo-pipeline seq2seq --config configs/seq2seq/multi30k_de_en.yaml --model.fusion cold

``fit`` trains with early stopping on val BLEU (greedy decoding), then decodes from the best
checkpoint with beam search. A model without cold fusion is decoded twice when an LM is given: without
the LM (``none``) and with shallow fusion (``shallow``, lambda chosen on val among
``--model.lm_weights``): shallow fusion changes only the search, so one trained model serves both rows
of the table. A cold-fusion model is decoded as it is (``cold``). Each arm decodes test once. Into the
run's log folder go ``results.json`` (per arm: lambda, val and test BLEU with sacrebleu's signature;
the LM and its val perplexity; epochs, times), the translations (``translations.<arm>.{val,test}.txt``)
and ``seq2seq.pt``, which ``elmo-pipeline translate --model`` reads.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Any

import torch

from elmo_pipeline.data.translation import TranslationDataModule
from elmo_pipeline.files import write_json_atomic
from elmo_pipeline.models.search import UNK_WORDS, Translation
from elmo_pipeline.models.source import BiLMSource
from elmo_pipeline.models.target_lm import TargetLM, target_perplexity
from elmo_pipeline.systems.checkpoints import SafeCheckpointCLI
from elmo_pipeline.systems.finetune_cli import build_lightning_cli
from elmo_pipeline.systems.seq2seq import Seq2SeqSystem, corpus_bleu

log = logging.getLogger(__name__)

SUBCOMMANDS = ("fit", "validate", "test")


class Seq2SeqCLI(SafeCheckpointCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--test_after_fit", type=bool, default=True, help="choose lambda on val, then test once")
        parser.link_arguments("model.lm", "data.lm")
        for name in ("source_vocab_size", "target_vocab_size", "target_vocabulary"):
            parser.link_arguments(f"data.{name}", f"model.{name}", apply_on="instantiate")

    def before_fit(self) -> None:
        self.check_checkpoint("fit")
        self._started = time.perf_counter()

    def after_fit(self) -> None:
        trainer, model, data = self.trainer, self.model, self.datamodule
        if trainer.interrupted:
            log.warning("seq2seq: training was interrupted; no test evaluation and no results.json")
            return
        if not self.config_init["fit"].get("test_after_fit", True) or trainer.fast_dev_run:
            return
        fit_seconds = time.perf_counter() - self._started
        callback = trainer.checkpoint_callback
        best = getattr(callback, "best_model_path", "") if callback is not None else ""
        score = getattr(callback, "best_model_score", None)
        if best:
            checkpoint = torch.load(best, map_location="cpu", weights_only=True)
            model.load_state_dict(checkpoint["state_dict"])
        out = Path(trainer.log_dir or ".")
        started = time.perf_counter()
        hp = model.hparams
        record: dict[str, Any] = {
            "fusion": hp.fusion,
            "lm": hp.lm,
            "seed": self.config["fit"].get("seed_everything"),
            "epochs": trainer.current_epoch,
            "global_step": trainer.global_step,
            "fit_seconds": round(fit_seconds, 1),
            "best_checkpoint": best or None,
            "best_val_greedy_bleu": None if not best or score is None else float(score),
            "beam": hp.beam,
            "length_penalty": hp.length_penalty,
            "source_vocabulary": data.source_vocab_size,
            "target_vocabulary": data.target_vocab_size,
        }
        if model.model.lm is not None:
            record["lm_val_perplexity"] = lm_perplexity(model, data)
        if hp.fusion == "cold":
            arms = {"cold": [0.0]}
        elif model.model.lm is not None:  # the same model decoded without and with the LM (shallow fusion)
            arms = {"none": [0.0], "shallow": list(hp.lm_weights)}
        else:
            arms = {"none": [0.0]}
        val_sources, test_sources = data.source_ids("val"), data.source_ids("test")
        val_found: dict[float, list[Translation]] = {}
        record["decoding"] = {}
        outputs: dict[str, tuple[list[str], list[str]]] = {}

        def rendered(found: list[Translation], split: str, unk: str) -> list[str]:
            return [model.render(f, s, unk) for f, s in zip(found, data.source_tokens[split], strict=True)]

        for arm, weights in arms.items():
            val_bleu = {}
            for weight in weights:
                if weight not in val_found:
                    val_found[weight] = model.decode(val_sources, hp.beam, weight, progress=True)
                val_bleu[str(weight)] = corpus_bleu(rendered(val_found[weight], "val", "keep"), data.references["val"])[
                    0
                ]
                log.info("seq2seq: val BLEU %.2f (beam %d, lambda %g)", val_bleu[str(weight)], hp.beam, weight)
            chosen = max(weights, key=lambda w: (val_bleu[str(w)], -w))  # ties: the smaller lambda
            # what an output <UNK> becomes, chosen on val too (ties: keep it)
            by_unk = {
                unk: corpus_bleu(rendered(val_found[chosen], "val", unk), data.references["val"])[0]
                for unk in UNK_WORDS
            }
            unk = max(UNK_WORDS, key=lambda u: (by_unk[u], u == "keep"))
            test_found = model.decode(test_sources, hp.beam, chosen, progress=True)  # test: once per arm
            test_outputs = rendered(test_found, "test", unk)
            bleu, report, record["bleu_signature"] = corpus_bleu(test_outputs, data.references["test"])
            record["decoding"][arm] = {
                "lm_weight": chosen,
                "unk": unk,
                "val_bleu": by_unk[unk],
                "val_bleu_by_lambda": val_bleu,
                "val_bleu_by_unk": by_unk,
                "test_bleu": bleu,
                "test_bleu_report": report,
            }
            outputs[arm] = (rendered(val_found[chosen], "val", unk), test_outputs)
            log.info("seq2seq: %s: test BLEU %.2f (lambda %g; %s)", arm, bleu, chosen, record["bleu_signature"])
        record["eval_seconds"] = round(time.perf_counter() - started, 1)
        if trainer.is_global_zero:
            out.mkdir(parents=True, exist_ok=True)
            for arm, (val_lines, test_lines) in outputs.items():
                (out / f"translations.{arm}.val.txt").write_text("".join(t + "\n" for t in val_lines), encoding="utf-8")
                (out / f"translations.{arm}.test.txt").write_text(
                    "".join(t + "\n" for t in test_lines), encoding="utf-8"
                )
            own = record["decoding"]["cold" if hp.fusion == "cold" else hp.fusion if hp.fusion in arms else "none"]
            model.write_translator(out / "seq2seq.pt", list(data.source_vocabulary.words), own["lm_weight"])
            write_json_atomic(out / "results.json", record)
            log.info("seq2seq: wrote %s", out / "results.json")


def lm_perplexity(model: Seq2SeqSystem, data: TranslationDataModule) -> float:
    """The fusion LM's perplexity on the val targets, over the target vocabulary (``</S>`` included)."""
    return target_perplexity(model.model.lm, data.val_dataloader())


def target_lm_perplexity(lm: str, data_root: str, split: str, **vocabulary) -> dict:
    """One LM's perplexity over the target words of ``split``, with what it was measured on.

    ``vocabulary``: the options of :class:`TranslationDataModule` that set the target vocabulary
    (``source_lang``, ``target_lang``, ``min_count``, ``max_target_words``).
    """
    data = TranslationDataModule(data_root=data_root, lm=lm, **vocabulary)  # refuses an LM without a softmax vocabulary
    bilm, lm_vocabulary = BiLMSource.parse(lm).load_with_vocab()
    words = list(data.target_vocabulary.words)
    target = TargetLM(bilm, lm_vocabulary, words).eval()
    loaders = {"train": data.train_dataloader, "val": data.val_dataloader, "test": data.test_dataloader}
    batches = loaders[split]()  # train: the order is shuffled, which a perplexity does not see
    return {
        "lm": lm,
        "split": split,
        "perplexity": target_perplexity(target, batches),
        "target_vocabulary": len(words),
        "target_vocabulary_sha256": hashlib.sha256("\n".join(words).encode("utf-8")).hexdigest(),
        "sentences": len(data.pairs[split]),
    }


def build_cli(argv: list[str], run: bool = True) -> Seq2SeqCLI:
    return build_lightning_cli(Seq2SeqCLI, Seq2SeqSystem, TranslationDataModule, argv, run, SUBCOMMANDS)
