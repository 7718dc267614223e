"""Persistence: SQLAlchemy models, the database handle, and Alembic migrations (``llama_gpu/migrations``).

The package is import-light: :data:`DATABASE` (the key the ``persistence`` plugin shares the
database under) is defined here; the models and :class:`Database` load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ..kernel.services import ServiceKey

if TYPE_CHECKING:
    from .models import (
        ApiKey,
        AuditEvent,
        Base,
        BenchmarkRun,
        Job,
        MetricSample,
        ModelConfig,
        PluginState,
        RequestLog,
        RevokedToken,
        User,
    )
    from .session import Database

#: The database, shared by the ``persistence`` plugin.
DATABASE: ServiceKey[Database] = ServiceKey("db", plugin="persistence")

_LAZY = {
    "ApiKey": "models",
    "AuditEvent": "models",
    "Base": "models",
    "BenchmarkRun": "models",
    "Job": "models",
    "MetricSample": "models",
    "ModelConfig": "models",
    "PluginState": "models",
    "RequestLog": "models",
    "RevokedToken": "models",
    "User": "models",
    "Database": "session",
}

__all__ = [
    "DATABASE",
    "ApiKey",
    "AuditEvent",
    "Base",
    "BenchmarkRun",
    "Database",
    "Job",
    "MetricSample",
    "ModelConfig",
    "PluginState",
    "RequestLog",
    "RevokedToken",
    "User",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
