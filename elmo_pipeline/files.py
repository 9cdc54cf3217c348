"""Small file helpers shared by the commands."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_json_atomic(path: str | Path, record: Any) -> None:
    """Write ``record`` as JSON so that ``path``, once it exists, is complete (a temporary file, then a rename).

    ``reproduce`` treats a run's ``results.json`` as the proof that the run finished, so a crash in the
    middle of a write must never leave a partial file under that name.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
