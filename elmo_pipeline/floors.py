"""The floors of the package, bottom to top: each place imports only from the floors below it.

This table is the one statement of the rule. ``tests/test_layering.py`` reads it and fails on an
import (at module level or inside a function) that climbs to a higher floor, on an import between
two places of one floor, and on a module that no floor names; ``docs/architecture.md`` draws it, and
the same test checks that drawing against this table.

A *place* is a folder of the package (``models/``: every file and subfolder in it) or a module at
its top (``embed.py``). Imports inside one place are free. Two places share a floor only when
neither imports the other; when one must, it goes a floor higher.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Floor:
    """One floor: its places, and why they stand there."""

    places: tuple[str, ...]
    reason: str


# bottom (floor 0) to top: FLOORS[n] is floor n
FLOORS: tuple[Floor, ...] = (
    Floor(
        ("__init__.py", "errors.py", "floors.py", "machine.py", "tasks.py"),
        "the ground: imports nothing of the package (the version, user errors, this table, the machine, task specs)",
    ),
    Floor(("files.py", "text/", "metrics/"), "plain helpers over errors only: safe writes, character ids, scores"),
    Floor(("modules/",), "plain nn.Modules, one concept per file, no Lightning"),
    Floor(
        ("models/",),
        "composed nn.Modules and their files: the biLM, its config, the export folder, the published "
        "format, BiLMSource (the one loader)",
    ),
    Floor(
        ("data/", "interop/"), "what feeds the models (readers, DataModules, the cache); the published format's face"
    ),
    Floor(
        ("systems/", "embed.py", "bench.py"),
        "training (LightningModules, their LightningCLI wiring, loading a translator); a model run with no "
        "system: embed_file, bench",
    ),
    Floor(("analysis/", "embed_shards.py"), "commands built on the systems: the LSTM lab, sharded embed"),
    Floor(
        ("reproduce/",),
        "the results table: pretraining, every task x arm x seed, the report, over everything below",
    ),
    Floor(("commands/",), "every command's entry, one module each: its options, then one call into the floors below"),
    Floor(("cli.py",), "`elmo-pipeline <command>`: every command by name (import_module), one-line errors"),
)


def floor_of(place: str) -> int:
    """The floor of a place (``"models/"``, ``"cli.py"``).

    Raises:
        KeyError: the place is on no floor.
    """
    for number, floor in enumerate(FLOORS):
        if place in floor.places:
            return number
    raise KeyError(f"{place} is on no floor of elmo_pipeline/floors.py")
