"""Every shipped config parses, and the preset configs hold exactly the presets' sizes."""

from __future__ import annotations

import io
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import yaml

from elmo_pipeline.commands.pretrain import main as pretrain_main
from elmo_pipeline.models.config import BiLMConfig

ROOT = Path(__file__).parents[1]
PRETRAIN_CONFIGS = sorted((ROOT / "configs" / "pretrain").glob("*.yaml"))


def _resolved(*configs: Path) -> dict:
    args = ["fit"]
    for config in configs:
        args += ["--config", str(config)]
    out = io.StringIO()
    with redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        pretrain_main([*args, "--print_config"])
    assert exit_info.value.code in (0, None)
    return yaml.safe_load(out.getvalue())


@pytest.mark.parametrize("path", PRETRAIN_CONFIGS, ids=lambda p: p.name)
def test_pretrain_config_parses(path):
    config = _resolved(path)
    assert path.read_text().startswith("#"), "each config opens with a comment saying how to run it"
    assert "elmo-pipeline" in path.read_text().split("seed_everything")[0]
    BiLMConfig.from_dict(config["model"]["bilm"])  # a valid biLM


@pytest.mark.parametrize("preset", ["tiny", "small", "original"])
def test_preset_config_matches_preset(preset):
    bilm = _resolved(ROOT / "configs" / "pretrain" / f"{preset}.yaml")["model"]["bilm"]
    expected = BiLMConfig.preset(preset).to_dict()
    for key in expected.keys() - {"vocab_size"}:
        assert bilm[key] == expected[key], f"{preset}.yaml: {key} = {bilm[key]}, the preset says {expected[key]}"


def test_wandb_config_composes_with_a_preset():
    config = _resolved(ROOT / "configs" / "pretrain" / "tiny.yaml", ROOT / "configs" / "common" / "wandb.yaml")
    loggers = [logger["class_path"] for logger in config["trainer"]["logger"]]
    assert "elmo_pipeline.systems.tracking.WandbLogger" in loggers
    assert "lightning.pytorch.loggers.CSVLogger" in loggers
