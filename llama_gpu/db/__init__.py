"""Persistence: SQLAlchemy models, the database handle, and Alembic migrations (``llama_gpu/migrations``)."""

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

__all__ = [
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
