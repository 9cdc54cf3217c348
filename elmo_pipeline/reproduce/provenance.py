"""One pretraining per results folder: what a reproduction keeps of its biLM, and the check that it agrees.

The output folder of a reproduction that pretrained holds, beside the table, everything of the one
pretraining the table used (:func:`keep_pretraining`):

- ``bilm/``: the biLM without its softmax in the published format (``reproduce --bilm`` takes it);
- ``export/``: the pretraining's export folder (config, weights with the softmax, vocabulary, run config);
- ``metrics.csv``: its CSV log, every attempt of a resumed run joined in step order;
- ``pretrain_curve.png``: its learning curves;
- ``provenance.json``: the pretraining run (folder, fingerprint), the identities of ``export/`` and
  ``bilm/``, and the sha256 of every kept file.

A folder kept from another pretraining is replaced as a whole, never in part. A reproduction given
``--bilm`` keeps the pretraining's files only when that biLM is the one they describe; otherwise they
go, and ``provenance.json`` names the given biLM. :func:`check_provenance` lists every disagreement.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import shutil
from pathlib import Path
from typing import Any

from elmo_pipeline.analysis.curves import plot_curves, read_metrics
from elmo_pipeline.files import file_digest, write_bytes_atomic, write_json_atomic
from elmo_pipeline.models.bilm_tf import save_bilm_tf
from elmo_pipeline.models.source import BiLMSource

log = logging.getLogger(__name__)

PROVENANCE = "provenance.json"
PRETRAINING_FILES = ("export", "metrics.csv", "pretrain_curve.png")  # besides bilm/: what one pretraining leaves


def _replace_dir(directory: Path, fill: Any) -> None:
    """Write a folder through a temporary sibling and a rename (``fill(tmp)`` writes it)."""
    tmp = directory.with_name(f".{directory.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    fill(tmp)
    shutil.rmtree(directory, ignore_errors=True)
    tmp.replace(directory)


def keep_bilm(export: str, directory: Path) -> Path:
    """The pretrained biLM, without its softmax, in the published format under ``directory`` (a few MB,
    tracked with the table), so that ``reproduce --bilm DIRECTORY`` rebuilds the table without pretraining.

    ``directory/kept_from.txt`` holds the identity of the export it was written from. A folder kept from
    another pretraining (an earlier run of the preset, tracked in git) is replaced, so that the folder
    always holds the biLM that the table next to it used; the same export is not written twice.
    """
    source = BiLMSource.parse(export)
    identity = source.identity()
    stamp = directory / "kept_from.txt"
    current = stamp.read_text().strip() if stamp.is_file() else None
    if not (directory / "weights.hdf5").is_file() or current != identity:

        def fill(tmp: Path) -> None:
            save_bilm_tf(source.load(), tmp)
            (tmp / "kept_from.txt").write_text(identity + "\n")

        if directory.exists():
            log.info("reproduce: %s held another biLM (kept from %s); replacing it", directory, current or "unknown")
        _replace_dir(directory, fill)
        log.info("reproduce: kept the biLM without its softmax in %s", directory)
    return directory


def joined_log(logs: list[Path]) -> list[dict[str, str]]:
    """The rows of a resumed run's CSV logs (one per attempt, in order) as one log in step order.

    An attempt that was cut off logged steps that the next attempt, resumed from an earlier checkpoint,
    logged again: of those, the later attempt's rows are kept.
    """
    attempts = []
    for path in logs:
        with open(path, newline="", encoding="utf-8") as f:
            attempts.append(list(csv.DictReader(f)))
    rows: list[dict[str, str]] = []
    for i, attempt in enumerate(attempts):
        later = [float(r["step"]) for a in attempts[i + 1 :] for r in a if r.get("step")]
        cut = min(later) if later else math.inf
        rows += [r for r in attempt if r.get("step") and float(r["step"]) < cut]
    return rows


def _attempt_number(path: Path) -> int:
    name = path.parent.name  # fit, fit-2, fit-3, ...
    return int(name.rsplit("-", 1)[1]) if "-" in name else 1


def _write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_bytes_atomic(path, out.getvalue().encode("utf-8"))


def _digests(output: Path) -> dict[str, str]:
    names = ["metrics.csv", "pretrain_curve.png"]
    names += [f"export/{p.name}" for p in sorted((output / "export").iterdir()) if p.is_file()]
    names += [f"bilm/{p.name}" for p in sorted((output / "bilm").iterdir()) if p.is_file()]
    return {name: file_digest(output / name) for name in names if (output / name).is_file()}


def keep_pretraining(record: dict[str, Any], run_dir: Path, output: Path) -> dict[str, Any]:
    """Keep everything of one pretraining in ``output`` (see the module); returns what ``provenance.json`` holds."""
    output.mkdir(parents=True, exist_ok=True)
    export = Path(record["export"])
    identity = BiLMSource.parse(str(export)).identity()
    kept = keep_bilm(str(export), output / "bilm")
    if not (output / "export").is_dir() or BiLMSource.parse(str(output / "export")).identity() != identity:
        _replace_dir(output / "export", lambda tmp: shutil.copytree(export, tmp))
    logs = sorted((run_dir / "logs").glob("fit*/metrics.csv"), key=_attempt_number)
    if logs:
        _write_csv(output / "metrics.csv", joined_log(logs))
        try:
            plot_curves(output / "metrics.csv", output / "pretrain_curve.png", title=f"pretraining ({run_dir})")
        except ValueError as error:  # a run too short to have logged a step: no picture, said once
            log.warning("reproduce: no pretraining curve: %s", error)
            (output / "pretrain_curve.png").unlink(missing_ok=True)
    else:
        for name in ("metrics.csv", "pretrain_curve.png"):
            (output / name).unlink(missing_ok=True)
    provenance = {
        "pretraining": {
            "run_dir": str(run_dir),
            "fingerprint": record.get("fingerprint"),
            "global_step": record.get("global_step"),
            "tokens_seen": record.get("tokens_seen"),
        },
        "bilm": str(kept),
        "export_identity": identity,
        "bilm_identity": BiLMSource.parse(str(kept)).identity(),
        "files": _digests(output),
    }
    write_json_atomic(output / PROVENANCE, provenance)
    return provenance


def keep_given_bilm(bilm: str, output: Path) -> dict[str, Any]:
    """``--bilm`` instead of a pretraining: keep the folder's pretraining files only if they describe ``bilm``."""
    output.mkdir(parents=True, exist_ok=True)
    source = BiLMSource.parse(bilm)
    identity = source.identity()
    path = output / PROVENANCE
    before = json.loads(path.read_text()) if path.is_file() else {}
    if identity in (before.get("export_identity"), before.get("bilm_identity")) and before.get("pretraining"):
        return before  # the biLM these files came from: the folder stays one pretraining's
    given = {Path(p).resolve() for p in source.paths}
    for name in (*PRETRAINING_FILES, "bilm"):
        target = output / name
        if not target.exists() or target.resolve() in given or any(target.resolve() in g.parents for g in given):
            continue  # never remove the biLM this reproduction reads
        log.info("reproduce: %s came from another biLM than --bilm %s; removed", target, bilm)
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    provenance = {"pretraining": None, "bilm": bilm, "bilm_identity": identity, "files": {}}
    write_json_atomic(path, provenance)
    return provenance


def check_provenance(output: str | Path) -> list[str]:
    """Every way in which ``output``'s pretraining files disagree with each other (empty: one pretraining)."""
    output = Path(output)
    path = output / PROVENANCE
    if not path.is_file():
        return [f"{path}: missing; the folder does not say which pretraining it holds"]
    provenance = json.loads(path.read_text())
    problems = []
    for name, digest in (provenance.get("files") or {}).items():
        if not (output / name).is_file():
            problems.append(f"{output / name}: listed in {PROVENANCE} but missing")
        elif file_digest(output / name) != digest:
            problems.append(f"{output / name}: not the file {PROVENANCE} lists (its sha256 differs)")
    if provenance.get("pretraining") is None:
        return problems + [
            f"{output / n}: a pretraining's file, but no pretraining is named"
            for n in PRETRAINING_FILES
            if (output / n).exists()
        ]
    export, bilm = output / "export", output / "bilm"
    if not export.is_dir():
        return problems + [f"{export}: missing"]
    identity = BiLMSource.parse(str(export)).identity()
    if identity != provenance.get("export_identity"):
        problems.append(f"{export}: not the export {PROVENANCE} names")
    stamp = bilm / "kept_from.txt"
    if not stamp.is_file() or stamp.read_text().strip() != identity:
        problems.append(f"{bilm}: not written from {export} (kept_from.txt differs)")
    metrics = output / "metrics.csv"
    best = (
        json.loads((export / "metrics.json").read_text()).get("best_score")
        if (export / "metrics.json").is_file()
        else None
    )
    if metrics.is_file() and best is not None:
        ppl = [row["val/ppl"] for row in read_metrics(metrics) if "val/ppl" in row]
        if not ppl or not math.isclose(min(ppl), best, rel_tol=1e-5):
            problems.append(f"{metrics}: its best val/ppl is not the export's best_score {best:.4g}: another run's log")
    results = output / "results.json"
    if results.is_file():
        pretrain = json.loads(results.read_text()).get("pretrain") or {}
        if pretrain.get("fingerprint") != provenance["pretraining"].get("fingerprint"):
            problems.append(f"{results}: its table used another pretraining than {PROVENANCE} names")
    return problems
