"""benchmarks/sweep_pretrain.py: the candidates' configs, at equal time and at equal steps."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def load_sweep():
    spec = importlib.util.spec_from_file_location("sweep_pretrain", ROOT / "benchmarks" / "sweep_pretrain.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def base() -> dict:
    return yaml.safe_load((ROOT / "configs/pretrain/cpu_1h.yaml").read_text())


def test_equal_time_sets_the_time_budget_and_moves_every_output_folder():
    sweep = load_sweep()
    config = sweep.candidate_config(base(), "cpu1h-x", {"model.lr": 1e-3}, minutes=9.5)
    assert config["trainer"]["max_time"] == "00:00:09:30"
    assert config["model"]["lr"] == 1e-3
    assert "schedule_steps" not in config["model"]
    assert "runs/pretrain/cpu_1h" not in yaml.safe_dump(config)  # the recipe's own run is never written into
    assert config["model"]["export_dir"] == "runs/sweep/cpu1h-x/export"


def test_equal_steps_fixes_the_step_budget_and_the_decay_horizon():
    sweep = load_sweep()
    config = sweep.candidate_config(base(), "cpu1h-x", {"model.bilm.adaptive_div_value": 2.0}, minutes=9, steps=1500)
    assert "max_time" not in config["trainer"]  # the host's speed must not decide where a run stops
    assert config["trainer"]["max_steps"] == 1500
    assert config["model"]["schedule_steps"] == 1500  # the decay ends with the budget
    assert config["model"]["bilm"]["adaptive_div_value"] == 2.0


def test_every_cpu1h_candidate_overrides_keys_the_recipe_has_or_the_system_takes():
    sweep = load_sweep()
    recipe = base()
    takes = {"model.betas", "model.schedule_steps"}  # PretrainSystem arguments the recipe leaves at their default
    for name, (_, overrides) in sweep.CANDIDATES.items():
        if not name.startswith("cpu1h-"):
            continue
        for key in overrides:
            node = recipe
            *parents, last = key.split(".")
            for part in parents:
                node = node[part]
            assert last in node or key in takes, f"{name}: {key} is not in configs/pretrain/cpu_1h.yaml"


def test_a_run_without_validation_gets_a_dash_not_a_crash():
    sweep = load_sweep()
    assert sweep.ppl_text({"best_val_ppl": None, "best_step": None}) == "- (no validation)"
    assert sweep.ppl_text({"best_val_ppl": 195.66, "best_step": 11000.0}) == "**195.7** (11,000)"
