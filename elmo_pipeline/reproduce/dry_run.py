"""``reproduce --dry-run``: write and parse every config a reproduction would run, and build every model.

Nothing trains and no data is read, yet every model is built through the same wiring as a real run:
the command's own LightningCLI parses the config (types, class paths, the head), links the data
module's values to the model and instantiates it. Only the data module is a stand-in: it has the
real one's arguments and gives the values the CLI links (labels, vocabulary sizes, the biLM's
sizes) from the task spec and the biLM's configuration instead of from the data. Models are built
on the meta device (sizes only: the Original biLM's softmax alone is 400M parameters).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch

from elmo_pipeline.data.lm_datamodule import LMDataModule
from elmo_pipeline.data.readers.conll import bioul_tags
from elmo_pipeline.data.task_datamodule import TaskDataModule
from elmo_pipeline.models.config import BiLMConfig
from elmo_pipeline.models.source import BiLMSource
from elmo_pipeline.reproduce.preset import Preset, finetune_config, pretrain_config
from elmo_pipeline.reproduce.runner import write_yaml
from elmo_pipeline.systems.finetune import FinetuneSystem
from elmo_pipeline.systems.finetune_cli import FinetuneCLI
from elmo_pipeline.systems.pretrain import PretrainSystem
from elmo_pipeline.systems.pretrain_cli import PretrainCLI
from elmo_pipeline.tasks import load_task

NOMINAL_WORDS, NOMINAL_CHARS = 20_000, 100  # a task's vocabularies come from its training data


def stand_in(data_class: type, facts: Callable[[dict[str, Any]], dict[str, Any]]) -> type:
    """A data module with the arguments of ``data_class`` that reads no data; ``facts(arguments)`` gives its links."""

    class StandIn(L.LightningDataModule):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__()
            bound = inspect.signature(data_class.__init__).bind(self, *args, **kwargs)
            bound.apply_defaults()
            for name, value in facts(dict(bound.arguments)).items():
                setattr(self, name, value)

    StandIn.__init__.__signature__ = inspect.signature(data_class.__init__)  # type: ignore[attr-defined]
    StandIn.__doc__ = data_class.__doc__  # the argument docs the parser reads
    StandIn.__name__ = StandIn.__qualname__ = data_class.__name__
    return StandIn


def build_model(cli_class: type, model_class: type, data_class: type, facts: Callable, path: Path) -> Any:
    """The model of the config at ``path``, built by ``cli_class`` as a real run builds it (on the meta device)."""
    # the config as written is parsed; the trainer is then built for this machine (a GPU cluster's
    # devices and strategy need not exist here) and without loggers
    args = ["--config", str(path), "--trainer.logger=false", "--trainer.accelerator=cpu", "--trainer.devices=1"]
    args += ["--trainer.strategy=auto", "--trainer.num_nodes=1"]
    with torch.device("meta"):
        cli = cli_class(model_class, stand_in(data_class, facts), args=args, run=False)
    return cli.model


def _count(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())


def dry_run(preset: Preset) -> list[dict[str, Any]]:
    """Write and parse the pretraining config and each task x arm's (seed 0); build every model. Trains nothing."""
    out = Path(preset.work_dir) / "dry_run"
    built = []
    bilm_config: BiLMConfig | None = None
    if preset.bilm:  # read for real: checks the files are there, and gives the sizes
        bilm_config = BiLMSource.parse(preset.bilm).config()
        bilm = preset.bilm
    else:
        assert preset.pretrain is not None
        config = pretrain_config(preset, Path(preset.work_dir) / "pretrain", None, "fit")  # launchable as is
        path = out / "pretrain.yaml"
        write_yaml(path, config)
        vocab = Path(preset.pretrain.set.get("data.vocab_path", ""))
        vocab_size = sum(1 for _ in vocab.open()) if vocab.is_file() else preset.dry_run_vocab_size
        system = build_model(PretrainCLI, PretrainSystem, LMDataModule, lambda _: {"vocab_size": vocab_size}, path)
        bilm_config = system.bilm.config
        built.append({"run": "pretrain", "config": str(path), "parameters": _count(system), "vocab_size": vocab_size})
        bilm = str(Path(preset.work_dir) / "pretrain" / "export")

    def task_facts(arguments: dict[str, Any]) -> dict[str, Any]:
        spec = load_task(arguments["task"])
        elmo = bool(arguments.get("elmo"))
        return {
            "labels": bioul_tags(spec.labels) if spec.kind == "tagging" else list(spec.labels),
            "num_words": NOMINAL_WORDS,
            "num_chars": NOMINAL_CHARS,
            "elmo_num_layers": bilm_config.num_layers + 1 if elmo else 0,
            "elmo_dim": bilm_config.output_dim if elmo else 0,
        }

    for task in preset.tasks:
        for arm in preset.arms:
            config = finetune_config(preset, task, arm, 0, bilm, out / task.name / arm, None)
            path = out / f"{task.name}-{arm}.yaml"
            write_yaml(path, config)
            system = build_model(FinetuneCLI, FinetuneSystem, TaskDataModule, task_facts, path)
            built.append({"run": f"{task.name} {arm}", "config": str(path), "parameters": _count(system)})
    return built
