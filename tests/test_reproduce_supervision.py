"""`reproduce` after kill -9: its children die with it, and a rerun never works beside a live child."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from elmo_pipeline.reproduce.supervisor import Supervisor

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal: Linux only")

# a stand-in for `reproduce`: takes the work folder's lock, starts one child through its supervisor, waits
PARENT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from elmo_pipeline.reproduce.supervisor import Supervisor

    work, follow = Path(sys.argv[1]), sys.argv[2] == "follow"
    child = (
        "import os, sys, time\\n"
        + ("from elmo_pipeline.cli import die_with_parent\\ndie_with_parent()\\n" if follow else "")
        + "open(sys.argv[1], 'w').write(str(os.getpid()))\\ntime.sleep(120)\\n"
    )
    supervisor = Supervisor(command=lambda args: [sys.executable, "-c", child, *args])
    with supervisor.locked(work):
        supervisor.run([str(work / "child.pid")], work / "log.txt", threads=1)
    """
)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")  # a zombie waiting for its reaper is dead


def _start_and_kill_parent(work: Path, follow: bool) -> int:
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(work), "follow" if follow else "stay"])
    pid_file = work / "child.pid"
    deadline = time.monotonic() + 60
    while not (pid_file.is_file() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    child = int(pid_file.read_text())
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    return child


def _wait_dead(pid: int, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not _alive(pid)


def test_children_die_with_a_killed_parent(tmp_path):
    child = _start_and_kill_parent(tmp_path, follow=True)
    assert _wait_dead(child), "the child outlived its kill -9'd parent"
    with Supervisor().locked(tmp_path):  # and the folder is free again
        pass


def test_a_rerun_is_refused_while_a_child_lives(tmp_path):
    child = _start_and_kill_parent(tmp_path, follow=False)  # a child that does not follow its parent
    try:
        assert _alive(child)
        with pytest.raises(SystemExit, match="another reproduce is running"):
            with Supervisor().locked(tmp_path):
                pass
    finally:
        os.kill(child, signal.SIGKILL)
    assert _wait_dead(child)
    with Supervisor().locked(tmp_path):
        pass


def test_an_unfinished_runs_logs_are_kept_before_it_restarts(tmp_path):
    from elmo_pipeline.reproduce.runner import keep_logs

    run_dir = tmp_path / "sentiment_sst5" / "elmo" / "seed0"
    for attempt in (1, 2):
        (run_dir / "logs" / "csv").mkdir(parents=True)
        (run_dir / "log.txt").write_text(f"attempt {attempt}\n")
        (run_dir / "logs" / "csv" / "metrics.csv").write_text(f"step,loss\n{attempt},0.5\n")
        kept = keep_logs(run_dir)
        assert kept == run_dir.parent / ".attempts" / f"seed0-{attempt}"
        assert (kept / "log.txt").read_text() == f"attempt {attempt}\n"
        assert (kept / "logs" / "csv" / "metrics.csv").read_text().endswith(f"{attempt},0.5\n")
        assert not (run_dir / "log.txt").exists()


def test_a_pretraining_killed_before_its_first_last_ckpt_starts_again(tmp_path):
    """Checkpoints but no last.ckpt (killed between two saves): the rerun starts over in its own folder."""
    import yaml

    from elmo_pipeline.reproduce.preset import Preset
    from elmo_pipeline.reproduce.runner import pretrain
    from elmo_pipeline.reproduce.supervisor import RunFailed

    preset_file = tmp_path / "p.yaml"
    preset_file.write_text(
        yaml.safe_dump(
            {
                "name": "t",
                "work_dir": str(tmp_path / "work"),
                "pretrain": {"config": "configs/pretrain/tiny.yaml", "set": {}},
                "tasks": [],
            }
        )
    )
    preset = Preset.load(str(preset_file))
    calls = []

    class Recording(Supervisor):
        def run(self, args, log_path, threads, heartbeat=None, every=60.0, env_extra=None):
            calls.append(args)
            raise RunFailed("stopped by the test")

    with pytest.raises(RunFailed):
        pretrain(preset, None, Recording())  # the first attempt: a fresh start
    checkpoints = tmp_path / "work" / "pretrain" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "best-step000100.ckpt").write_bytes(b"a best checkpoint, but no last.ckpt yet")
    with pytest.raises(RunFailed):
        pretrain(preset, None, Recording())
    assert "--model.overwrite" not in calls[0] and "--ckpt_path" not in calls[0]
    assert calls[1][-2:] == ["--model.overwrite", "true"]
