"""Downstream task specs (``tasks/<name>/task.yaml``) and where the shipped resources live.

A task folder says what a task *is*: its data (a hub id and local files in the standard format),
its label set, its metric and the paper's numbers (DESIGN.md, "Declarative task folders"). The
code that reads the data and builds the heads lives in the package and reads these specs.

``tasks/``, ``configs/`` and the bundled task fixtures (``tests/fixtures/tasks``) are found in a
source checkout (beside the package) and in an installed wheel (``<prefix>/share/elmo-pipeline``,
installed by ``[tool.setuptools.data-files]`` in pyproject.toml); ``ELMO_PIPELINE_HOME`` puts one
more root first.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

SPLITS = ("train", "validation", "test")
TaskKind = Literal["tagging", "classification", "pair_classification"]
FORMATS = ("conll", "sst_ptb", "snli_jsonl")
METRICS = ("span_f1", "accuracy")


def resource_roots() -> list[Path]:
    """Folders that may hold ``tasks/``, ``configs/`` and ``tests/fixtures/tasks``, searched in order."""
    candidates = []
    if os.environ.get("ELMO_PIPELINE_HOME"):
        candidates.append(Path(os.environ["ELMO_PIPELINE_HOME"]))
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").is_file():  # a source checkout (editable install or PYTHONPATH)
        candidates.append(checkout)
    candidates.append(Path(sysconfig.get_path("data")) / "share" / "elmo-pipeline")  # a wheel's data-files
    candidates.append(Path(sys.prefix) / "share" / "elmo-pipeline")
    roots: list[Path] = []
    for root in candidates:
        if root not in roots:
            roots.append(root)
    return roots


def find_resource(path: str | Path) -> Path:
    """``path`` as given if it exists (absolute or relative to the working directory), else under a resource root.

    ``configs/finetune/ner_conll2003.yaml`` thus works from any directory, in a checkout or with a wheel.
    """
    path = Path(path)
    if path.is_absolute():
        return path
    if path.exists():
        return path.resolve()
    for root in resource_roots():
        if (root / path).exists():
            return root / path
    searched = ", ".join(str(r) for r in resource_roots())
    raise FileNotFoundError(f"{path}: not found in the working directory nor under {searched}")


def tasks_dir() -> Path:
    """The ``tasks/`` folder of the checkout or of the installed package."""
    return find_resource("tasks")


@dataclass(frozen=True)
class HubSource:
    """Where the task lives on the Hugging Face hub.

    Attributes:
        id: dataset id, e.g. ``eriktks/conll2003``.
        config: dataset configuration name (None: the default).
        splits: our split name (train / validation / test) -> the hub's split name.
        fields: our field name -> the hub's column (e.g. ``tokens``, ``tags``, ``premise``).
        label_names: names of the integer labels of a ClassLabel column, in id order.
    """

    id: str
    config: str | None = None
    splits: dict[str, str] = field(default_factory=dict)
    fields: dict[str, str] = field(default_factory=dict)
    label_names: list[str] | None = None


@dataclass(frozen=True)
class LocalSource:
    """The task's files in their standard format, relative to ``--data.data_root``.

    Attributes:
        files: split -> path relative to the data root.
        tag_scheme: for CoNLL files: ``IOB1`` or ``IOB2`` (the encoding of the file's tags).
    """

    files: dict[str, str]
    tag_scheme: str | None = None


@dataclass(frozen=True)
class TaskSpec:
    """A task, as ``tasks/<name>/task.yaml`` declares it.

    Attributes:
        name: the folder name.
        kind: ``tagging`` (one tag per token), ``classification`` (one label per text) or
            ``pair_classification`` (one label per text pair).
        format: the reader: ``conll``, ``sst_ptb`` or ``snli_jsonl``.
        labels: entity types (tagging) or class labels, in a fixed order.
        metric: ``span_f1`` or ``accuracy``; dev selects the model on it.
        hub: the hub source.
        local: the local files.
        paper: the paper's numbers (test set), for docs/results.md.
        description: one line.
        directory: the task folder.
    """

    name: str
    kind: TaskKind
    format: str
    labels: list[str]
    metric: str
    hub: HubSource
    local: LocalSource
    paper: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    directory: Path | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any], directory: Path | None = None) -> TaskSpec:
        where = directory / "task.yaml" if directory else "task spec"
        required = ("name", "kind", "format", "labels", "metric", "hub", "local")
        missing = [key for key in required if key not in data]
        if missing:
            raise ValueError(f"{where}: missing fields {missing}")
        if data["kind"] not in ("tagging", "classification", "pair_classification"):
            raise ValueError(f"{where}: unknown kind {data['kind']!r}")
        if data["format"] not in FORMATS:
            raise ValueError(f"{where}: unknown format {data['format']!r}; known formats are {list(FORMATS)}")
        if data["metric"] not in METRICS:
            raise ValueError(f"{where}: unknown metric {data['metric']!r}; known metrics are {list(METRICS)}")
        local = LocalSource(**data["local"])
        if set(local.files) != set(SPLITS):
            raise ValueError(f"{where}: local.files must name exactly the splits {list(SPLITS)}")
        return cls(
            name=data["name"],
            kind=data["kind"],
            format=data["format"],
            labels=[str(label) for label in data["labels"]],
            metric=data["metric"],
            hub=HubSource(**data["hub"]),
            local=local,
            paper=dict(data.get("paper") or {}),
            description=data.get("description", ""),
            directory=directory,
        )


def list_tasks() -> list[str]:
    """Names of the shipped tasks."""
    return sorted(p.parent.name for p in tasks_dir().glob("*/task.yaml"))


def load_task(name: str | Path) -> TaskSpec:
    """Load a task spec by name (``ner_conll2003``) or by the path of its folder or its ``task.yaml``."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        directory = path.parent
    elif (path / "task.yaml").is_file():
        directory = path
    else:
        directory = tasks_dir() / str(name)
        if not (directory / "task.yaml").is_file():
            raise ValueError(f"unknown task {str(name)!r} (--data.task); the shipped tasks are {list_tasks()}")
    spec = TaskSpec.from_dict(yaml.safe_load((directory / "task.yaml").read_text()), directory)
    if spec.name != directory.name:
        raise ValueError(f"{directory / 'task.yaml'}: name {spec.name!r} differs from its folder {directory.name!r}")
    return spec
