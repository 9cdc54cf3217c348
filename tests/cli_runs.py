"""Running ``elmo-pipeline`` in process, as the hostile-input tests do: one helper, imported by them."""

from __future__ import annotations

from elmo_pipeline import cli


def run(capsys, *argv: object) -> tuple[int, str]:
    """``elmo-pipeline ARGV`` in process: its exit status and its stderr, checked to hold no traceback."""
    code = cli.main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err, err[-3000:]
    return code, err
