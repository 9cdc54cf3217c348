"""benchmarks/gpu_check.sh, the prepared GPU check: valid bash, and a clear refusal on a machine without a CUDA GPU."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"
BASH = shutil.which("bash")

pytestmark = pytest.mark.skipif(BASH is None, reason="bash is not installed")


def test_script_is_valid_bash() -> None:
    proc = subprocess.run([BASH, "-n", str(SCRIPT)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU: the check would run")
def test_refuses_at_once_without_a_cuda_gpu(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run([BASH, str(SCRIPT), str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "gpu_check: no CUDA GPU" in proc.stderr and "Nothing was run" in proc.stderr
    assert proc.stdout == "" and not out.exists()  # no summary, no output folder
