"""Readings of the machine: CPU, memory and disk through psutil, GPUs through NVML.

NVML (the ``nvidia-ml-py`` package, module ``pynvml``) is initialised once per process,
on first use; where there is no NVIDIA driver it fails once and every later reading
reports no GPU, without trying again on every sample.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import psutil

log = logging.getLogger(__name__)


def system_reading(disk_path: str) -> dict[str, Any]:
    """CPU, memory and disk use now (percentages and bytes)."""
    memory = psutil.virtual_memory()
    try:
        disk = psutil.disk_usage(disk_path if os.path.exists(disk_path) else os.path.sep).percent
    except OSError:
        disk = None
    return {
        # since the previous call (psutil keeps the last reading): the first call of a process gives 0.0
        "cpu_usage": psutil.cpu_percent(interval=None),
        "memory_usage": memory.percent,
        "memory_used": memory.total - memory.available,
        "memory_total": memory.total,
        "disk_usage": disk,
        "process_memory": psutil.Process().memory_info().rss,
        "cpu_count": psutil.cpu_count() or 0,
    }


class GPUReader:
    """Per-GPU figures through NVML; an empty list where there is no NVIDIA GPU.

    :param nvml: The NVML module (``pynvml``); tests pass a stand-in, since no GPU is here.
    """

    def __init__(self, nvml: Any = None) -> None:
        self._nvml = nvml
        self._lock = threading.Lock()
        self._ready: bool | None = None
        self.error: str | None = None

    def _init(self) -> Any:
        with self._lock:
            if self._ready is None:
                try:
                    if self._nvml is None:
                        import pynvml

                        self._nvml = pynvml
                    self._nvml.nvmlInit()
                    self._ready = True
                except Exception as exc:  # noqa: BLE001 - no driver, no library: no GPU
                    self._ready = False
                    self.error = f"{type(exc).__name__}: {exc}"
                    log.info("no GPU figures: NVML is not available (%s)", self.error)
            return self._nvml if self._ready else None

    def close(self) -> None:
        """Shut NVML down if this reader started it."""
        with self._lock:
            if self._ready and self._nvml is not None:
                try:
                    self._nvml.nvmlShutdown()
                except Exception:
                    log.debug("nvmlShutdown failed", exc_info=True)
            self._ready = None

    def read(self) -> list[dict[str, Any]]:
        """One dict per GPU: id, name, driver and CUDA versions, memory, utilization, temperature, power."""
        nvml = self._init()
        if nvml is None:
            return []
        try:
            count = nvml.nvmlDeviceGetCount()
            driver = _text(_try(nvml.nvmlSystemGetDriverVersion))
            cuda = _try(nvml.nvmlSystemGetCudaDriverVersion)
            cuda_version = f"{cuda // 1000}.{cuda % 1000 // 10}" if isinstance(cuda, int) else None
            return [self._device(nvml, index, driver, cuda_version) for index in range(count)]
        except Exception as exc:  # noqa: BLE001 - a GPU that fails to answer must not fail the sample
            log.warning("reading GPUs through NVML failed: %s: %s", type(exc).__name__, exc)
            return []

    @staticmethod
    def _device(nvml: Any, index: int, driver: str | None, cuda: str | None) -> dict[str, Any]:
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        memory = _try(nvml.nvmlDeviceGetMemoryInfo, handle)
        rates = _try(nvml.nvmlDeviceGetUtilizationRates, handle)
        power = _try(nvml.nvmlDeviceGetPowerUsage, handle)  # milliwatts
        limit = _try(nvml.nvmlDeviceGetEnforcedPowerLimit, handle)
        total = getattr(memory, "total", None)
        used = getattr(memory, "used", None)
        return {
            "id": index,
            "name": _text(_try(nvml.nvmlDeviceGetName, handle)),
            "uuid": _text(_try(nvml.nvmlDeviceGetUUID, handle)),
            "driver_version": driver,
            "cuda_version": cuda,
            "memory_total": total,
            "memory_used": used,
            "memory_free": getattr(memory, "free", None),
            "memory_usage": round(used / total * 100, 2) if total and used is not None else None,
            "utilization": getattr(rates, "gpu", None),
            "temperature": _try(nvml.nvmlDeviceGetTemperature, handle, nvml.NVML_TEMPERATURE_GPU),
            "power_usage": round(power / 1000, 2) if isinstance(power, int | float) else None,
            "power_limit": round(limit / 1000, 2) if isinstance(limit, int | float) else None,
        }


def _try(func: Any, *args: Any) -> Any:
    """A reading, or ``None`` when this GPU or driver does not support it."""
    try:
        return func(*args)
    except Exception:  # noqa: BLE001 - NVMLError_NotSupported and the like
        return None


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):  # older bindings return bytes
        return value.decode(errors="replace")
    return value if value is None else str(value)
