"""Where a figure was measured: one description of the machine for every report, benchmark and table."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch


def cpu_name() -> str:
    """The processor's model name (``/proc/cpuinfo`` on Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """The machine as a record: platform, Python, torch, CPU model and count, GPU, torch threads."""
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": cpu_name(),
        "cpus": os.cpu_count(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "unset"),
    }


def describe_machine() -> str:
    """The machine in one line, for the header of a benchmark or a table."""
    info = machine_info()
    threads = info["threads"]
    gpu = f", {info['cuda']}" if info["cuda"] else ""
    return (
        f"{info['cpu']}, {info['cpus']} cores{gpu}, torch {info['torch']} with {threads} thread{'s' * (threads > 1)} "
        f"(OMP_NUM_THREADS={info['omp_num_threads']})"
    )
