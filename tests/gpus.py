"""What this machine's NVIDIA driver reports, read independently of the code under test.

Tests compare the server's GPU figures with these, so the suite holds on a CPU machine (no driver: no GPUs) and on a
GPU machine alike. ``nvidia_smi()`` reads the driver's own tool, for the ``gpu``-marked tests that check the server
against it.
"""

from __future__ import annotations

import shutil
import subprocess
from typing import Any


def nvml_gpu_count() -> int:
    """How many GPUs NVML sees here: 0 without the library, a driver or a device."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # no driver (pynvml.NVMLError) or no library
        return 0
    try:
        return int(pynvml.nvmlDeviceGetCount())
    finally:
        pynvml.nvmlShutdown()


def nvidia_smi() -> list[dict[str, Any]]:
    """One row per GPU from ``nvidia-smi`` (index, name, uuid, memory in MiB); empty where it is not installed."""
    tool = shutil.which("nvidia-smi")
    if tool is None:
        return []
    out = subprocess.run(
        [tool, "--query-gpu=index,name,uuid,memory.total", "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    rows = []
    for line in out.strip().splitlines():
        index, name, uuid, total = (part.strip() for part in line.split(","))
        rows.append({"index": int(index), "name": name, "uuid": uuid, "memory_total_mib": int(total)})
    return rows
