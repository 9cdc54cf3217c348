"""``reproduce --dry-run``: write and parse every config a reproduction would run, and build every model.

Nothing trains and no data is read: each config is parsed by the command's own LightningCLI (the
same parser, types and class paths as a real run), then each model is built on the meta device
(sizes only) with the head class the parser resolved.
"""

from __future__ import annotations

import functools
import importlib
from pathlib import Path
from typing import Any

import torch

from elmo_pipeline.data.lm_datamodule import LMDataModule
from elmo_pipeline.data.readers.conll import bioul_tags
from elmo_pipeline.data.task_datamodule import TaskDataModule
from elmo_pipeline.models.source import BiLMSource
from elmo_pipeline.reproduce.preset import Preset, finetune_config, pretrain_config
from elmo_pipeline.reproduce.runner import write_yaml
from elmo_pipeline.systems.finetune import FinetuneSystem
from elmo_pipeline.systems.finetune_cli import FinetuneCLI
from elmo_pipeline.systems.pretrain import PretrainSystem
from elmo_pipeline.systems.pretrain_cli import PretrainCLI
from elmo_pipeline.tasks import load_task


def _parse_only(cli_class: type, model_class: type, data_class: type, path: Path) -> None:
    """Parse (and type-check) a config with the command's own LightningCLI, instantiating nothing."""

    class ParseOnly(cli_class):  # type: ignore[misc, valid-type]
        def instantiate_classes(self) -> None:  # the data may not exist here (a GPU cluster's corpus)
            pass

    ParseOnly(model_class, data_class, args=["--config", str(path)], run=False)


def _count(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())


def dry_run(preset: Preset) -> list[dict[str, Any]]:
    """Write and parse the pretraining config and each task x arm's (seed 0); build every model. Trains nothing."""
    out = Path(preset.work_dir) / "dry_run"
    built = []
    if preset.bilm:  # loaded for real (outside the meta device): checks the files and their shapes
        bilm_config = BiLMSource.parse(preset.bilm).config()
    with torch.device("meta"):  # sizes only: the Original biLM's softmax alone is 400M parameters
        if preset.bilm:
            bilm = preset.bilm
        else:
            assert preset.pretrain is not None
            config = pretrain_config(preset, Path(preset.work_dir) / "pretrain", None, "fit")  # launchable as is
            path = out / "pretrain.yaml"
            write_yaml(path, config)
            _parse_only(PretrainCLI, PretrainSystem, LMDataModule, path)
            vocab = Path(preset.pretrain.set.get("data.vocab_path", ""))
            vocab_size = sum(1 for _ in vocab.open()) if vocab.is_file() else preset.dry_run_vocab_size
            system = PretrainSystem(**config["model"], vocab_size=vocab_size)
            bilm_config = system.bilm.config
            built.append(
                {"run": "pretrain", "config": str(path), "parameters": _count(system), "vocab_size": vocab_size}
            )
            bilm = str(Path(preset.work_dir) / "pretrain" / "export")
        for task in preset.tasks:
            spec = load_task(task.name)
            labels = bioul_tags(spec.labels) if spec.kind == "tagging" else list(spec.labels)
            for arm in preset.arms:
                config = finetune_config(preset, task, arm, 0, bilm, out / task.name / arm, None)
                path = out / f"{task.name}-{arm}.yaml"
                write_yaml(path, config)
                _parse_only(FinetuneCLI, FinetuneSystem, TaskDataModule, path)
                model_args = dict(config["model"])
                head = model_args.pop("head")
                module, name = head["class_path"].rsplit(".", 1)
                head_class = getattr(importlib.import_module(module), name)
                elmo = model_args.get("elmo")
                system = FinetuneSystem(
                    head=functools.partial(head_class, **(head.get("init_args") or {})),
                    task=task.name,
                    labels=labels,
                    num_words=20_000,  # nominal: the real vocabulary comes from the training data
                    num_chars=100,
                    elmo_num_layers=bilm_config.num_layers + 1 if elmo else 0,
                    elmo_dim=bilm_config.output_dim if elmo else 0,
                    **{k: v for k, v in model_args.items() if k != "task"},
                )
                built.append({"run": f"{task.name} {arm}", "config": str(path), "parameters": _count(system)})
    return built
