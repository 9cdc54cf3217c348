"""`elmo-pipeline pretrain`: LightningCLI over :class:`PretrainSystem` and :class:`LMDataModule`.

elmo-pipeline pretrain --config configs/pretrain/tiny.yaml              # fit (the default)
elmo-pipeline pretrain fit --config configs/pretrain/tiny.yaml --ckpt_path last   # resume
elmo-pipeline pretrain test --config configs/pretrain/tiny.yaml --ckpt_path best  # test perplexity
"""

from __future__ import annotations

import json
from pathlib import Path

from elmo_pipeline.data.lm_datamodule import LMDataModule
from elmo_pipeline.errors import InputError, MissingFileError
from elmo_pipeline.models.source import BiLMSource
from elmo_pipeline.systems.checkpoints import SafeCheckpointCLI, load_checkpoint
from elmo_pipeline.systems.finetune_cli import check_config_files
from elmo_pipeline.systems.pretrain import PretrainSystem
from elmo_pipeline.systems.tracking import SaveAndLogConfig

SUBCOMMANDS = ("fit", "validate", "test", "predict")


class PretrainCLI(SafeCheckpointCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.vocab_size", "model.vocab_size", apply_on="instantiate")

    def _resolve_best(self, subcommand: str) -> None:
        """``--ckpt_path best`` in a new process: the best checkpoint that fitting recorded.

        Looked up in the export folder's metrics.json (written when fitting ended), then in last.ckpt
        (the monitoring callback's state at its last save).
        """
        config = self.config_init[subcommand]
        if config.get("ckpt_path") != "best":
            return
        callback = self.trainer.checkpoint_callback
        if callback is None or callback.monitor is None or callback.dirpath is None:
            raise InputError("--ckpt_path best needs a ModelCheckpoint with a monitor and a dirpath in the config")
        candidates = []
        export_dir = getattr(self.model, "hparams", {}).get("export_dir")
        if export_dir and (Path(export_dir) / "metrics.json").is_file():
            metrics = json.loads((Path(export_dir) / "metrics.json").read_text())
            if metrics.get("monitor") == callback.monitor:
                candidates.append(metrics.get("checkpoint", ""))
        last = Path(callback.dirpath) / "last.ckpt"
        if last.is_file():
            states = load_checkpoint(last, mmap=True).get("callbacks", {})
            monitored = [s for s in states.values() if s.get("monitor") == callback.monitor]
            candidates += [s.get("best_model_path", "") for s in monitored]
        best = next((c for c in candidates if c and Path(c).is_file()), None)
        if best is None:
            raise MissingFileError(
                f"--ckpt_path best: no best checkpoint recorded in {export_dir}/metrics.json or {last}; "
                "fit first, or pass a checkpoint file"
            )
        config["ckpt_path"] = best

    def _bilm_of_the_checkpoint(self, subcommand: str) -> None:
        """A run whose ``--model.init_from`` is gone takes the biLM's architecture from the checkpoint it restores.

        ``--ckpt_path FILE`` gets it from LightningCLI, which reads the file's hyper-parameters while it parses;
        ``last`` and ``best`` are resolved only after the model was built from the config, without the source
        that set its architecture. Everything else stays as this run's config says.
        """
        ckpt_path = self.config_init[subcommand].get("ckpt_path")
        if not ckpt_path or getattr(self.model, "_init_from_missing", None) is None:
            return
        saved = load_checkpoint(ckpt_path, mmap=True).get("hyper_parameters", {}).get("bilm")
        if isinstance(saved, dict) and saved != self.model.hparams["bilm"]:
            self.model = PretrainSystem(**{**self.model.hparams, "bilm": saved})

    def before_fit(self) -> None:
        self.check_checkpoint("fit")
        self._bilm_of_the_checkpoint("fit")
        hp = self.model.hparams
        gone = getattr(self.model, "_init_from_missing", None) is not None  # resumed: the checkpoint's softmax
        if hp.get("init_from") and hp.get("init_softmax") and not gone:  # the kept rows must mean the same words
            vocab = BiLMSource.parse(hp["init_from"]).vocabulary()
            words = getattr(self.datamodule, "vocab", None)
            if vocab is None or words is None or list(vocab.words) != list(words.words):
                raise InputError(
                    f"--model.init_softmax: the vocabulary of this run ({self.datamodule.hparams.vocab_path}) is not "
                    f"the one of {hp['init_from']}; pass its vocab.txt as --data.vocab_path"
                )

    def before_test(self) -> None:
        self._resolve_best("test")
        self.check_checkpoint("test")
        self._bilm_of_the_checkpoint("test")

    def after_test(self) -> None:
        metrics = self.trainer.callback_metrics
        names = ("test/ppl", "test/ppl_forward", "test/ppl_backward", "test/unigram_ppl")
        if not self.trainer.is_global_zero or not all(name in metrics for name in names):
            return
        ppl, forward, backward, unigram = (float(metrics[name]) for name in names)
        print(
            f"test perplexity {ppl:.1f} (forward {forward:.1f}, backward {backward:.1f}); "
            f"unigram perplexity of the same vocabulary on the same test tokens: {unigram:.1f}"
        )

    def before_validate(self) -> None:
        self._resolve_best("validate")
        self.check_checkpoint("validate")
        self._bilm_of_the_checkpoint("validate")


def build_cli(argv: list[str], run: bool = True) -> PretrainCLI:
    if run and (not argv or argv[0] not in SUBCOMMANDS and argv[0] not in ("-h", "--help")):
        argv = ["fit", *argv]
    check_config_files(argv)
    return PretrainCLI(
        PretrainSystem,
        LMDataModule,
        args=argv,
        run=run,
        save_config_callback=SaveAndLogConfig,
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
    )
