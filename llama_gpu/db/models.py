"""The SQLAlchemy 2 models: the whole schema. It changes only through Alembic migrations.

Secrets are never stored: API keys as a SHA-256 hash plus a short display prefix,
passwords as scrypt hashes. Times are timezone-aware UTC.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer, MetaData, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

#: Constraint names that are the same on every database, so migrations can refer to them.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> dt.datetime:
    """Now, in UTC."""
    return dt.datetime.now(dt.UTC)


class Base(DeclarativeBase):
    """Base of every model."""

    metadata = MetaData(naming_convention=NAMING)


class User(Base):
    """An operator who logs in to the dashboard."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    #: ``read``, ``write`` or ``admin``.
    role: Mapped[str] = mapped_column(String(16))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_login_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ApiKey(Base):
    """An application's key: stored as a hash and a display prefix, shown in full once."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    #: The first characters of the key (``lgk_ab12cd34``), to recognise it in lists and to look it up.
    prefix: Mapped[str] = mapped_column(String(32), index=True)
    #: SHA-256 of the whole key, hex (keys are random: a fast hash is enough).
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    #: ``read``, ``write`` or ``admin``.
    role: Mapped[str] = mapped_column(String(16))
    #: Permissions narrower than the role (``None``: all of the role's).
    permissions: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    #: Rate-limit tier: ``standard`` or ``premium``.
    tier: Mapped[str] = mapped_column(String(16), default="standard")
    #: Who created it: a user, or another key (keys made through the API).
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    parent_key_id: Mapped[int | None] = mapped_column(
        ForeignKey("api_keys.id", ondelete="SET NULL"), nullable=True, index=True
    )
    #: The user at the root of the key's lineage (its own ``user_id``, else its parent's owner):
    #: they see and revoke it, and it counts against their rate limits.
    owner_user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True, index=True
    )
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class RevokedToken(Base):
    """A login token revoked before its expiry (a logout): its ``jti``, kept until it would have expired."""

    __tablename__ = "revoked_tokens"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
    revoked_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class RequestLog(Base):
    """One inference request, written in batches by a background writer."""

    __tablename__ = "request_log"
    __table_args__ = (Index("ix_request_log_created_at", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[str] = mapped_column(String(128), index=True)
    #: The caller (``api_key:12``, ``user:3``, ``anonymous``).
    caller: Mapped[str | None] = mapped_column(String(64), index=True, nullable=True)
    model: Mapped[str | None] = mapped_column(String(255), nullable=True)
    endpoint: Mapped[str | None] = mapped_column(String(64), nullable=True)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    completion_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    latency_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    status: Mapped[int] = mapped_column(Integer)
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class PluginState(Base):
    """A plugin's configuration as an operator left it."""

    __tablename__ = "plugin_state"

    plugin_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    priority: Mapped[int] = mapped_column(Integer, default=100)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class ModelConfig(Base):
    """How an operator wants a model loaded."""

    __tablename__ = "model_config"

    model_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class MetricSample(Base):
    """One periodic sample of a metric."""

    __tablename__ = "metric_samples"
    __table_args__ = (Index("ix_metric_samples_name_created_at", "name", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    value: Mapped[float] = mapped_column(Float)
    labels: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AuditEvent(Base):
    """Who did what to what: logins, keys, users, plugins, models."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    actor: Mapped[str | None] = mapped_column(String(64), nullable=True)
    action: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str | None] = mapped_column(String(255), nullable=True)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    remote_addr: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Job(Base):
    """One background job of any kind (benchmark, conversion, evaluation): spec, status, progress, results.

    The jobs of every kind share this table (``kind`` tells them apart); ``llama_gpu.jobs`` owns it.
    """

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_kind_created_at", "kind", "created_at"),
        Index("ix_jobs_kind_owner_created_at", "kind", "owner", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    target: Mapped[str | None] = mapped_column(String(255), nullable=True)
    #: The job's spec as its kind stored it (JSON-safe; secrets never).
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    results: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    notes: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    #: ``"benchmark"``, ``"conversion"`` or ``"evaluation"`` (a :class:`llama_gpu.jobs.JobKind` name).
    kind: Mapped[str] = mapped_column(String(16), default="benchmark", server_default="benchmark")
    #: ``"queued"``, ``"running"``, ``"completed"``, ``"failed"`` or ``"cancelled"``.
    status: Mapped[str] = mapped_column(String(16), default="completed", server_default="completed")
    model: Mapped[str | None] = mapped_column(String(255), nullable=True)
    progress: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    #: Who owns the job (``user:3``, ``api_key:12``…): lists filter on it in SQL.
    owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: The job's scalar figures (``ttft.p50``…), so that lists and the metrics history never read ``results``.
    summary: Mapped[dict[str, float] | None] = mapped_column(JSON, nullable=True)


#: The model's name before jobs of every kind moved to the ``jobs`` table (migration 0005).
BenchmarkRun = Job


def summary_of(kind: str, results: Any) -> dict[str, float] | None:
    """The scalar figures of a run's ``results``, nested statistics flattened (``ttft.p50``, ``custom.name``)."""
    if not isinstance(results, dict):
        return None
    source = results.get("summary" if kind == "evaluation" else "aggregated_metrics")
    out: dict[str, float] = {}
    for key, value in source.items() if isinstance(source, dict) else ():
        inner = value.items() if isinstance(value, dict) else [(None, value)]
        for sub, number in inner:
            if isinstance(number, int | float) and not isinstance(number, bool) and math.isfinite(number):
                out[f"{key}.{sub}" if sub is not None else str(key)] = float(number)
    return out or None
