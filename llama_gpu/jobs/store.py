"""The ``jobs`` table, as the job service uses it: guarded status changes, one-write closes, recovery.

A row goes ``queued`` → ``running`` → ``completed`` | ``failed`` | ``cancelled``. While a
process holds a row (waiting in its pool, or running) it stamps ``progress`` with its instance
id and a heartbeat; rows waiting in the distributed queue are stamped ``queue:<name>`` and held
by the queue instead. Every status change is conditional on the current status, so a row
cancelled through one process is never reopened by another.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from sqlalchemy import DateTime, func, select, update
from sqlalchemy.orm import defer

from ..db.models import Job, summary_of, utcnow

ACTIVE = ("queued", "running")
FINISHED = ("completed", "failed", "cancelled")
#: Progress fields that are bookkeeping, not shown to callers.
PRIVATE_PROGRESS = ("instance", "heartbeat")
#: The ``instance`` of rows waiting in a distributed queue starts with this.
QUEUED_IN = "queue:"


class JobStore:
    """The rows of one kind of job in the shared database (``db`` is the ``Database`` service)."""

    def __init__(self, db: Any, kind: str) -> None:
        self.db = db
        self.kind = kind

    def insert(self, **values: Any) -> Job:
        """Add a row; returns it detached (with its id and defaults)."""
        with self.db.session() as session:
            row = Job(kind=self.kind, **values)
            session.add(row)
            session.flush()
            session.refresh(row)
            session.expunge(row)
        return row

    def get(self, job_id: int) -> Job | None:
        """The row ``job_id`` of this kind, detached."""
        with self.db.session() as session:
            row = session.scalar(select(Job).where(Job.id == job_id, Job.kind == self.kind))
            if row is not None:
                session.expunge(row)
        return row

    def list(self, *, owner: str | None, status: str | None, limit: int, offset: int, results: bool) -> list[Job]:
        """A page of rows, newest first (``owner=None``: everybody's; ``results=False``: not loaded)."""
        query = select(Job).where(Job.kind == self.kind)
        if not results:
            query = query.options(defer(Job.results))
        if status is not None:
            query = query.where(Job.status == status)
        if owner is not None:
            query = query.where(Job.owner == owner)
        query = query.order_by(Job.created_at.desc(), Job.id.desc()).offset(offset).limit(limit)
        with self.db.session() as session:
            rows = list(session.scalars(query))
            for row in rows:
                session.expunge(row)
        return rows

    def count(self, *statuses: str, owner: str | None = None) -> int:
        """Rows of this kind in ``statuses`` (of ``owner``, when given)."""
        query = select(func.count(Job.id)).where(Job.kind == self.kind, Job.status.in_(statuses))
        if owner is not None:
            query = query.where(Job.owner == owner)
        with self.db.session() as session:
            return int(session.scalar(query) or 0)

    def active(self) -> list[Job]:
        """Queued and running rows of this kind, detached."""
        with self.db.session() as session:
            rows = list(session.scalars(select(Job).where(Job.kind == self.kind, Job.status.in_(ACTIVE))))
            for row in rows:
                session.expunge(row)
        return rows

    def write(self, job_id: int, allowed: tuple[str, ...], **values: Any) -> bool:
        """Update a row whose status is in ``allowed``; False when it is not (cancelled or closed elsewhere)."""
        with self.db.session() as session:
            done = session.execute(update(Job).where(Job.id == job_id, Job.status.in_(allowed)).values(**values))
            return bool(done.rowcount)

    def finish(self, job_id: int, status: str, *, error: str | None = None, results: Any = None) -> None:
        """Close a row in one write; a row closed already keeps its status (results are still added)."""
        now = utcnow()
        with self.db.session() as session:
            row = session.get(Job, job_id)
            if row is None:
                return
            if row.status not in FINISHED:
                row.status, row.error = status, error
            if results is not None:
                row.results = results
                row.summary = summary_of(row.kind, results)
            row.finished_at = row.finished_at or now
            progress = {k: v for k, v in (row.progress or {}).items() if k not in PRIVATE_PROGRESS}
            row.progress = progress or None

    def recover(self, instance: str, stale_after: float, noun: str) -> int:
        """Fail active rows held by a process that stopped beating (not ``instance``, not a queue's)."""
        now, closed = time.time(), 0
        with self.db.session() as session:
            rows = session.scalars(select(Job).where(Job.kind == self.kind, Job.status.in_(ACTIVE))).all()
            for row in rows:
                progress = row.progress or {}
                holder = str(progress.get("instance") or "")
                if holder == instance or (row.status == "queued" and holder.startswith(QUEUED_IN)):
                    continue
                if now - float(progress.get("heartbeat") or 0.0) > stale_after:
                    row.status, row.finished_at = "failed", utcnow()
                    row.error = f"the server process running this {noun} stopped"
                    closed += 1
        return closed

    def beat(self, held: set[int], stamp: dict[str, Any]) -> set[int]:
        """Renew the heartbeat of the active rows in ``held``; returns those no longer active."""
        gone = set(held)
        with self.db.session() as session:
            for row in session.scalars(select(Job).where(Job.id.in_(list(held)))):
                if row.status in ACTIVE:
                    row.progress = {**(row.progress or {}), **stamp}
                    gone.discard(row.id)
        return gone


def iso(when: dt.datetime | None) -> str | None:
    """A stored time as ISO-8601 UTC ending in ``Z`` (SQLite returns naive UTC)."""
    if when is None:
        return None
    when = when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)
    return when.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def metric_history(
    db: Any,
    *,
    owner: str | None,
    model: str | None,
    metric: str | None,
    start: dt.datetime | None,
    end: dt.datetime | None,
    limit: int,
    offset: int,
) -> tuple[list[dict[str, Any]], bool]:
    """Points ``{moment, run_id, kind, model, metric, value}`` of completed benchmarks and evaluations.

    A page holds the points of at most ``limit`` jobs, newest first from ``offset`` (oldest first
    within the page), from each job's stored ``summary``; also whether more jobs follow.
    ``owner=None``: everybody's.
    """
    moment = func.coalesce(Job.finished_at, Job.created_at, type_=DateTime(timezone=True))
    statement = select(Job.id, Job.kind, Job.model, Job.summary, moment.label("moment")).where(
        Job.status == "completed", Job.kind.in_(("benchmark", "evaluation"))
    )
    if owner is not None:
        statement = statement.where(Job.owner == owner)
    if model is not None:
        statement = statement.where(Job.model == model)
    if start is not None:
        statement = statement.where(moment >= start)
    if end is not None:
        statement = statement.where(moment <= end)
    statement = statement.order_by(moment.desc(), Job.id.desc()).offset(offset).limit(limit + 1)
    with db.session() as session:
        runs = session.execute(statement).all()
    points = [
        {"moment": run.moment, "run_id": run.id, "kind": run.kind, "model": run.model, "metric": name, "value": value}
        for run in reversed(runs[:limit])
        for name, value in (run.summary or {}).items()
        if metric is None or name == metric
    ]
    return points, len(runs) > limit
