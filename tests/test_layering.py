"""The floors of the package: models are plain torch, and no module reaches back into its own package face.

- modules/, models/, text/ and interop/ (every file, subfolders included) import without lightning;
- no module imports from its own package's ``__init__`` (shared types live in a ``base.py``);
- the only imports inside functions are the lazy ones of command entry points (``main``) and the
  listed exceptions, each for a stated reason, never to dodge a cycle.
"""

from __future__ import annotations

import ast
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
        for path in sorted((PACKAGE / layer).rglob("*.py")):  # subfolders too (modules/heads/, ...)
            modules.append(_module_name(path))
    assert len(modules) > 8
    proc = subprocess.run([sys.executable, "-c", BLOCK_LIGHTNING, *modules], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _package_of(path: Path) -> str:
    name = _module_name(path)
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def test_no_module_imports_from_its_own_package_face():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "__init__.py":
            continue
        package = _package_of(path)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == package:
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno} imports from {package}")
    assert not offenders, offenders


# function -> why its imports are lazy (nothing here dodges an import cycle)
LAZY_IMPORTS = {
    "reproduce/report.py:log_table_to_wandb": "W&B and Lightning load only when a table is logged",
    "embed.py:_sharded_main": "embed's entry for --shard-lines; the single-file path starts without Lightning",
    "embed_shards.py:embed_sharded": "Lightning loads only for a sharded run, not for the reader or the merge",
}


def test_imports_inside_functions_are_only_lazy_entry_points():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            key = f"{path.relative_to(PACKAGE)}:{function.name}"
            if function.name == "main" or key in LAZY_IMPORTS:
                continue
            for node in ast.walk(function):
                module = node.module if isinstance(node, ast.ImportFrom) else None
                if isinstance(node, ast.Import):
                    module = node.names[0].name
                if module and module.startswith("elmo_pipeline"):
                    offenders.append(f"{key}:{node.lineno} imports {module}")
    assert not offenders, offenders
