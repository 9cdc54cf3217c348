"""benchmarks/bench_bilm_overrides.py: reading its --set overrides."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_bilm_overrides", ROOT / "benchmarks/bench_bilm_overrides.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_overrides_keep_commas_inside_brackets_with_their_value():
    bench = load_bench()
    parsed = bench.parse_overrides("adaptive_div_value=2.0,adaptive_cutoffs=[4000, 20000],filters=[[1, 32], [2, 32]]")
    assert parsed == {"adaptive_div_value": 2.0, "adaptive_cutoffs": [4000, 20000], "filters": [[1, 32], [2, 32]]}


def test_an_override_without_a_value_is_refused_by_name():
    bench = load_bench()
    with pytest.raises(SystemExit, match="cell_dim"):
        bench.parse_overrides("adaptive_div_value=2.0,cell_dim")
