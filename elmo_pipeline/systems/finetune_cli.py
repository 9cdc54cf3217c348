"""`elmo-pipeline finetune`: LightningCLI over :class:`FinetuneSystem` and :class:`TaskDataModule`.

elmo-pipeline finetune --config configs/finetune/ner_conll2003.yaml                      # baseline, fixtures
elmo-pipeline finetune --config configs/finetune/ner_conll2003.yaml --data.elmo runs/pretrain/tiny/export
elmo-pipeline finetune --config configs/finetune/ner_conll2003.yaml --data.elmo random:runs/pretrain/tiny/export

``fit`` (the default) trains with early stopping and model selection on dev, then evaluates the
best checkpoint once on test (``trainer.test(ckpt_path="best")``) and writes ``results.json`` (scores,
seed, wall times, what stopped training, the mixes' softmax(w) before and after) and the test
predictions in the task's own format (``predictions/test.conll`` or ``predictions/test.txt``) beside
the logs. ``test --ckpt_path CKPT --predictions_dir DIR`` writes a checkpoint's predictions. ``--config`` paths such as
``configs/finetune/<task>.yaml`` are also looked up in the installed package's share folder.

The biLM has one home, ``--data.elmo`` (the data module parses and loads it and builds the activation
cache); the model gets only its sizes. ``--model.elmo`` on the command line is a deprecated alias of
``--data.elmo`` (see :data:`ALIASES`).
"""

from __future__ import annotations

import atexit
import logging
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import yaml

from elmo_pipeline.data.predictions import write_predictions
from elmo_pipeline.data.task_datamodule import TaskDataModule
from elmo_pipeline.errors import InputError
from elmo_pipeline.files import read_utf8, write_json_atomic
from elmo_pipeline.models.source import arm_of
from elmo_pipeline.systems.checkpoints import SafeCheckpointCLI
from elmo_pipeline.systems.finetune import FinetuneSystem
from elmo_pipeline.systems.tracking import SaveAndLogConfig
from elmo_pipeline.tasks import find_resource

log = logging.getLogger(__name__)

SUBCOMMANDS = ("fit", "validate", "test", "predict")


class FinetuneCLI(SafeCheckpointCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument(
            "--test_after_fit", type=bool, default=True, help="evaluate the best checkpoint on test once fitting ends"
        )
        parser.add_argument(
            "--results_path",
            type=str | None,
            default=None,
            help="where fit writes results.json (default: <trainer.log_dir>/results.json)",
        )
        parser.add_argument(
            "--predictions_dir",
            type=str | None,
            default=None,
            help="where the test predictions go (default: <trainer.log_dir>/predictions)",
        )
        parser.link_arguments("data.task", "model.task")
        parser.link_arguments("model.word_vectors", "data.word_vectors")
        for name in ("labels", "num_words", "num_chars", "elmo_num_layers", "elmo_dim"):
            parser.link_arguments(f"data.{name}", f"model.{name}", apply_on="instantiate")

    def before_fit(self) -> None:
        self.check_checkpoint("fit")
        self._started = time.perf_counter()

    def before_validate(self) -> None:
        self.check_checkpoint("validate")

    def before_test(self) -> None:
        self.check_checkpoint("test")

    def after_test(self) -> None:
        self._write_predictions(self.config_init["test"])

    def after_fit(self) -> None:
        trainer, config = self.trainer, self.config_init["fit"]
        if trainer.interrupted:  # an interrupted run must not look finished (reproduce resumes on results.json)
            log.warning("finetune: training was interrupted; no test evaluation and no results.json")
            return
        fit_seconds = time.perf_counter() - self._started
        callback = trainer.checkpoint_callback
        best = getattr(callback, "best_model_path", "") if callback is not None else ""
        record: dict[str, Any] = {
            "task": self.datamodule.spec.name,
            "arm": arm_of(self.datamodule.elmo),
            "elmo": self.datamodule.elmo,
            "head": type(self.model.head).__name__,
            "seed": self.config["fit"].get("seed_everything"),
            "epochs": trainer.current_epoch,
            "global_step": trainer.global_step,
            "fit_seconds": round(fit_seconds, 1),
            "stopped_by": stopped_by(trainer),
            "best_checkpoint": best or None,
            "monitor": getattr(callback, "monitor", None),
            "best_val": float(callback.best_model_score) if best and callback.best_model_score is not None else None,
            "data": self.datamodule.summary(),
            "paper": self.datamodule.spec.paper,
        }
        if config.get("test_after_fit", True) and not trainer.fast_dev_run:
            started = time.perf_counter()
            if not best:
                log.warning(
                    "finetune: no best checkpoint (no ModelCheckpoint with a monitor); testing the last weights"
                )
            self.trainer.validate(
                self.model, datamodule=self.datamodule, ckpt_path="best" if best else None, weights_only=True
            )
            record["val"] = _scalars(trainer.callback_metrics, "val/")
            self.trainer.test(
                self.model, datamodule=self.datamodule, ckpt_path="best" if best else None, weights_only=True
            )
            record["test"] = _scalars(trainer.callback_metrics, "test/")
            record["test_seconds"] = round(time.perf_counter() - started, 1)
            written = self._write_predictions(config)
            record["predictions"] = str(written) if written else None
        record["mix_weights"] = self.model.mix_weights()  # the best checkpoint's, once test has loaded it
        record["initial_mix_weights"] = self.model.initial_mix_weights
        path = Path(config.get("results_path") or Path(trainer.log_dir or ".") / "results.json")
        if trainer.is_global_zero:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(path, record)  # a results.json that exists is complete
            log.info("finetune: wrote %s", path)

    def _write_predictions(self, config: dict[str, Any]) -> Path | None:
        trainer, model, data = self.trainer, self.model, self.datamodule
        if not trainer.is_global_zero or not model.test_predictions:
            return None
        texts, gold = data.examples("test")
        missing = len(gold) - len(model.test_predictions)
        if missing:
            log.warning("finetune: %d test examples have no prediction (a partial test run?); none written", missing)
            return None
        predicted = [data.label_names(model.test_predictions[i]) for i in range(len(gold))]
        directory = Path(config.get("predictions_dir") or Path(trainer.log_dir or ".") / "predictions")
        path = write_predictions(directory, "test", data.spec.kind, texts, gold, predicted)
        log.info("finetune: wrote the test predictions to %s", path)
        return path


def stopped_by(trainer) -> str:
    """What ended training: ``early_stopping``, ``max_epochs``, ``max_steps`` or ``time_limit`` (the safety net)."""
    # the clock first: a run that used up its time is flagged even if patience ran out at the same moment
    for callback in trainer.callbacks:
        remaining = callback.time_remaining("train") if type(callback).__name__ == "Timer" else None
        if remaining is not None and remaining <= 0:
            return "time_limit"
    for callback in trainer.callbacks:
        if type(callback).__name__ == "EarlyStopping" and (
            getattr(callback, "stopped_epoch", 0) > 0 or getattr(callback, "wait_count", 0) >= callback.patience
        ):  # stopped_epoch stays 0 when it stops in the first epoch
            return "early_stopping"
    if trainer.max_steps not in (None, -1) and trainer.global_step >= trainer.max_steps:
        return "max_steps"
    if trainer.max_epochs is not None and trainer.current_epoch >= trainer.max_epochs:
        return "max_epochs"
    return "other"


def _scalars(metrics: dict[str, Any], prefix: str) -> dict[str, float]:
    return {
        k.removeprefix(prefix): float(v)
        for k, v in sorted(metrics.items())
        if k.startswith(prefix) and torch.is_tensor(v) and v.numel() == 1
    }


# deprecated spellings of an option -> its home; kept so that existing commands still run
ALIASES = {"--model.elmo": "--data.elmo"}


def apply_aliases(argv: list[str]) -> list[str]:
    """Rewrite each deprecated option of :data:`ALIASES` (``--model.elmo X``, ``--model.elmo=X``) to its home."""
    out = []
    for arg in argv:
        option, equals, value = arg.partition("=")
        if option in ALIASES:
            log.warning("finetune: %s is deprecated; use %s", option, ALIASES[option])
            arg = ALIASES[option] + equals + value
        out.append(arg)
    return out


def find_configs(argv: list[str]) -> list[str]:
    """``--config configs/finetune/x.yaml`` from any directory: look the path up in the resource roots too."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == "--config" and i + 1 < len(out) and not Path(out[i + 1]).exists():
            out[i + 1] = str(find_resource(out[i + 1]))
        elif arg.startswith("--config=") and not Path(arg.split("=", 1)[1]).exists():
            out[i] = "--config=" + str(find_resource(arg.split("=", 1)[1]))
    check_config_files(out)
    return _move_config_aliases(out)


def _move_config_aliases(argv: list[str]) -> list[str]:
    """A config file written for the old home of an option (``model: elmo:``) is read with the option in
    its new home (``data: elmo:``), through a rewritten copy for this process; the file is not changed."""
    out = list(argv)
    for i, arg in enumerate(out):
        option, equals, value = arg.partition("=")
        if option not in ("--config", "-c"):
            continue
        index, path = (i, value) if equals else (i + 1, out[i + 1] if i + 1 < len(out) else "")
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) if Path(path).is_file() else None
        except (OSError, yaml.YAMLError):
            continue  # check_config_files reported what it could; jsonargparse names the rest
        model = data.get("model") if isinstance(data, dict) else None
        if not isinstance(model, dict) or "elmo" not in model:
            continue
        data_group = data.setdefault("data", {}) or {}
        if "elmo" in data_group:
            raise InputError(f"{path}: sets both model.elmo (deprecated) and data.elmo; keep data.elmo only")
        data_group["elmo"] = model.pop("elmo")
        data["data"] = data_group
        log.warning("finetune: %s sets model.elmo, which is deprecated; read as data.elmo (move it there)", path)
        moved = Path(tempfile.mkdtemp(prefix="elmo-pipeline-config-")) / Path(path).name
        moved.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        atexit.register(shutil.rmtree, moved.parent, True)
        out[index] = f"{option}={moved}" if equals else str(moved)
    return out


# the packages a config's class_path may name: this project's, Lightning's, torch's
CLASS_PATH_PACKAGES = ("elmo_pipeline.", "lightning.", "pytorch_lightning.", "torch.", "torchmetrics.")


def check_config_files(argv: list[str]) -> None:
    """Refuse, in one line, a ``--config`` file that is not plain data: a YAML tag (``!!python/...``) or a
    ``class_path`` outside :data:`CLASS_PATH_PACKAGES`. jsonargparse runs neither, but answers with its
    whole usage text; this names the file, the line and the fix. Checked: ``--config``/``-c`` files and
    any other option's value that is a YAML file (``--trainer trainer.yaml``: a group's config)."""
    for option, path in _config_files(argv):
        try:
            data = yaml.safe_load(read_utf8(path, option))
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
            where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise InputError(
                f"{where}: not a plain YAML config ({problem}); configs hold values and class_path names only, "
                "no tags such as !!python/..."
            ) from None
        for class_path in _class_paths(data):
            if not isinstance(class_path, str) or not class_path.startswith(CLASS_PATH_PACKAGES):
                raise InputError(
                    f"{path}: class_path {class_path!r} is not a class of elmo_pipeline, lightning or torch; a config "
                    "may only name those (nothing else is imported or run)"
                )


def _config_files(argv: list[str]) -> Iterator[tuple[str, Path]]:
    """``(option, file)`` for each config file in ``argv``; a missing one jsonargparse names itself."""
    for i, arg in enumerate(argv):
        if not arg.startswith("-"):
            continue
        option, equals, value = arg.partition("=")
        if not equals and i + 1 < len(argv):
            value = argv[i + 1]
        if option not in ("--config", "-c") and not value.lower().endswith((".yaml", ".yml")):
            continue
        try:
            found = Path(value).is_file()
        except (OSError, ValueError):  # a name too long or with a NUL byte is no file
            found = False
        if found:
            yield option, Path(value)


def _class_paths(data: Any) -> Iterator[Any]:
    if isinstance(data, dict):
        for key, value in data.items():
            if key == "class_path":
                yield value
            else:
                yield from _class_paths(value)
    elif isinstance(data, list):
        for item in data:
            yield from _class_paths(item)


def build_lightning_cli(cli_class, model_class, data_class, argv: list[str], run: bool, subcommands: tuple[str, ...]):
    """A LightningCLI of this project: ``fit`` when no subcommand is given, configs found in the resource roots."""
    if run and (not argv or argv[0] not in subcommands and argv[0] not in ("-h", "--help")):
        argv = ["fit", *argv]
    return cli_class(
        model_class,
        data_class,
        args=find_configs(argv),
        run=run,
        save_config_callback=SaveAndLogConfig,
        save_config_kwargs={"overwrite": True},
    )


def build_cli(argv: list[str], run: bool = True) -> FinetuneCLI:
    return build_lightning_cli(FinetuneCLI, FinetuneSystem, TaskDataModule, apply_aliases(argv), run, SUBCOMMANDS)
