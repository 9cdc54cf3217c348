"""The task-text stage: a biLM tuned on a task's training sentences; +ELMo chosen on dev between it and the general."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import elmo_pipeline.systems.pretrain_cli  # noqa: F401  (Lightning's log handler binds the real stderr)
from elmo_pipeline.data.task_text import task_texts, write_task_text
from elmo_pipeline.models import BiLM, BiLMConfig
from elmo_pipeline.models.export_folder import save_export
from elmo_pipeline.models.source import BiLMSource
from elmo_pipeline.reproduce.preset import Preset, StageSpec
from elmo_pipeline.reproduce.runner import plan
from elmo_pipeline.reproduce.table import choose_elmo, markdown_table, table_rows
from elmo_pipeline.reproduce.task_text import task_text_config, tune_on_task_text
from elmo_pipeline.text import Vocabulary

SAMPLES = "data/sample/tasks"  # the bundled task samples the demo runs on


def test_task_texts_are_the_distinct_sentences_without_labels():
    ner = task_texts("ner_conll2003", SAMPLES, "train")
    assert ner and all(isinstance(t, str) for text in ner for t in text)
    assert len({tuple(t) for t in ner}) == len(ner)  # distinct
    assert not {"B-PER", "I-PER", "B-ORG", "I-ORG"} & {t for text in ner for t in text}  # no tags
    snli = task_texts("nli_snli", SAMPLES, "train")
    pairs = task_texts("nli_snli", SAMPLES, "validation")
    assert snli and pairs and not {"entailment", "contradiction", "neutral"} & {text[0] for text in snli}
    sst = task_texts("sentiment_sst5", SAMPLES, "train")
    assert sst and not {f"({label}" for label in range(5)} & {t for text in sst for t in text}  # words, not trees


def test_written_text_is_one_sentence_per_line_and_whitespace_inside_a_token_is_counted(tmp_path):
    counts = write_task_text(tmp_path / "t.txt", [["a", "b"], ["c\u00a0d", "e"]])
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "a b\nc_d e\n"
    assert counts == {"sentences": 2, "tokens": 4, "tokens_with_whitespace": 1}


def _records(task: str, dev: dict[str, list[float]], test: dict[str, list[float]]) -> list[dict]:
    return [
        {"task": task, "arm": arm, "seed": seed, "best_val": d / 100, "test": {"acc": t / 100}}
        for arm in dev
        for seed, (d, t) in enumerate(zip(dev[arm], test[arm], strict=True))
    ]


def test_elmo_is_chosen_on_dev_and_the_test_scores_play_no_part():
    task = "sentiment_sst5"
    base = {"baseline": [40.0, 41.0, 40.5], "random_bilm": [38.0, 38.5, 37.0]}
    # the tuned biLM is better on dev and worse on test: it is kept, and the table shows its test scores
    runs = _records(
        task,
        {**base, "elmo": [42.0, 42.5, 42.0], "elmo_task": [43.0, 43.5, 43.0]},
        {**base, "elmo": [45.0, 45.0, 45.0], "elmo_task": [41.0, 41.5, 42.0]},
    )
    table, choice = choose_elmo(runs, task)
    assert choice["kept"] and choice["chosen"] == "elmo_task"
    assert sorted(100 * r["test"]["acc"] for r in table if r["arm"] == "elmo") == pytest.approx([41.0, 41.5, 42.0])
    assert {r.get("from_arm") for r in table if r["arm"] == "elmo"} == {"elmo_task"}
    (row,) = table_rows(runs, [task])
    assert row["elmo"]["mean"] == pytest.approx(41.5) and row["task_text"]["dev"]["elmo_task"]["mean"] == pytest.approx(
        129.5 / 3
    )
    # worse on dev, better on test: dropped
    runs = _records(
        task,
        {**base, "elmo": [42.0, 42.5, 42.0], "elmo_task": [41.0, 41.5, 41.0]},
        {**base, "elmo": [41.0, 41.0, 41.0], "elmo_task": [46.0, 46.5, 47.0]},
    )
    (row,) = table_rows(runs, [task])
    assert not row["task_text"]["kept"] and row["elmo"]["mean"] == pytest.approx(41.0)
    # a tie keeps the general biLM
    runs = _records(
        task, {**base, "elmo": [42.0] * 3, "elmo_task": [42.0] * 3}, {**base, "elmo": [1.0] * 3, "elmo_task": [2.0] * 3}
    )
    assert choose_elmo(runs, task)[1]["chosen"] == "elmo"
    # no tuned runs: nothing chosen, the table as before
    plain = [r for r in runs if r["arm"] != "elmo_task"]
    assert choose_elmo(plain, task) == (plain, None) and "task_text" not in table_rows(plain, [task])[0]


def test_the_table_says_what_tuning_did_on_dev():
    task = "sentiment_sst5"
    runs = _records(
        task,
        {"baseline": [40.0, 41.0], "elmo": [42.0, 42.5], "elmo_task": [43.0, 43.5]},
        {"baseline": [40.0, 41.0], "elmo": [42.0, 42.5], "elmo_task": [43.0, 43.5]},
    )
    text = markdown_table(
        table_rows(runs, [task]), "t", "", True, None, {task: {"dev_ppl_before": 250.0, "best_val_ppl": 120.5}}
    )
    assert "- sentiment_sst5: tuned 43.25 ± 0.35, general 42.25 ± 0.35: kept" in text
    assert "perplexity of the dev sentences 250.0 -> 120.5" in text


def test_a_preset_with_the_tuned_arm_needs_the_stage(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("name: p\nbilm: b\narms: [baseline, elmo, elmo_task]\n")
    with pytest.raises(ValueError, match="elmo_task arm needs a `task_text` stage"):
        Preset.load(str(path))


def _export(directory: Path, seed: int = 0) -> str:
    torch.manual_seed(seed)
    words = " ".join(task_texts("sentiment_sst5", SAMPLES, "train")[0]).split()
    vocab = Vocabulary.build([words, "the cat sat".split()])
    config = BiLMConfig.preset("tiny", vocab_size=len(vocab), cell_dim=16, projection_dim=8, num_samples=8)
    return str(save_export(directory, BiLM(config), vocab))


def _preset(tmp_path: Path) -> Preset:
    stage = StageSpec(
        "configs/pretrain/task_text.yaml",
        {"trainer.max_steps": 4, "trainer.val_check_interval": 2, "data.batch_size": 8, "data.val_max_sentences": 40},
    )
    task = StageSpec("configs/finetune/sentiment_sst5.yaml", {"data.train_subtrees": False}, "sentiment_sst5")
    return Preset(
        name="t",
        data_root=SAMPLES,
        bilm="unused",
        work_dir=str(tmp_path / "work"),
        seeds=1,
        pretrain_threads=1,
        tasks=[task],
        arms=["baseline", "elmo", "elmo_task"],
        task_text=stage,
    )


def test_the_stage_tunes_the_biLM_on_the_task_text_and_is_not_run_twice(tmp_path):
    preset = _preset(tmp_path)
    (task,) = preset.tasks
    bilm = _export(tmp_path / "general")
    record = tune_on_task_text(preset, task, bilm, None)
    run_dir = tmp_path / "work" / "sentiment_sst5" / "task_text"
    train = (run_dir / "text" / "train.txt").read_text().splitlines()
    assert len(train) == record["sentences"]["train"] > 0
    assert record["dev_ppl_before"] > 1 and record["best_val_ppl"] > 1 and record["global_step"] == 4
    config = json.loads((Path(record["export"]) / "config.json").read_text())
    assert config == json.loads((Path(bilm) / "config.json").read_text())  # the source's architecture and softmax
    tuned = BiLMSource.parse(record["export"]).load().state_dict()
    general = BiLMSource.parse(bilm).load().state_dict()
    assert not torch.equal(tuned["token_encoder.convs.0.weight"], general["token_encoder.convs.0.weight"])
    assert (Path(record["export"]) / "vocab.txt").read_text() == (Path(bilm) / "vocab.txt").read_text()

    stamp = (run_dir / "results.json").stat().st_mtime_ns
    assert tune_on_task_text(preset, task, bilm, None) == record  # finished: kept, nothing run
    assert tune_on_task_text(preset, task, bilm, None, only_if_finished=True) == record  # a task --tasks leaves out
    assert (run_dir / "results.json").stat().st_mtime_ns == stamp

    other = _export(tmp_path / "other", seed=1)  # another biLM: the stage runs again, for it
    assert tune_on_task_text(preset, task, other, None, only_if_finished=True) is None  # but not for a left-out task
    again = tune_on_task_text(preset, task, other, None)
    assert again["fingerprint"] != record["fingerprint"] and again["bilm"] == other
    runs = plan(preset, bilm, None, "id", {"sentiment_sst5": again["export"]})
    assert [r.arm for r in runs] == ["baseline", "elmo", "elmo_task"]
    assert runs[2].config["data"]["elmo"] == again["export"] and runs[1].config["data"]["elmo"] == bilm
    assert runs[2].fingerprint != runs[1].fingerprint


def test_the_stage_never_reads_test_sentences(tmp_path):
    preset = _preset(tmp_path)
    config = task_text_config(preset, preset.tasks[0], _export(tmp_path / "g"), tmp_path / "run", None, "fit")
    assert config["data"]["test_sources"] == []
    assert [Path(p).name for p in config["data"]["sources"] + config["data"]["val_sources"]] == ["train.txt", "dev.txt"]


def test_a_published_biLM_is_tuned_with_a_new_softmax_over_the_task_words(tmp_path):
    """``reproduce --bilm results/<preset>/bilm``: the published files have no softmax, so there is no "before"."""
    from elmo_pipeline.interop import save_bilm_tf

    preset = _preset(tmp_path)
    published = tmp_path / "published"
    save_bilm_tf(BiLMSource.parse(_export(tmp_path / "general")).load(), published)
    record = tune_on_task_text(preset, preset.tasks[0], str(published), None)
    assert "dev_ppl_before" not in record and record["best_val_ppl"] > 1
    tuned = BiLMSource.parse(record["export"])
    assert tuned.config().softmax == "full"
    vocab = (Path(record["export"]) / "vocab.txt").read_text().split()
    train_words = {
        w for line in (Path(preset.work_dir) / "sentiment_sst5/task_text/text/train.txt").open() for w in line.split()
    }
    assert set(vocab) - {"<S>", "</S>", "<UNK>"} <= train_words  # the task's own words


def test_the_choice_compares_the_seeds_both_arms_ran_and_keeps_the_chosen_arms_every_seed():
    task = "sentiment_sst5"
    base = {"baseline": [40.0, 41.0, 40.5], "random_bilm": [38.0, 38.5, 37.0]}
    runs = _records(task, {**base, "elmo_task": [43.0, 39.0, 39.0]}, {**base, "elmo_task": [44.0, 45.0, 46.0]})
    runs += _records(task, {"elmo": [42.0]}, {"elmo": [50.0]})  # the general biLM ran on seed 0 only
    table, choice = choose_elmo(runs, task)
    # seed 0 alone decides (43 > 42); the tuned arm's mean over all three seeds (40.3) would have lost
    assert choice["chosen"] == "elmo_task" and choice["seeds"] == [0]
    assert choice["dev"]["elmo_task"] == {"mean": 43.0, "std": None, "n": 1, "scores": [43.0]}
    assert sorted(100 * r["test"]["acc"] for r in table if r["arm"] == "elmo") == pytest.approx([44.0, 45.0, 46.0])
    text = markdown_table(table_rows(runs, [task]), "t", "", True, None, {})
    assert "- sentiment_sst5: tuned 43.00, general 42.00: kept (seed 0)" in text


def test_only_the_arm_chosen_on_the_first_seeds_runs_on_the_others(tmp_path):
    from elmo_pipeline.reproduce.runner import after_the_choice, execute, plan

    def make_plan():
        task = StageSpec("configs/finetune/sentiment_sst5.yaml", {}, "sentiment_sst5")
        preset = Preset(
            name="t",
            data_root=SAMPLES,
            bilm="b",
            work_dir=str(tmp_path / "w"),
            seeds=3,
            tasks=[task],
            arms=["baseline", "elmo", "elmo_task"],
            task_text=StageSpec("configs/pretrain/task_text.yaml"),
            elmo_choice_seeds=1,
        )
        tuned = tmp_path / "tuned"
        tuned.mkdir(exist_ok=True)
        (tuned / "config.json").write_text("{}")
        (tuned / "weights.pt").write_bytes(b"w")
        return plan(preset, "general", None, "", {"sentiment_sst5": str(tuned)})

    runs = make_plan()
    dev = {("elmo", 0): 0.42, ("elmo_task", 0): 0.43}
    started = []

    def starter(run, threads, env):
        assert run.arm == "baseline" or run.seed == 0 or {("elmo", 0), ("elmo_task", 0)} <= set(finished)
        started.append((run.arm, run.seed))
        run.run_dir.mkdir(parents=True, exist_ok=True)
        record = {
            "task": run.task.name,
            "arm": run.arm,
            "seed": run.seed,
            "best_val": dev.get((run.arm, run.seed), 0.4),
        }
        record["test"] = {"acc": 0.4}
        (run.run_dir / "results.json").write_text(json.dumps(record))
        (run.run_dir / "fingerprint").write_text(run.fingerprint + "\n")
        finished.append((run.arm, run.seed))
        return record

    finished = []  # a later seed's +ELMo run must start only after both seed-0 runs finished (asserted above)
    results = execute(runs, 2, 1, starter=starter, admit=after_the_choice(runs, 1))
    assert sorted(started) == sorted(
        [("baseline", s) for s in range(3)] + [("elmo", 0), ("elmo_task", 0), ("elmo_task", 1), ("elmo_task", 2)]
    )
    assert len(results) == 7
    # a rerun starts nothing; with the other arm ahead on dev, that arm would have run
    started.clear()
    assert len(execute(runs, 2, 1, starter=starter, admit=after_the_choice(runs, 1))) == 7 and not started
    (elmo0,) = [i for i, r in enumerate(runs) if (r.arm, r.seed) == ("elmo", 0)]
    results[elmo0]["best_val"] = 0.44
    admit = after_the_choice(runs, 1)
    later = {(r.arm, r.seed): admit(i, results) for i, r in enumerate(runs) if r.seed > 0 and r.arm != "baseline"}
    assert later == {("elmo", 1): True, ("elmo_task", 1): False, ("elmo", 2): True, ("elmo_task", 2): False}
    # runs of the arm not chosen, finished by an earlier call (a preset that ran both arms on every seed), do not count
    for run in runs:
        if run.arm == "elmo" and run.seed > 0:
            starter(run, 1, None)
    again = execute(runs, 2, 1, starter=starter, admit=after_the_choice(runs, 1))
    assert sorted((runs[i].arm, runs[i].seed) for i in again if runs[i].arm == "elmo") == [("elmo", 0)]
    del results[elmo0]  # while a seed-0 run is unfinished, the later seeds wait
    assert {admit(i, results) for i, r in enumerate(runs) if r.seed > 0 and r.arm != "baseline"} == {None}


def test_elmo_choice_seeds_is_checked(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("name: p\nbilm: b\nseeds: 3\nelmo_choice_seeds: 4\n")
    with pytest.raises(ValueError, match="elmo_choice_seeds must be a whole number from 0"):
        Preset.load(str(path))


def test_arms_without_a_seed_in_common_are_compared_over_their_own_seeds():
    task = "sentiment_sst5"
    runs = _records(task, {"elmo_task": [43.0]}, {"elmo_task": [44.0]})
    runs += [{**r, "seed": 1} for r in _records(task, {"elmo": [42.0]}, {"elmo": [50.0]})]
    _, choice = choose_elmo(runs, task)  # a partial report: elmo_task seed 0, elmo seed 1
    assert choice["chosen"] == "elmo_task" and choice["seeds"] == [0, 1]
    text = markdown_table(table_rows(runs, [task]), "t", "", True, None, {})
    assert "tuned 43.00, general 42.00: kept" in text


def test_a_reproduction_that_chooses_on_seed_0_reports_only_the_runs_of_its_rule(tmp_path, monkeypatch):
    """The loop end to end, with every run faked: the plan, the wait for the choice, the table, a --tasks rerun."""
    from elmo_pipeline.reproduce import loop, runner

    general, tuned = tmp_path / "general", tmp_path / "tuned"
    for folder in (general, tuned):
        folder.mkdir()
        (folder / "config.json").write_text("{}")
        (folder / "weights.pt").write_bytes(folder.name.encode())
    tasks = [StageSpec("configs/finetune/sentiment_sst5.yaml", {}, "sentiment_sst5")]
    tasks.append(StageSpec("configs/finetune/nli_snli.yaml", {}, "nli_snli"))
    preset = Preset(
        name="t",
        data_root=SAMPLES,
        bilm=str(general),
        seeds=3,
        jobs=2,
        work_dir=str(tmp_path / "work"),
        output_dir=str(tmp_path / "out"),
        tasks=tasks,
        arms=["baseline", "random_bilm", "elmo", "elmo_task"],
        task_text=StageSpec("configs/pretrain/task_text.yaml"),
        elmo_choice_seeds=1,
    )
    monkeypatch.setattr(loop, "keep_given_bilm", lambda bilm, out: None)
    monkeypatch.setattr(loop, "tune_on_task_text", lambda *a, **k: {"export": str(tuned)})
    dev = {"elmo": 0.45, "elmo_task": 0.40}  # the general biLM wins seed 0 on both tasks
    started = []

    def starter(run, threads, env):
        started.append(run.label)
        run.run_dir.mkdir(parents=True, exist_ok=True)
        record = {"task": run.task.name, "arm": run.arm, "seed": run.seed, "best_val": dev.get(run.arm, 0.3)}
        record["test"] = {"acc": record["best_val"] - 0.01 * run.seed}
        (run.run_dir / "results.json").write_text(json.dumps(record))
        (run.run_dir / "fingerprint").write_text(run.fingerprint + "\n")
        return record

    monkeypatch.setattr(
        runner, "start", lambda run, threads, env_extra=None, supervisor=None: starter(run, threads, env_extra)
    )
    loop.reproduce(preset, wandb_enabled=False)
    assert len(started) == 2 * (3 * 2 + 2 + 2)  # baseline + control on 3 seeds, both +ELMo on seed 0, elmo on 1-2
    assert not any("elmo_task seed 1" in label or "elmo_task seed 2" in label for label in started)
    report = json.loads((tmp_path / "out" / "results.json").read_text())
    assert report["complete"] and report["runs_planned"] == report["runs_done"] == 20
    for row in report["table"]:
        assert row["task_text"]["chosen"] == "elmo" and row["task_text"]["seeds"] == [0]
        assert row["elmo"]["n"] == 3 and row["elmo"]["mean"] == pytest.approx(44.0)
    # a --tasks rerun of one task starts nothing and still reports both tasks the same way
    started.clear()
    preset.only_tasks = ["nli_snli"]
    loop.reproduce(preset, wandb_enabled=False)
    again = json.loads((tmp_path / "out" / "results.json").read_text())
    assert not started and again["table"] == report["table"] and again["runs_done"] == 20
