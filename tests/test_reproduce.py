"""`elmo-pipeline reproduce`: presets, the table's arithmetic, the dry run, and interrupt + resume end to end."""

from __future__ import annotations

import json
import math
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from elmo_pipeline.metrics.seeds import welch_t_test
from elmo_pipeline.models.source import BiLMSource
from elmo_pipeline.reproduce import dry_run
from elmo_pipeline.reproduce.preset import PRESETS, Preset, StageSpec, finetune_config, fingerprint, set_dotted
from elmo_pipeline.reproduce.provenance import check_provenance
from elmo_pipeline.reproduce.significance import format_p
from elmo_pipeline.reproduce.table import markdown_table, run_score, table_rows

ROOT = Path(__file__).parents[1]


# ---- presets -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", PRESETS)
def test_shipped_preset_dry_run_builds_every_model(name, tmp_path):
    path = ROOT / "configs" / "reproduce" / f"{name}.yaml"
    assert path.read_text().startswith("#") and f"--preset {name}" in path.read_text().split("\n\n")[0]
    preset = Preset.load(name)
    preset.work_dir = str(tmp_path / "work")
    built = dry_run(preset)
    names = [item["run"] for item in built]
    assert names[0] == "pretrain"
    assert len(names) == 1 + len(preset.tasks) * len(preset.arms)
    by_name = {item["run"]: item["parameters"] for item in built}
    for task in preset.tasks:
        # the ELMo arms add the mixes and the wider input layer; the control is exactly as large as +ELMo
        assert by_name[f"{task.name} elmo"] == by_name[f"{task.name} random_bilm"] > by_name[f"{task.name} baseline"]
    for item in built:
        assert Path(item["config"]).is_file()


def test_original_preset_is_paper_scale(tmp_path):
    preset = Preset.load("original")
    preset.work_dir = str(tmp_path)
    pretrain = dry_run(preset)[0]
    assert pretrain["vocab_size"] == 793_471
    assert pretrain["parameters"] > 93_600_864  # the 93.6M biLM plus its 800k-word softmax
    assert preset.seeds >= 3 and "torchrun" in preset.launch and "srun" in preset.launch


def test_preset_errors_name_the_problem(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="presets are demo, cpu_1h, original"):
        Preset.load("nonesuch")
    old = Preset.load("small")  # renamed (``small`` is also a biLM size), still accepted, with a notice
    assert old == Preset.load("cpu_1h") and "is now called 'cpu_1h'" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nbilm: some/dir\nsedes: 3\n")
    with pytest.raises(ValueError, match=r"unknown preset fields \['sedes'\]"):
        Preset.load(str(bad))
    bad.write_text("name: x\nbilm: some/dir\narms: [baseline, elmoo]\n")
    with pytest.raises(ValueError, match=r"unknown arms \['elmoo'\]"):
        Preset.load(str(bad))
    bad.write_text("name: x\n")
    with pytest.raises(ValueError, match="either `pretrain`"):
        Preset.load(str(bad))


def test_set_dotted_creates_levels_and_indexes_lists():
    config = {"trainer": {"callbacks": [{"init_args": {"patience": 10}}]}}
    set_dotted(config, "trainer.callbacks.0.init_args.patience", 3)
    set_dotted(config, "data.split_files", {"train": "x"})
    assert config == {
        "trainer": {"callbacks": [{"init_args": {"patience": 3}}]},
        "data": {"split_files": {"train": "x"}},
    }
    with pytest.raises(ValueError, match=r"trainer.callbacks has 1 items, no \[4\]"):
        set_dotted(config, "trainer.callbacks.4.init_args.patience", 3)


def test_set_dotted_finds_a_list_item_by_its_class():
    config = {
        "trainer": {
            "callbacks": [
                {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": {}},
                {"class_path": "lightning.pytorch.callbacks.EarlyStopping", "init_args": {"patience": 10}},
                {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": {}},
            ]
        }
    }
    set_dotted(config, "trainer.callbacks.EarlyStopping.init_args.patience", 3)
    assert config["trainer"]["callbacks"][1]["init_args"] == {"patience": 3}
    with pytest.raises(ValueError, match="2 items \\(use the index\\) of class ModelCheckpoint"):
        set_dotted(config, "trainer.callbacks.ModelCheckpoint.init_args.dirpath", "x")
    with pytest.raises(ValueError, match="no item of class Timer"):
        set_dotted(config, "trainer.callbacks.Timer.init_args.duration", "x")


def test_run_configs_per_arm_and_seed(tmp_path):
    preset = Preset(name="t", data_root="tests/fixtures/tasks", bilm="b", work_dir=str(tmp_path))
    task = StageSpec(config="configs/finetune/ner_conll2003.yaml", set={"trainer.max_epochs": 2}, name="ner_conll2003")
    wandb = {"project": "p", "group": "g", "save_dir": str(tmp_path)}
    configs = {
        arm: finetune_config(preset, task, arm, 1, "b", tmp_path / arm, wandb)
        for arm in ("baseline", "random_bilm", "elmo")
    }
    assert [configs[a]["data"]["elmo"] for a in configs] == [None, "random:b", "b"]
    for config in configs.values():
        assert config["seed_everything"] == config["data"]["seed"] == config["data"]["random_bilm_seed"] == 1
        assert config["trainer"]["max_epochs"] == 2
    # the fingerprint ignores the loggers (W&B on or off) but not what changes results
    no_wandb = finetune_config(preset, task, "elmo", 1, "b", tmp_path / "elmo", None)
    assert fingerprint(no_wandb) == fingerprint(configs["elmo"])
    other_seed = finetune_config(preset, task, "elmo", 2, "b", tmp_path / "elmo", None)
    assert fingerprint(other_seed) != fingerprint(configs["elmo"])


# ---- the table -------------------------------------------------------------------------------------------
def _record(task, arm, seed, score, key="acc"):
    return {"task": task, "arm": arm, "seed": seed, "test": {key: score}}


def test_table_rows_mean_std_and_relative_error_reduction():
    runs = [
        _record("sentiment_sst5", "baseline", 0, 0.40),
        _record("sentiment_sst5", "baseline", 1, 0.44),
        _record("sentiment_sst5", "baseline", 2, 0.42),
        _record("sentiment_sst5", "elmo", 0, 0.50),
        _record("sentiment_sst5", "elmo", 1, 0.52),
        _record("sentiment_sst5", "elmo", 2, 0.54),
        _record("ner_conll2003", "baseline", 0, 0.80, "f1"),
    ]
    sst, ner = table_rows(runs, ["sentiment_sst5", "ner_conll2003"])
    assert sst["baseline"]["mean"] == pytest.approx(42.0)
    assert sst["baseline"]["std"] == pytest.approx(2.0)  # sample std of 40, 44, 42
    assert sst["elmo"]["mean"] == pytest.approx(52.0)
    assert sst["increase"] == pytest.approx(10.0)
    assert sst["relative_error_reduction"] == pytest.approx(10.0 / 58.0)
    assert sst["paper_increase"] == pytest.approx(54.7 - 51.4)
    assert "random_bilm" not in sst
    assert ner["baseline"]["std"] is None and "increase" not in ner  # one seed, one arm
    text = markdown_table([sst, ner], "t", "", meaningful=False, pretrain=None)
    assert (
        "| sentiment_sst5 | test accuracy | 51.40 | 54.70 ± 0.50 | +3.30 / +6.8% | 42.00 ± 2.00 | — | 52.00 ± 2.00 |"
        in text
    )
    assert "+10.00 / +17.2%" in text
    assert "not meaningful" in text


def test_table_bootstrap_goal_and_time_limited_runs(tmp_path):
    from elmo_pipeline.data.predictions import write_predictions

    gold = ["a"] * 50 + ["b"] * 50
    texts = [[["w"]]] * 100

    def run(arm, seed, right, stopped_by="early_stopping", offset=0):  # right on examples offset .. offset+right-1
        correct = {(offset + i) % 100 for i in range(right)}
        predicted = [g if i in correct else ("a" if g == "b" else "b") for i, g in enumerate(gold)]
        folder = tmp_path / f"{arm}{seed}"
        path = write_predictions(folder, "test", "classification", texts, gold, predicted)
        record = _record("sentiment_sst5", arm, seed, right / 100)
        return {**record, "predictions": str(path), "stopped_by": stopped_by}

    runs = [run("baseline", s, r) for s, r in enumerate((60, 62, 61))]
    runs += [run("random_bilm", s, r, "time_limit" if s == 0 else "max_epochs") for s, r in enumerate((59, 63, 61))]
    runs += [run("elmo", s, r) for s, r in enumerate((80, 82, 81))]
    (row,) = table_rows(runs, ["sentiment_sst5"])
    test = row["significance"]["elmo_vs_baseline"]
    assert test["delta"] == pytest.approx(20.0) and test["test"] == "welch_t_over_seeds"
    assert test["t"] == pytest.approx(20.0 / math.sqrt(2 / 3)) and test["df"] == pytest.approx(4.0)
    assert test["p_two_sided"] < 1e-4  # 20 points apart, seed std 1
    assert test["p_one_sided_over_examples"] < 0.01 and test["ci_low"] > 0 and test["draws"] == 10_000
    assert row["goal"]["met"] and row["goal"]["baseline"]["lead"] == pytest.approx(20.0)
    assert row["goal"]["random_bilm"]["margin"] == pytest.approx(2.0)  # the larger std: the control's 59, 63, 61
    assert row["random_bilm"]["time_limited"] == 1 and row["baseline"]["time_limited"] == 0
    text = markdown_table([row], "t", "", meaningful=True, pretrain=None)
    line = next(line for line in text.splitlines() if line.startswith("| sentiment_sst5 |"))
    p_base, p_random = (row["significance"][f"elmo_vs_{o}"]["p_two_sided"] for o in ("baseline", "random_bilm"))
    assert "61.00 ± 2.00 †" in line and line.rstrip(" |").endswith(f"{format_p(p_base)} | {format_p(p_random)}")
    assert "e-" in format_p(p_base) and p_base < p_random < 0.01  # the control's seeds vary more
    assert (
        f"- sentiment_sst5: met: +20.00 over baseline (std 1.00, p {format_p(p_base)}); "
        f"+20.00 over random biLM (std 2.00, p {format_p(p_random)})" in text
    )

    # a weak +ELMo: ahead on average, but within the seed noise, and the bootstrap says so
    # (right on other examples than the baseline, so that the pairs disagree both ways)
    weak = [r for r in runs if r["arm"] != "elmo"] + [run("elmo", s, r, offset=40) for s, r in enumerate((60, 64, 62))]
    (row,) = table_rows(weak, ["sentiment_sst5"])
    test = row["significance"]["elmo_vs_baseline"]
    assert not row["goal"]["met"] and test["p_two_sided"] > 0.2 and test["p_one_sided_over_examples"] > 0.2


def test_the_goal_needs_a_two_sided_p_below_005_as_well_as_a_lead_beyond_the_std():
    def record(arm, seed, score):
        return _record("sentiment_sst5", arm, seed, score / 100)

    # a lead of 1.05 over a larger std of 0.35, but only 2 seeds per arm: Welch's p is 0.08
    runs = [record("baseline", s, v) for s, v in enumerate((9.0, 9.4))]
    runs += [record("random_bilm", s, v) for s, v in enumerate((5.0, 5.1))]
    runs += [record("elmo", s, v) for s, v in enumerate((10.0, 10.5))]
    (row,) = table_rows(runs, ["sentiment_sst5"])
    goal = row["goal"]
    assert goal["baseline"]["lead"] > goal["baseline"]["margin"]
    assert 0.05 < goal["baseline"]["p_two_sided"] < 0.15 and not goal["baseline"]["met"]
    assert goal["random_bilm"]["p_two_sided"] < 0.05 and goal["random_bilm"]["met"]
    assert not goal["met"]
    assert "p_one_sided_over_examples" not in row["significance"]["elmo_vs_baseline"]  # no predictions files
    # one seed: no test, and no goal met
    (row,) = table_rows([r for r in runs if r["seed"] == 0], ["sentiment_sst5"])
    assert row["significance"]["elmo_vs_baseline"]["p_two_sided"] is None and not row["goal"]["met"]
    assert "| — | — |" in markdown_table([row], "t", "", meaningful=True, pretrain=None)


def test_p_values_are_printed_no_finer_than_their_draws():
    assert format_p(0.0, draws=10_000) == "< 1e-04"
    assert format_p(0.0104, draws=10_000) == "0.010"
    assert format_p(0.02, draws=50) == "0.02"  # 50 draws: steps of 0.02
    assert format_p(0.0, draws=50) == "< 2e-02"
    assert format_p(0.44) == "0.440" and format_p(0.000733) == "7.3e-04" and format_p(None) == "—"


def test_run_score_needs_a_test_result():
    with pytest.raises(ValueError, match="ner_conll2003 elmo seed 0 has no test score"):
        run_score({"task": "ner_conll2003", "arm": "elmo", "seed": 0, "test": {}})


# ---- end to end: interrupt after the first task, resume ------------------------------------------------------
def _fixture_preset(tmp_path: Path) -> Path:
    preset = {
        "name": "fixture",
        "description": "test preset",
        "meaningful": False,
        "data_root": "tests/fixtures/tasks",
        "seeds": 1,
        "jobs": 1,
        "threads": 1,
        "output_dir": str(tmp_path / "results"),
        "work_dir": str(tmp_path / "work"),
        "pretrain": {
            "config": "configs/pretrain/tiny.yaml",
            "set": {
                "model.bilm.filters": [[1, 8], [2, 8]],
                "model.bilm.projection_dim": 8,
                "model.bilm.cell_dim": 16,
                "model.bilm.num_samples": 32,
                "data.vocab_max_size": 500,
                "trainer.max_steps": 6,
                "trainer.val_check_interval": 3,
                "trainer.limit_val_batches": 2,
                "trainer.limit_test_batches": 2,
            },
        },
        "tasks": [
            {
                "name": "ner_conll2003",
                "config": "configs/finetune/ner_conll2003.yaml",
                "set": {
                    "trainer.max_epochs": 2,
                    "model.head.init_args.hidden_size": 16,
                    "model.char_filters": 8,
                    "model.word_vectors": "none",  # the tests do not need the [glove] extra
                },
            },
            {
                "name": "sentiment_sst5",
                "config": "configs/finetune/sentiment_sst5.yaml",
                "set": {
                    "trainer.max_epochs": 2,
                    "data.train_subtrees": False,
                    "model.char_filters": 8,
                    "model.word_vectors": "none",
                    "model.head.init_args": {
                        "pre_encode_dim": 8,
                        "hidden_size": 8,
                        "integrator_size": 8,
                        "output_hidden": 8,
                        "dropout": 0.0,
                    },
                },
            },
        ],
    }
    path = tmp_path / "fixture.yaml"
    path.write_text(yaml.safe_dump(preset))
    return path


def _ctrl_c_works() -> None:
    """In the child: SIGINT raises KeyboardInterrupt even when the test runs in the background (where it is ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(command: list[str], env: dict[str, str]) -> subprocess.Popen:
    """A reproduction in its own process group (Ctrl-C reaches it and its children), output captured."""
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        preexec_fn=_ctrl_c_works,
    )


def _finished(work: Path, task: str) -> list[Path]:
    return sorted(p.parent for p in (work / task).glob("*/seed*/fingerprint"))


def test_reproduce_resumes_after_an_interrupt_without_redoing_runs(tmp_path):
    preset = _fixture_preset(tmp_path)
    work, results = tmp_path / "work", tmp_path / "results"
    command = [sys.executable, "-m", "elmo_pipeline.cli", "reproduce", "--preset", str(preset), "--no-wandb"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    first = _start(command, env)
    deadline = time.monotonic() + 600
    # interrupt once the first run has finished: five more runs are left, so the interrupt lands mid-way
    while not _finished(work, "ner_conll2003") and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    running = first.poll() is None
    os.killpg(first.pid, signal.SIGINT)  # Ctrl-C, as a user would: the whole process group
    output = first.communicate(timeout=120)[0].decode()
    assert first.returncode == 130, f"running when interrupted: {running}\n{output}"
    assert "Run the same command again to resume" in output
    done_first = _finished(work, "ner_conll2003")
    assert 1 <= len(done_first) <= 3
    assert len(_finished(work, "sentiment_sst5")) < 3, "the interrupt came too late to test resuming"
    done_sst = _finished(work, "sentiment_sst5")
    kept = {p: (p / "results.json").stat().st_mtime_ns for p in done_first}
    pretrain_results = (work / "pretrain" / "results.json").stat().st_mtime_ns

    second = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout + second.stderr
    assert second.stdout.count("finished before, kept") == len(done_first) + len(done_sst)
    assert "pretraining already done" in second.stderr
    assert {p: (p / "results.json").stat().st_mtime_ns for p in done_first} == kept  # not redone
    assert (work / "pretrain" / "results.json").stat().st_mtime_ns == pretrain_results
    assert len(_finished(work, "sentiment_sst5")) == 3

    # the table and the pictures exist and agree with results.json
    report = json.loads((results / "results.json").read_text())
    assert report["complete"] and report["runs_done"] == report["runs_planned"] == 6
    assert report["pretrain"]["test"]["ppl"] > 1
    table = (results / "table.md").read_text()
    for row in report["table"]:
        for arm in ("baseline", "random_bilm", "elmo"):
            scores = [run_score(r) for r in report["runs"] if r["task"] == row["task"] and r["arm"] == arm]
            assert row[arm]["mean"] == pytest.approx(statistics.fmean(scores))
        line = next(line for line in table.splitlines() if line.startswith(f"| {row['task']} |"))
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[5:8] == [f"{row[a]['mean']:.2f}" for a in ("baseline", "random_bilm", "elmo")]
    for picture in ("layer_weights.png", "learning_curves.png"):
        assert (results / picture).stat().st_size > 1000
        assert f"({picture})" in table
    for run in report["runs"]:  # every run recorded with the mixes of its arm, its predictions kept with the table
        assert bool(run["mix_weights"]) == (run["arm"] != "baseline")
        assert Path(run["predictions"]).parent == results / "predictions" and Path(run["predictions"]).is_file()
        assert run["stopped_by"] in ("early_stopping", "max_epochs")
    for row in report["table"]:
        assert set(row["significance"]) == {"elmo_vs_baseline", "elmo_vs_random_bilm"}
    kept = BiLMSource.parse(str(results / "bilm")).load()  # the biLM kept with the table, softmax left out
    assert kept.softmax is None and report["pretrain"]["kept"] == str(results / "bilm")
    exported = BiLMSource.parse(report["pretrain"]["export"]).load()
    for name, tensor in kept.state_dict().items():
        torch.testing.assert_close(tensor, exported.state_dict()[name])
    # one pretraining per results folder: its export, CSV log and curve beside the table, and they agree
    assert check_provenance(results) == []
    assert (results / "export" / "weights.pt").is_file() and (results / "metrics.csv").is_file()


def test_final_table_goes_to_wandb_as_a_table(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    from elmo_pipeline.reproduce.plots import plot_layer_weights
    from elmo_pipeline.reproduce.report import log_table_to_wandb
    from elmo_pipeline.reproduce.table import COLUMNS

    runs = [_record("sentiment_sst5", arm, seed, 0.4 + 0.01 * seed) for arm in ("baseline", "elmo") for seed in (0, 1)]
    for run in runs:
        run["mix_weights"] = {"input": {"softmax_w": [0.2, 0.3, 0.5], "gamma": 1.0}} if run["arm"] == "elmo" else {}
    rows = table_rows(runs, ["sentiment_sst5"])
    picture = plot_layer_weights(runs, tmp_path / "layer_weights.png")
    log_table_to_wandb({"project": "p", "group": "reproduce-t", "save_dir": str(tmp_path)}, rows, [picture], {})
    (table_file,) = tmp_path.glob("wandb/offline-run-*/files/media/table/results_table_*.table.json")
    table = json.loads(table_file.read_text())
    assert table["columns"] == COLUMNS
    assert table["data"][0][:2] == ["sentiment_sst5", "test accuracy"]
    assert table["data"][0][5] == "40.50 ± 0.71"
    assert list(tmp_path.glob("wandb/offline-run-*/files/media/images/pictures/layer_weights_*.png"))


def test_a_task_without_dev_curves_gets_a_labelled_empty_panel(tmp_path):
    """A report rebuilt without the run folders: the panel says so instead of drawing an empty legend."""
    import warnings

    from elmo_pipeline.reproduce.plots import plot_learning_curves

    runs = [_record("sentiment_sst5", "baseline", 0, 0.4)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warns when legend() finds no labelled line
        path = plot_learning_curves(runs, [tmp_path / "missing"], ["sentiment_sst5"], tmp_path / "curves.png", None)
    assert path == tmp_path / "curves.png" and path.stat().st_size > 0


SUMMARY = {
    "description": "a moved folder",
    "meaningful": True,
    "wall_seconds": 600.0,
    "runs_done": 6,
    "runs_planned": 6,
    "machine": {"cpu": "some CPU", "cpus": 2, "cuda": None},
    "wandb_group": "g",
}


def test_refresh_of_a_moved_folder_reads_its_own_predictions(tmp_path):
    """results/cpu_1h moved to results/cpu_1h_<date>: the recorded paths now hold the next table's files."""
    from elmo_pipeline.data.predictions import archive, write_predictions
    from elmo_pipeline.reproduce.report import refresh_report

    gold = ["a"] * 50 + ["b"] * 50

    def predictions(name, right, offset=0):
        correct = {(offset + i) % 100 for i in range(right)}
        predicted = [g if i in correct else ("a" if g == "b" else "b") for i, g in enumerate(gold)]
        return write_predictions(tmp_path / name, "test", "classification", [[["w"]]] * 100, gold, predicted)

    old, moved = tmp_path / "cpu_1h" / "predictions", tmp_path / "cpu_1h_moved" / "predictions"
    old.mkdir(parents=True)
    moved.mkdir(parents=True)
    runs = []
    for arm, scores in (("baseline", (60, 62, 61)), ("elmo", (80, 82, 81))):
        for seed, right in enumerate(scores):
            name = f"sentiment_sst5-{arm}-seed{seed}.txt"
            archive(predictions(f"{arm}{seed}", right), moved / name)  # this table's own copy
            other = predictions(f"next-{arm}{seed}", 60, offset=40 if arm == "elmo" else 0)
            recorded = archive(other, old / name)  # the next table's file, now at the recorded path
            runs.append({**_record("sentiment_sst5", arm, seed, right / 100), "predictions": str(recorded)})
    row = {"task": "sentiment_sst5"}
    results = {"preset": "p", "pretrain": None, "table": [row], "runs": runs, **SUMMARY}
    (moved.parent / "results.json").write_text(json.dumps(results))
    (row,) = refresh_report(moved.parent)["rows"]
    assert row["significance"]["elmo_vs_baseline"]["p_one_sided_over_examples"] < 0.01  # 20 points apart, per example


def test_layer_weights_picture_draws_the_arm_the_table_chose():
    """With both +ELMo arms run, the picture shows the dev-chosen arm over all its seeds, not seed 0 of the other."""
    from elmo_pipeline.reproduce.plots import mix_groups

    def run(arm, seed, dev, w):
        record = _record("ner_conll2003", arm, seed, 0.9, "f1")
        return {**record, "best_val": dev, "mix_weights": {"input": {"softmax_w": w, "gamma": 0.9}}}

    runs = [run("baseline", 0, 0.90, None), run("elmo", 0, 0.91, [0.6, 0.2, 0.2])]
    runs += [run("elmo_task", s, 0.92, [0.2, 0.5, 0.3]) for s in range(3)]
    runs[0].pop("mix_weights")
    groups = mix_groups(runs)
    assert list(groups) == ["ner_conll2003\n(input, tuned)"]
    assert [m["end"]["softmax_w"] for m in groups["ner_conll2003\n(input, tuned)"]] == [[0.2, 0.5, 0.3]] * 3
    runs[1]["best_val"] = 0.95  # the general biLM wins on dev: its one seed is drawn
    assert [m["end"]["softmax_w"] for m in mix_groups(runs)["ner_conll2003\n(input)"]] == [[0.6, 0.2, 0.2]]


def test_dev_curve_leaves_out_the_revalidation_after_the_fit(tmp_path):
    """Lightning logs the best checkpoint's validation after the fit with epoch = epochs trained."""
    from elmo_pipeline.reproduce.plots import dev_curve

    csv = tmp_path / "metrics.csv"
    csv.write_text(
        "epoch,step,test/acc,train/loss,val/acc\n"
        "0,9,,1.5,\n0,9,,,0.30\n1,19,,1.2,\n1,19,,,0.45\n2,29,,1.1,\n2,29,,,0.40\n"
        "3,30,,,0.45\n3,30,0.44,,\n"  # after a 3-epoch fit: the best checkpoint's dev, then test
    )
    assert dev_curve(csv, "val/acc", 3) == [(0, 0.30), (1, 0.45), (2, 0.40)]
    assert dev_curve(csv, "val/acc", None)[-1] == (3, 0.45)  # without the record's epochs: every row


@pytest.mark.parametrize("kill", ["ctrl-c", "kill-9-parent"])
def test_interrupted_pretraining_resumes_from_its_last_checkpoint(tmp_path, kill):
    """Ctrl-C of the process group, or kill -9 of the parent alone (its children die with it)."""
    preset = yaml.safe_load(_fixture_preset(tmp_path).read_text())
    preset["pretrain"]["set"].update(
        {
            "trainer.max_steps": 200,
            "trainer.val_check_interval": 50,
            "trainer.callbacks.1.init_args.every_n_train_steps": 5,
        }
    )
    preset["tasks"] = preset["tasks"][:1]
    preset["arms"] = ["elmo"]
    path = tmp_path / "fixture.yaml"
    path.write_text(yaml.safe_dump(preset))
    work = tmp_path / "work" / "pretrain"
    command = [sys.executable, "-m", "elmo_pipeline.cli", "reproduce", "--preset", str(path), "--no-wandb"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    first = _start(command, env)
    deadline = time.monotonic() + 300
    while not (work / "checkpoints" / "last.ckpt").is_file() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    if kill == "ctrl-c":
        os.killpg(first.pid, signal.SIGINT)
        output = first.communicate(timeout=120)[0].decode()
        assert first.returncode == 130, output
    else:
        first.kill()
        first.communicate(timeout=120)
        deadline = time.monotonic() + 30  # the child follows its parent (SIGKILL from the kernel)
        while _folder_locked(tmp_path / "work") and time.monotonic() < deadline:
            time.sleep(0.1)
    assert not (work / "export").exists(), "the interrupt came too late to test resuming"

    second = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "resuming pretraining from" in second.stderr
    record = json.loads((work / "results.json").read_text())
    assert record["global_step"] == 200  # the budget is the run's, not each attempt's
    assert (work / "logs" / "fit-2" / "metrics.csv").is_file()  # the second attempt logs beside the first
    assert json.loads((work / "progress.json").read_text())["attempts"] == 2  # the killed attempt counted
    assert "--ckpt_path last" in (work / "log.txt").read_text()


def _folder_locked(work: Path) -> bool:
    from elmo_pipeline.reproduce.supervisor import Supervisor

    try:
        with Supervisor().locked(work):
            return False
    except SystemExit:
        return True


# ---- resuming: what counts as finished, failures, one reproduction per folder ------------------------------------
def _fake_bilm(path: Path, weights: bytes) -> str:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text("{}")
    (path / "weights.pt").write_bytes(weights)
    return str(path)


def _finish(run, score=0.5):
    """What `start` leaves behind for a finished run."""
    run.run_dir.mkdir(parents=True, exist_ok=True)
    (run.run_dir / "results.json").write_text(json.dumps(_record(run.task.name, run.arm, run.seed, score)))
    (run.run_dir / "fingerprint").write_text(run.fingerprint + "\n")
    return json.loads((run.run_dir / "results.json").read_text())


def _plan(tmp_path, bilm):
    from elmo_pipeline.reproduce.runner import bilm_identity, plan

    task = StageSpec(config="configs/finetune/sentiment_sst5.yaml", name="sentiment_sst5")
    preset = Preset(
        name="t", data_root="tests/fixtures/tasks", bilm=bilm, seeds=2, work_dir=str(tmp_path / "w"), tasks=[task]
    )
    return plan(preset, bilm, None, bilm_identity(bilm))


def test_retrained_bilm_reruns_the_biLM_arms_only(tmp_path):
    bilm = _fake_bilm(tmp_path / "export", b"weights v1")
    for run in _plan(tmp_path, bilm):
        _finish(run)
    assert all(run.finished() for run in _plan(tmp_path, bilm))
    _fake_bilm(tmp_path / "export", b"weights v2")  # same path, new weights
    again = {(run.arm, run.seed): run.finished() is not None for run in _plan(tmp_path, bilm)}
    assert again == {(arm, seed): arm == "baseline" for arm in ("baseline", "random_bilm", "elmo") for seed in (0, 1)}


def test_execute_runs_what_is_left_and_reports_every_failure(tmp_path):
    from elmo_pipeline.reproduce.runner import RunsFailed, execute

    runs = _plan(tmp_path, _fake_bilm(tmp_path / "export", b"w"))
    _finish(runs[0])
    started, reported = [], []

    def starter(run, threads, env):
        started.append(run.label)
        if run.arm == "elmo":
            raise RuntimeError(f"{run.label} broke")
        return _finish(run)

    with pytest.raises(RunsFailed) as failed:
        execute(runs, 2, 1, on_done=lambda run, record, reused: reported.append((run.label, reused)), starter=starter)
    assert set(failed.value.failures) == {"sentiment_sst5 elmo seed 0"}  # no new runs after the first failure
    assert runs[0].label not in started and (runs[0].label, True) in reported
    results = execute(runs, 2, 1, starter=starter, selected={i for i, r in enumerate(runs) if r.arm != "elmo"})
    assert sorted(results) == [i for i, r in enumerate(runs) if r.arm != "elmo"]


def test_one_reproduction_per_work_folder(tmp_path):
    import fcntl

    from elmo_pipeline.reproduce import reproduce

    preset = Preset(name="t", bilm="b", work_dir=str(tmp_path))
    with open(tmp_path / "reproduce.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(SystemExit, match="another reproduce is running in"):
            reproduce(preset, wandb_enabled=False)


def test_a_pretraining_run_of_another_config_is_never_deleted(tmp_path):
    from elmo_pipeline.reproduce.runner import pretrain

    preset = Preset.load(str(_fixture_preset(tmp_path)))
    run_dir = Path(preset.work_dir) / "pretrain"
    run_dir.mkdir(parents=True)
    (run_dir / "fingerprint").write_text("0123456789abcdef\n")
    (run_dir / "precious.ckpt").write_text("days of GPU time")
    with pytest.raises(RuntimeError, match="Nothing was deleted"):
        pretrain(preset, None)
    assert (run_dir / "precious.ckpt").is_file()


def test_hub_data_with_local_split_files_is_refused_before_anything_runs():
    from elmo_pipeline.commands.reproduce import main

    with pytest.raises(SystemExit, match="nli_snli read local files"):
        main(["--preset", "cpu_1h", "--data-root", "hub", "--dry-run"])


def test_bilm_identity_reads_every_published_form(tmp_path):
    from elmo_pipeline.reproduce.runner import bilm_identity

    (tmp_path / "options.json").write_text("{}")
    (tmp_path / "weights.hdf5").write_bytes(b"h5")
    pair = f"{tmp_path / 'options.json'},{tmp_path / 'weights.hdf5'}"
    assert bilm_identity(pair) == bilm_identity(str(tmp_path)) == bilm_identity(f"random:{pair}")
    (tmp_path / "weights.hdf5").write_bytes(b"h5, retrained")
    assert bilm_identity(pair) != bilm_identity(f"{tmp_path / 'options.json'},{tmp_path / 'options.json'}")
    with pytest.raises(FileNotFoundError, match="no biLM at"):
        bilm_identity(str(tmp_path / "missing"))


def test_refresh_report_recomputes_the_tests_of_an_old_results_folder(tmp_path, capsys):
    from elmo_pipeline.commands.reproduce import main

    runs = [_record("sentiment_sst5", "baseline", s, v) for s, v in enumerate((0.40, 0.41, 0.42))]
    runs += [_record("sentiment_sst5", "random_bilm", s, v) for s, v in enumerate((0.37, 0.38, 0.36))]
    runs += [_record("sentiment_sst5", "elmo", s, v) for s, v in enumerate((0.45, 0.46, 0.44))]
    old_row = {"task": "sentiment_sst5", "significance": {"elmo_vs_baseline": {"p_value": 0.03, "samples": 10_000}}}
    summary = {
        "preset": "old",
        "description": "an old folder",
        "meaningful": True,
        "wall_seconds": 600.0,
        "runs_done": 9,
        "runs_planned": 9,
        "machine": {"cpu": "some CPU", "cpus": 2, "cuda": None},
        "wandb_group": "g",
    }
    folder = tmp_path / "old"
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps({**summary, "pretrain": None, "table": [old_row], "runs": runs}))
    assert main(["--refresh-report", str(folder)]) == 0
    assert not (folder / "learning_curves.png").exists()  # no run folder to draw from: no picture
    results = json.loads((folder / "results.json").read_text())
    assert results["runs"] == runs and results["preset"] == "old"  # the records are kept as they were
    (row,) = results["table"]
    test = row["significance"]["elmo_vs_baseline"]
    assert "p_value" not in test and test["p_two_sided"] == pytest.approx(
        welch_t_test([45.0, 46.0, 44.0], [40.0, 41.0, 42.0])["p_two_sided"]
    )
    assert row["goal"]["met"]
    table = (folder / "table.md").read_text()
    assert f"| {format_p(test['p_two_sided'])} |" in table and "Wall time 10.0 min on some CPU" in table
    for record in runs:  # the run folders found again: the learning curves are redrawn
        run_dir = tmp_path / "work" / record["arm"] / f"seed{record['seed']}"
        (run_dir / "logs").mkdir(parents=True)
        (run_dir / "logs" / "metrics.csv").write_text("epoch,step,val/acc\n0,9,0.3\n1,19,0.4\n")
        record.update(run_dir=str(run_dir), epochs=2)
    (folder / "results.json").write_text(json.dumps({**results, "runs": runs}))
    assert main(["--refresh-report", str(folder)]) == 0
    assert (folder / "learning_curves.png").stat().st_size > 0
    assert main(["--refresh-report", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "missing/results.json not found" in err
