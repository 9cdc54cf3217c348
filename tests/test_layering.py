"""Models are plain torch: modules/, models/ and text/ import without lightning."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "elmo_pipeline"

BLOCK_LIGHTNING = """
import importlib, importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('lightning', 'pytorch_lightning'):
            raise ImportError('lightning is blocked: ' + name)
sys.meta_path.insert(0, Block())
for module in sys.argv[1:]:
    importlib.import_module(module)
"""


def test_model_layers_import_without_lightning():
    modules = []
    for layer in ("text", "modules", "models", "interop"):
        for path in sorted((PACKAGE / layer).glob("*.py")):
            name = path.stem
            modules.append(f"elmo_pipeline.{layer}" if name == "__init__" else f"elmo_pipeline.{layer}.{name}")
    assert len(modules) > 8
    proc = subprocess.run([sys.executable, "-c", BLOCK_LIGHTNING, *modules], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
