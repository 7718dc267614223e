"""Structured log records kept in memory for ``GET /api/v1/system/logs``.

A :class:`logging.Handler` on the ``llama_gpu`` logger keeps the newest records of this
process in a bounded ring; each record has its time, level, component (the module that
logged it, without the package prefix), message and metadata (the ``extra`` fields a
caller passed, and the exception text).
"""

from __future__ import annotations

import collections
import logging
import threading
from typing import Any

from ...kernel.types import utc_iso

#: Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def component_of(logger_name: str) -> str:
    """``llama_gpu.kernel.registry`` → ``kernel.registry``; other loggers keep their name."""
    return logger_name.removeprefix("llama_gpu.") if logger_name != "llama_gpu" else "llama_gpu"


class LogBuffer(logging.Handler):
    """Keeps the last ``capacity`` records as dicts."""

    def __init__(self, capacity: int = 5000, level: int = logging.DEBUG) -> None:
        super().__init__(level)
        self._records: collections.deque[dict[str, Any]] = collections.deque(maxlen=capacity)
        self._guard = threading.Lock()

    def resize(self, capacity: int) -> None:
        """Keep at most ``capacity`` records from now on (the newest stay)."""
        with self._guard:
            if capacity != self._records.maxlen:
                self._records = collections.deque(self._records, maxlen=capacity)

    def emit(self, record: logging.LogRecord) -> None:
        """Store ``record`` (never raises)."""
        try:
            metadata = {k: _plain(v) for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}
            if record.exc_info and record.exc_info[0] is not None:
                metadata["exception"] = logging.Formatter().formatException(record.exc_info)
            entry = {
                "timestamp": utc_iso(record.created),
                "created": record.created,
                "level": record.levelname,
                "levelno": record.levelno,
                "component": component_of(record.name),
                "logger": record.name,
                "message": record.getMessage(),
                "metadata": metadata,
            }
        except Exception:  # noqa: BLE001 - a bad log call must not break the caller
            self.handleError(record)
            return
        with self._guard:
            self._records.append(entry)

    def query(
        self, level: str = "DEBUG", limit: int = 100, since: float | None = None, component: str | None = None
    ) -> list[dict[str, Any]]:
        """The newest ``limit`` records at ``level`` or above (after ``since``, epoch seconds), oldest first.

        ``component`` keeps the records of that component and its sub-components.
        """
        threshold = logging.getLevelName(level.upper())
        with self._guard:
            records = list(self._records)
        chosen = [
            r
            for r in records
            if r["levelno"] >= threshold
            and (since is None or int(r["created"] * 1000) > int(since * 1000))  # as precise as the timestamps
            and (component is None or r["component"] == component or r["component"].startswith(component + "."))
        ]
        return [{k: v for k, v in r.items() if k not in ("created", "levelno")} for r in chosen[-limit:]]


def _plain(value: Any) -> Any:
    """A JSON-friendly copy of a metadata value."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return repr(value)
