"""The database handle: one engine and session factory per URL, opened on first use.

SQLite runs in WAL mode with foreign keys on, so readers do not block the writer.
``upgrade()`` applies the Alembic migrations; ``Database.session()`` is a unit of work
that commits on success and rolls back on error, so no half-written record is left.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker

from ..kernel.errors import ConfigurationError


class Database:
    """A database URL, its engine and sessions."""

    def __init__(self, url: str, *, auto_upgrade: bool = True) -> None:
        self.url = url
        self.auto_upgrade = auto_upgrade
        self._lock = threading.Lock()
        self._engine: Engine | None = None
        self._sessions: sessionmaker[Session] | None = None

    @property
    def engine(self) -> Engine:
        """The engine, created (and the schema brought up to date) on first use."""
        if self._engine is None:
            with self._lock:
                if self._engine is None:
                    engine = _make_engine(self.url)
                    from .migrate import ensure_current

                    ensure_current(engine, upgrade=self.auto_upgrade)
                    self._sessions = sessionmaker(engine, expire_on_commit=False)
                    self._engine = engine
        return self._engine

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A unit of work: committed when the block ends, rolled back if it raises."""
        self.engine  # noqa: B018 - opens the database on first use
        assert self._sessions is not None
        with self._sessions.begin() as session:
            yield session

    def dispose(self) -> None:
        """Close every connection."""
        if self._engine is not None:
            self._engine.dispose()


def _make_engine(url: str) -> Engine:
    kwargs: dict[str, Any] = {"future": True}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
    else:
        kwargs.update(pool_pre_ping=True, pool_size=10, max_overflow=20)
        if url.startswith("postgresql"):  # an unreachable server fails in seconds, not a TCP timeout
            kwargs["connect_args"] = {"connect_timeout": 10}
    try:
        engine = create_engine(url, **kwargs)
    except (ArgumentError, ImportError, ValueError, TypeError) as exc:  # ArgumentError covers an unknown dialect
        raise ConfigurationError(
            f"LLAMA_GPU_DATABASE_URL is not a usable SQLAlchemy URL ({_masked(url)!r}): {exc}. "
            "Examples: sqlite:////var/lib/llama-gpu/llama-gpu.db, postgresql+psycopg://user:password@host:5432/db",
            details={"setting": "database_url"},
        ) from exc
    if url.startswith("sqlite"):

        @event.listens_for(engine, "connect")
        def _pragmas(connection: Any, _record: Any) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA busy_timeout=30000")
            _wal(cursor)
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

    return engine


def _wal(cursor: Any, patience: float = 30.0) -> None:
    """Switch the database to WAL, retrying while another connection holds it.

    Changing the journal mode can answer "database is locked" at once, without waiting on the
    busy timeout, when several processes open a new database together (the first start).
    """
    deadline = time.monotonic() + patience
    while True:
        try:
            if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _masked(url: str) -> str:
    """``url`` with any password replaced by ``***`` (it may not parse, so by pattern)."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)
