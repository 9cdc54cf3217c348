"""Reproduction presets (``configs/reproduce/<preset>.yaml``) and the run configs derived from them.

A preset names a pretraining config and one finetuning config per task, plus what changes for this
reproduction (``set:``: dotted keys such as ``trainer.max_time``, the per-stage budgets). From them
``reproduce`` writes one complete LightningCLI config per run (the pretraining run, and each task x
arm x seed), with every path moved under the work folder, the seed, the arm's biLM and the loggers
filled in. A run's *fingerprint* is the hash of that config without its loggers: a finished run is
reused only while its fingerprint is unchanged.
"""

from __future__ import annotations

import copy
import hashlib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from elmo_pipeline.tasks import find_resource

ARMS = ("baseline", "random_bilm", "elmo", "elmo_task")
TABLE_ARMS = (
    "baseline",
    "random_bilm",
    "elmo",
)  # the default; elmo_task (the biLM tuned on the task's text) is asked for
PRESETS = ("demo", "cpu_1h", "original")
RENAMED = {"small": "cpu_1h"}  # old name -> new, still accepted (``small`` is also a biLM size, BiLMConfig.preset)


@dataclass
class StageSpec:
    """One LightningCLI config and the changes this reproduction makes to it.

    Attributes:
        config: the base YAML (``configs/...``; found in a checkout or an installed wheel).
        set: dotted-key overrides, e.g. ``{"trainer.max_time": "00:00:03:00"}``.
        name: the task name (finetuning stages only).
    """

    config: str
    set: dict[str, Any] = field(default_factory=dict)
    name: str = ""


@dataclass
class Preset:
    """What one ``reproduce --preset`` does. See ``configs/reproduce/*.yaml`` for each field in use.

    Attributes:
        name: the preset's name (``demo``, ``small``, ``original``).
        description: one line for the table's header.
        meaningful: False when the numbers are a smoke test (the demo); the table says so.
        data_root: folder of the task files (the layout of ``../shared/data``); null reads the hub.
        bilm: a biLM to use instead of pretraining (export folder, published folder or ``options,weights``).
        seeds: finetuning seeds per task and arm.
        jobs: finetuning runs at once.
        threads: torch threads per run (``OMP_NUM_THREADS``).
        pretrain_threads: torch threads of the pretraining run (0: every core; it runs alone).
        test_pretrain: measure the biLM's test perplexity once pretraining ends.
        output_dir: where ``table.md``, ``results.json`` and the pictures go.
        work_dir: where every run's config, logs, checkpoints and results go.
        wandb_project: the W&B project of every run (one group per reproduction).
        pretrain: the pretraining stage.
        tasks: one finetuning stage per task, in order.
        arms: the arms each task is run in: ``baseline``, ``random_bilm``, ``elmo`` and, with ``task_text``,
            ``elmo_task`` (+ELMo with the biLM tuned on the task's training text; the table keeps, per task,
            whichever of ``elmo`` and ``elmo_task`` scores higher on dev).
        elmo_choice_seeds: with ``elmo_task``, the number of first seeds on which both ``elmo`` and
            ``elmo_task`` run; the one with the higher mean dev score over them then runs alone on the
            other seeds (0: both run on every seed).
        task_text: the stage that tunes the biLM on each task's training sentences before it is frozen (ELMo
            §3.4): a pretraining config continued from the biLM (``--model.init_from``) and its overrides
            (:mod:`elmo_pipeline.reproduce.task_text`).
        launch: how the preset is meant to be launched (documentation; printed by ``--dry-run``).
        dry_run_vocab_size: vocabulary size for ``--dry-run`` when the pretraining vocabulary does not exist yet.
    """

    name: str
    description: str = ""
    meaningful: bool = True
    data_root: str | None = None
    bilm: str | None = None
    seeds: int = 3
    jobs: int = 1
    threads: int = 1
    pretrain_threads: int = 0
    test_pretrain: bool = True
    output_dir: str = ""
    work_dir: str = ""
    wandb_project: str = "elmo-pipeline"
    pretrain: StageSpec | None = None
    tasks: list[StageSpec] = field(default_factory=list)
    arms: list[str] = field(default_factory=lambda: list(TABLE_ARMS))
    task_text: StageSpec | None = None
    elmo_choice_seeds: int = 0
    launch: str = ""
    dry_run_vocab_size: int = 50_000
    only_tasks: list[str] = field(default_factory=list)  # --tasks: run these; the report covers all

    @classmethod
    def load(cls, preset: str) -> Preset:
        """A preset by name (``configs/reproduce/<name>.yaml``) or by the path of a YAML file."""
        if preset in RENAMED:
            print(
                f"reproduce: the preset {preset!r} is now called {RENAMED[preset]!r} (it pretrains the one-hour biLM "
                f"of configs/pretrain/cpu_1h.yaml, not BiLMConfig.preset('small')); running --preset {RENAMED[preset]}",
                file=sys.stderr,
            )
            preset = RENAMED[preset]
        path = Path(preset)
        if not path.suffix:
            path = Path("configs/reproduce") / f"{preset}.yaml"
        try:
            path = find_resource(path)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"reproduce: no preset {preset!r} ({path}); the presets are {', '.join(PRESETS)} or a YAML file"
            ) from None
        raw = yaml.safe_load(path.read_text()) or {}
        known = set(cls.__dataclass_fields__)
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"{path}: unknown preset fields {sorted(unknown)}; known: {sorted(known)}")
        raw.setdefault("name", path.stem)
        for stage in ("pretrain", "task_text"):
            if raw.get(stage) is not None:
                raw[stage] = StageSpec(**raw[stage])
        tasks = []
        for i, task in enumerate(raw.get("tasks") or []):
            if not isinstance(task, dict) or "name" not in task or "config" not in task:
                raise ValueError(f"{path}: tasks[{i}] needs `name` and `config`, got {task!r}")
            tasks.append(StageSpec(**task))
        raw["tasks"] = tasks
        bad = set(raw.get("arms") or []) - set(ARMS)
        if bad:
            raise ValueError(f"{path}: unknown arms {sorted(bad)}; arms are {', '.join(ARMS)}")
        if "elmo_task" in (raw.get("arms") or []) and raw.get("task_text") is None:
            raise ValueError(f"{path}: the elmo_task arm needs a `task_text` stage (the config that tunes the biLM)")
        preset_obj = cls(**raw)
        choice = preset_obj.elmo_choice_seeds
        if not isinstance(choice, int) or not 0 <= choice <= preset_obj.seeds:
            raise ValueError(
                f"{path}: elmo_choice_seeds must be a whole number from 0 (both +ELMo arms on every seed) to "
                f"seeds ({preset_obj.seeds}), got {choice!r}"
            )
        preset_obj.output_dir = preset_obj.output_dir or f"results/{preset_obj.name}"
        preset_obj.work_dir = preset_obj.work_dir or f"runs/reproduce/{preset_obj.name}"
        if preset_obj.pretrain is None and not preset_obj.bilm:
            raise ValueError(f"{path}: give either `pretrain` (a config) or `bilm` (a biLM to use)")
        return preset_obj


def set_dotted(config: dict[str, Any], key: str, value: Any) -> None:
    """``config["a"]["b"] = value`` for ``key="a.b"`` (creating missing levels).

    In a list, a part is an index (``trainer.callbacks.1``) or the class name of the one item whose
    ``class_path`` ends with it (``trainer.callbacks.EarlyStopping.init_args.patience``): a name
    that stays right when the config's list changes order.
    """
    node: Any = config
    parts = key.split(".")
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        if isinstance(node, list):
            index = _list_index(node, part, key, ".".join(parts[:depth]))
            if last:
                node[index] = value
            else:
                node = node[index]
        elif last:
            node[part] = value
        else:
            if not isinstance(node.get(part), dict | list):
                node[part] = {}
            node = node[part]


def _list_index(items: list[Any], part: str, key: str, where: str) -> int:
    if part.isdigit():
        if int(part) >= len(items):
            raise ValueError(f"reproduce: `{key}`: {where} has {len(items)} items, no [{part}]")
        return int(part)
    matches = [
        i
        for i, item in enumerate(items)
        if isinstance(item, dict) and str(item.get("class_path", "")).rsplit(".", 1)[-1] == part
    ]
    if len(matches) != 1:
        names = [str(item.get("class_path", "?")).rsplit(".", 1)[-1] for item in items if isinstance(item, dict)]
        how = "no item" if not matches else f"{len(matches)} items (use the index)"
        raise ValueError(f"reproduce: `{key}`: {where} has {how} of class {part}; its items are {names}")
    return matches[0]


def load_config(stage: StageSpec) -> dict[str, Any]:
    """The stage's base YAML with its ``set`` overrides applied."""
    config = yaml.safe_load(find_resource(stage.config).read_text()) or {}
    for key, value in stage.set.items():
        set_dotted(config, key, copy.deepcopy(value))
    return config


def fingerprint(config: dict[str, Any], extra: dict[str, Any] | None = None) -> str:
    """Hash of a run config without its loggers and progress display (which do not change results).

    ``extra`` adds what the config names only by path, such as the identity of the biLM's weights.
    """
    config = copy.deepcopy(config)
    trainer = config.get("trainer") or {}
    for key in ("logger", "enable_progress_bar"):
        trainer.pop(key, None)
    if extra:
        config["__extra__"] = extra
    text = yaml.safe_dump(config, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def loggers(run_dir: Path, name: str, version: str, wandb: dict[str, Any] | None) -> list[dict[str, Any]]:
    """CSV logs in ``run_dir/logs/<version>`` always; W&B (group, run name) when ``wandb`` is given."""
    out: list[dict[str, Any]] = [
        {
            "class_path": "lightning.pytorch.loggers.CSVLogger",
            "init_args": {"save_dir": str(run_dir), "name": "logs", "version": version},
        }
    ]
    if wandb:
        out.append(
            {
                "class_path": "elmo_pipeline.systems.tracking.WandbLogger",
                "init_args": {
                    "project": wandb["project"],
                    "group": wandb["group"],
                    "name": name,
                    "save_dir": wandb["save_dir"],
                },
            }
        )
    return out


def place_outputs(
    config: dict[str, Any], run_dir: Path, name: str, version: str, wandb: dict[str, Any] | None, export: bool = False
) -> dict[str, Any]:
    """Put every output of a run under ``run_dir``: the one place that knows a run's output keys.

    ``run_dir/`` is the trainer's root, ``run_dir/logs/<version>/`` its CSV log (and W&B, when
    given, under ``name``), ``run_dir/checkpoints/`` every ModelCheckpoint's folder and, for a
    pretraining run (``export``), ``run_dir/export/`` the export folder. The progress bar is off:
    the reproduction prints its own progress.
    """
    trainer = config.setdefault("trainer", {})
    trainer["default_root_dir"] = str(run_dir)
    trainer["enable_progress_bar"] = False
    trainer["logger"] = loggers(run_dir, name, version, wandb)
    for callback in trainer.get("callbacks") or []:
        if isinstance(callback, dict) and callback.get("class_path", "").endswith("ModelCheckpoint"):
            callback.setdefault("init_args", {})["dirpath"] = str(run_dir / "checkpoints")
    if export:
        config.setdefault("model", {})["export_dir"] = str(run_dir / "export")
    return config


def _located(path: str) -> str:
    """``path`` unchanged if it exists here (or is absolute or a hub id), else where a resource root has it."""
    if Path(path).is_absolute() or Path(path).exists() or path.startswith("hf:"):
        return path
    try:
        return str(find_resource(path))
    except FileNotFoundError:
        return path  # the data module names the missing file


def pretrain_config(preset: Preset, run_dir: Path, wandb: dict[str, Any] | None, version: str) -> dict[str, Any]:
    """The pretraining run's config: the preset's, with every output under ``run_dir``."""
    assert preset.pretrain is not None
    config = place_outputs(
        load_config(preset.pretrain), run_dir, f"{preset.name}-pretrain-{version}", version, wandb, export=True
    )
    data = config.setdefault("data", {})
    for key in ("sources", "val_sources", "test_sources"):  # bundled samples also from an installed wheel
        data[key] = [_located(path) for path in data.get(key) or []] or data.get(key)
    if "data.vocab_path" not in preset.pretrain.set:  # built on start from the corpus, inside this run
        data["vocab_path"] = str(run_dir / "vocab.txt")
    return config


def finetune_config(
    preset: Preset,
    task: StageSpec,
    arm: str,
    seed: int,
    bilm: str | None,
    run_dir: Path,
    wandb: dict[str, Any] | None,
) -> dict[str, Any]:
    """One finetuning run's config: the task's, for ``arm`` and ``seed``, outputs under ``run_dir``.

    ``bilm`` is the biLM of the ``elmo`` and ``random_bilm`` arms, and the task-tuned one of ``elmo_task``.
    """
    if arm not in ARMS:
        raise ValueError(f"reproduce: unknown arm {arm!r}; arms are {', '.join(ARMS)}")
    if arm != "baseline" and not bilm:
        raise ValueError(f"reproduce: the {arm} arm needs a biLM (pretraining or --bilm)")
    config = load_config(task)
    config["seed_everything"] = seed
    config.setdefault("model", {})
    data = config.setdefault("data", {})
    data["elmo"] = {"baseline": None, "elmo": bilm, "elmo_task": bilm, "random_bilm": f"random:{bilm}"}[arm]
    data["data_root"] = preset.data_root
    data["seed"] = seed
    data["random_bilm_seed"] = seed
    data["cache_dir"] = str(Path(preset.work_dir) / "cache")  # shared by every run: one cache per biLM and dataset
    return place_outputs(config, run_dir, f"{task.name}-{arm}-seed{seed}", "", wandb)
