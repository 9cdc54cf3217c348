"""The task-text stage: the biLM tuned on each task's training sentences before it is frozen (ELMo §3.4).

For each task, ``reproduce`` writes the distinct sentences of its training split (labels left out) and of
its dev split to ``<work>/<task>/task_text/text/``, measures the biLM's perplexity on the dev sentences,
continues pretraining it on the training sentences for the preset's budget (``pretrain fit`` with
``--model.init_from``, the stage's config), and records the perplexity after. The ``elmo_task`` arm then
freezes the tuned biLM as the ``elmo`` arm freezes the general one; the table keeps, per task, the arm
that scores higher on dev (:mod:`elmo_pipeline.reproduce.table`). Test sentences are never read here.

The tuned biLM keeps the source's vocabulary and softmax when the source has them (an export folder of
this project), so the perplexities before and after compare; a published biLM has no softmax, and gets a
new one over the task's words (then there is no "before").
"""

from __future__ import annotations

import copy
import logging
import shutil
from pathlib import Path
from typing import Any

from elmo_pipeline.data.task_text import task_texts, write_task_text
from elmo_pipeline.files import file_digest, write_json_atomic
from elmo_pipeline.models.source import BiLMSource
from elmo_pipeline.reproduce.preset import Preset, StageSpec, fingerprint, load_config, place_outputs
from elmo_pipeline.reproduce.runner import (
    finished_record,
    fit_bilm,
    keep_logs,
    last_metrics,
    pretrain_progress,
    require_output,
    write_yaml,
)
from elmo_pipeline.reproduce.supervisor import Supervisor

log = logging.getLogger(__name__)


def keeps_softmax(bilm: str) -> bool:
    """Whether ``bilm`` is an export folder with its vocabulary (so the tuned biLM can keep its softmax)."""
    path = Path(bilm)
    return (path / "config.json").is_file() and (path / "vocab.txt").is_file()


def write_texts(preset: Preset, task: StageSpec, folder: Path) -> dict[str, dict[str, int]]:
    """The task's training and dev sentences, one per line, in ``folder`` (``train.txt``, ``dev.txt``)."""
    data = load_config(task).get("data") or {}
    split_files = data.get("split_files") or {}
    counts = {}
    for split, name in (("train", "train.txt"), ("validation", "dev.txt")):
        texts = task_texts(
            data.get("task", task.name),
            preset.data_root,
            split,
            split_file=split_files.get(split),
            tag_scheme=data.get("tag_scheme"),
        )
        folder.mkdir(parents=True, exist_ok=True)
        counts[split] = write_task_text(folder / name, texts)
    return counts


def task_text_config(
    preset: Preset, task: StageSpec, bilm: str, run_dir: Path, wandb: dict[str, Any] | None, version: str
) -> dict[str, Any]:
    """The tuning run's config: the stage's, from ``bilm``, on the task's sentences, outputs under ``run_dir``."""
    assert preset.task_text is not None
    config = place_outputs(
        load_config(preset.task_text), run_dir, f"{task.name}-task-text-{version}", version, wandb, export=True
    )
    model, data = config.setdefault("model", {}), config.setdefault("data", {})
    model["init_from"] = bilm
    model["init_softmax"] = keeps_softmax(bilm)
    if model["init_softmax"]:  # the source's softmax, so that its weights load
        source = BiLMSource.parse(bilm).config()
        softmax = model.setdefault("bilm", {})
        for name in ("softmax", "num_samples", "adaptive_cutoffs", "adaptive_div_value"):
            value = getattr(source, name)
            softmax[name] = list(value) if isinstance(value, tuple) else copy.deepcopy(value)
    else:  # a new softmax over the task's words (a few thousand to tens of thousands): the exact one
        model.setdefault("bilm", {})["softmax"] = "full"
    data["sources"] = [str(run_dir / "text" / "train.txt")]
    data.pop("weights", None)
    data["val_sources"] = [str(run_dir / "text" / "dev.txt")]
    data["test_sources"] = []
    data["tokenizer"] = data["eval_tokenizer"] = "whitespace"  # the sentences are the task's tokens
    data["vocab_path"] = str(Path(bilm) / "vocab.txt") if model["init_softmax"] else str(run_dir / "vocab.txt")
    return config


def tune_on_task_text(
    preset: Preset,
    task: StageSpec,
    bilm: str,
    wandb: dict[str, Any] | None,
    supervisor: Supervisor | None = None,
    only_if_finished: bool = False,
) -> dict[str, Any] | None:
    """Tune ``bilm`` on ``task``'s training sentences (or reuse the finished tuning); returns its record.

    With ``only_if_finished`` (a task that ``--tasks`` leaves out) nothing is trained: the finished
    tuning's record, or None.

    The record: ``export`` (the tuned biLM), ``dev_ppl_before`` and ``best_val_ppl`` (the perplexity of
    the dev sentences before and after, when the softmax is kept), the sentence counts, steps, tokens and
    seconds. A run whose config, biLM or texts changed starts again; a cut-off one resumes.
    """
    supervisor = supervisor or Supervisor()
    run_dir = Path(preset.work_dir) / task.name / "task_text"
    counts = write_texts(preset, task, run_dir / "text")
    fit = task_text_config(preset, task, bilm, run_dir, wandb, "fit")
    extra = {
        "bilm_identity": BiLMSource.parse(bilm).identity(),
        "train": file_digest(run_dir / "text" / "train.txt"),
        "dev": file_digest(run_dir / "text" / "dev.txt"),
    }
    print_ = fingerprint(fit, extra)
    done = finished_record(run_dir, print_)
    if done is not None:
        log.info("reproduce: %s: the biLM tuned on its text already (%s): kept", task.name, run_dir)
        return done
    if only_if_finished:
        return None
    stamp = run_dir / "fingerprint"
    if stamp.is_file() and stamp.read_text().strip() != print_:  # another biLM, config or text: start again
        keep_logs(run_dir)
        for path in run_dir.iterdir():
            if path.name not in ("text", ".attempts"):
                shutil.rmtree(path) if path.is_dir() else path.unlink()
    stamp.write_text(print_ + "\n")
    record: dict[str, Any] = {
        "task": task.name,
        "bilm": bilm,
        "export": str(run_dir / "export"),
        "fingerprint": print_,
        "sentences": {split: c["sentences"] for split, c in counts.items()},
        "tokens": {split: c["tokens"] for split, c in counts.items()},
    }
    if fit["model"]["init_softmax"]:  # the general biLM on the dev sentences, before any tuning
        before = run_dir / "logs" / "before" / "metrics.csv"
        if not before.is_file():
            write_yaml(run_dir / "before.yaml", task_text_config(preset, task, bilm, run_dir, wandb, "before"))
            supervisor.run(
                ["pretrain", "validate", "--config", str(run_dir / "before.yaml")],
                run_dir / "log.txt",
                preset.pretrain_threads,
            )
            require_output(before, "pretrain validate", run_dir / "log.txt")
        record["dev_ppl_before"] = last_metrics(before, "val/").get("ppl")
    budget = (fit.get("trainer") or {}).get("max_time")
    record.update(
        fit_bilm(
            run_dir,
            lambda version: task_text_config(preset, task, bilm, run_dir, wandb, version),
            preset.pretrain_threads,
            supervisor,
            f"{task.name}: tuning the biLM on the task's {counts['train']['sentences']:,} training sentences",
            heartbeat=lambda csv_path, seconds: pretrain_progress(csv_path, seconds, budget),
        )
    )
    write_json_atomic(run_dir / "results.json", record)
    return record
