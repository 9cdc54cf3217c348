"""The floors of the package: models are plain torch, and no module reaches back into its own package face.

- every import (at module level or inside a function) goes down the floors of ``elmo_pipeline/floors.py``,
  every module stands on a floor, and ``docs/architecture.md`` draws the same floors;
- modules/, models/, text/ and interop/ (every file, subfolders included) import without lightning;
- no module imports from its own package's ``__init__`` (shared types live in a ``base.py``);
- the only imports inside functions are the lazy ones of command entry points (``main``) and the
  listed exceptions, each for a stated reason, never to dodge a cycle.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

from elmo_pipeline.floors import FLOORS, floor_of

PACKAGE = Path(__file__).parents[1] / "elmo_pipeline"
ARCHITECTURE = Path(__file__).parents[1] / "docs" / "architecture.md"

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


def _place(module: str) -> str:
    """The floor table's place of a module: ``elmo_pipeline.models.bilm`` -> ``models/``."""
    parts = module.split(".")
    if len(parts) == 1:
        return "__init__.py"
    return f"{parts[1]}/" if (PACKAGE / parts[1]).is_dir() else f"{parts[1]}.py"


def _imported_modules(path: Path) -> list[tuple[int, str]]:
    """Every package module that ``path`` imports, at module level or inside a function, with its line."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # relative: resolve against the importing module's package
                base = _package_of(path).split(".")[: len(_package_of(path).split(".")) - node.level + 1]
                module = ".".join([*base, module] if module else base)
            if module == "elmo_pipeline":  # from elmo_pipeline import cli: the names are modules
                found += [(node.lineno, f"elmo_pipeline.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, module))
    return [(line, name) for line, name in found if name.split(".")[0] == "elmo_pipeline"]


def test_every_module_stands_on_a_floor():
    places = {_place(_module_name(path)) for path in PACKAGE.rglob("*.py")}
    listed = [place for floor in FLOORS for place in floor.places]
    assert len(listed) == len(set(listed)), "a place is on two floors of elmo_pipeline/floors.py"
    assert sorted(places - set(listed)) == [], "modules on no floor of elmo_pipeline/floors.py"
    assert sorted(set(listed) - places) == [], "floors.py names places that do not exist"


def test_imports_go_down_the_floors():
    """No import climbs a floor, and two places of one floor do not import each other."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        importer = _place(_module_name(path))
        for line, module in _imported_modules(path):
            imported = _place(module)
            if imported == importer or floor_of(imported) < floor_of(importer):
                continue
            where = f"{path.relative_to(PACKAGE)}:{line}"
            offenders.append(
                f"{where} imports {module}: {importer} is on floor {floor_of(importer)}, "
                f"{imported} on floor {floor_of(imported)}"
            )
    assert not offenders, offenders


def _drawn_floors() -> dict[str, int]:
    """The floor of each place in the floor block of docs/architecture.md (``floor 3  models/  ...``)."""
    drawn, floor = {}, None
    for line in ARCHITECTURE.read_text().splitlines():
        match = re.match(r"floor (\d+)  ", line)
        if match:
            floor = int(match.group(1))
        elif floor is None or not line.startswith(" " * 9) or line[9:10] in (" ", ""):
            if line.startswith("```") and floor is not None:
                break
            continue
        for place in line[9:].split("  ")[0].split(", "):
            drawn[place.strip()] = floor
    return drawn


def test_the_docs_draw_the_floor_table():
    table = {place: number for number, floor in enumerate(FLOORS) for place in floor.places}
    assert _drawn_floors() == table
