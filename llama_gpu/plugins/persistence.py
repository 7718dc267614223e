"""The ``persistence`` plugin: the shared database, the request log writer and ``llama-gpu db``.

At start-up it shares a :class:`~llama_gpu.db.Database` as ``kernel.services[DATABASE]``; the
database is opened (and migrated) on first use, not at start-up. Every finished or refused
request becomes one :class:`~llama_gpu.db.RequestLog` row: the event bus hands the
``inference_completed`` / ``inference_failed`` events to this plugin's own thread, the rows
wait in memory and a small daemon thread writes them in batches (when 100 are pending, else
every second, and at shutdown). A failed write keeps its rows for the next try (with a
growing pause), so a database that is briefly away loses nothing; nothing is written per token.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import click
from marshmallow import Schema, fields, validate

from ..db import DATABASE
from ..kernel.errors import RequestCancelled
from ..kernel.hookspecs import hookimpl
from ..kernel.kernel import Kernel
from ..kernel.types import Event, PluginInfo

log = logging.getLogger(__name__)

#: Events that become request-log rows.
LOGGED_EVENTS = ("inference_completed", "inference_failed")


class RequestLogWriter:
    """Buffers request-log rows and writes them in batches on a daemon thread.

    :param database: Returns the database to write to (``None``: keep the rows for later).
    :param batch_size: Pending rows that trigger a write before the interval is up.
    :param interval: Seconds between writes of whatever is pending.
    :param max_pending: Rows kept while the database cannot be written; the oldest go beyond it.
    """

    #: Longest pause between retries after failed writes, in seconds.
    MAX_BACKOFF = 30.0
    #: Rows per transaction when catching up.
    CHUNK = 1000

    def __init__(
        self,
        database: Callable[[], Any],
        *,
        batch_size: int = 100,
        interval: float = 1.0,
        max_pending: int = 100_000,
    ) -> None:
        self._database = database
        self.batch_size = batch_size
        self.interval = interval
        self.max_pending = max_pending
        self.written = 0
        self.write_errors = 0
        self.dropped = 0
        self._pending: list[dict[str, Any]] = []
        self._lock = threading.Lock()  # guards _pending and the counters
        self._flush_lock = threading.Lock()  # one writer at a time
        self._wake = threading.Event()
        self._failures = 0
        self._retry_at = 0.0
        self._thread: threading.Thread | None = None
        self._closed = False

    @property
    def pending(self) -> int:
        """Rows not written yet."""
        with self._lock:
            return len(self._pending)

    def add(self, row: dict[str, Any]) -> None:
        """Queue one row; after :meth:`close` it is written at once (late events of a stopping kernel)."""
        with self._lock:
            self._pending.append(row)
            if len(self._pending) > self.max_pending:
                del self._pending[0]
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 1000 == 0:
                    log.error("request log: %d row(s) dropped, the database has not been writable", self.dropped)
            closed, full = self._closed, len(self._pending) >= self.batch_size
            if not closed and self._thread is None:
                self._thread = threading.Thread(target=self._run, name="request-log-writer", daemon=True)
                self._thread.start()
        if closed:
            self.flush()
        elif full and not self._failures:
            self._wake.set()

    def flush(self) -> int:
        """Write every pending row now; returns how many were written (failed rows stay pending)."""
        done = 0
        with self._flush_lock:
            while True:
                with self._lock:
                    batch, self._pending = self._pending[: self.CHUNK], self._pending[self.CHUNK :]
                if not batch:
                    return done
                try:
                    self._write(batch)
                except Exception as exc:  # noqa: BLE001 - any failure: keep the rows, try again later
                    with self._lock:
                        self._pending[:0] = batch
                        self.write_errors += 1
                    self._failures += 1
                    self._retry_at = time.monotonic() + min(self.interval * 2**self._failures, self.MAX_BACKOFF)
                    log.log(
                        logging.ERROR if self._failures == 1 else logging.WARNING,
                        "request log: writing %d row(s) failed (attempt %d), kept for a retry: %s: %s",
                        len(batch),
                        self._failures,
                        type(exc).__name__,
                        exc,
                    )
                    return done
                with self._lock:
                    self.written += len(batch)
                if self._failures:
                    log.info("request log: the database is writable again")
                self._failures = 0
                done += len(batch)

    def _write(self, rows: list[dict[str, Any]]) -> None:
        from sqlalchemy import insert

        from ..db import RequestLog

        database = self._database()
        if database is None:
            raise RuntimeError("no database is configured")
        with database.session() as session:
            session.execute(insert(RequestLog), rows)

    def _run(self) -> None:
        while not self._closed:
            wait = self.interval if not self._failures else max(self._retry_at - time.monotonic(), 0.0)
            self._wake.wait(wait)
            self._wake.clear()
            if self._closed:
                return
            if self._failures and time.monotonic() < self._retry_at:
                continue
            self.flush()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread and write what is pending (rows added later are written at once)."""
        with self._lock:
            self._closed = True
            thread = self._thread
        self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self.flush()
        if self.pending:
            log.error("request log: %d row(s) could not be written before shutdown", self.pending)


def request_log_row(event: Event) -> dict[str, Any] | None:
    """The ``request_log`` row of an inference event (``None`` for other events)."""
    if event.type not in LOGGED_EVENTS:
        return None
    data = event.data
    ok = event.type == "inference_completed"
    error = None if ok else data.get("error")
    if not ok and error is None and data.get("reason") == "cancelled":
        error = RequestCancelled.code
    latency = _number(data.get("latency"))
    return {
        "request_id": _text(data.get("request_id"), 128) or event.id,
        "caller": _text(data.get("caller"), 64),
        "model": _text(data.get("model"), 255),
        "endpoint": _text(data.get("endpoint"), 64),
        "prompt_tokens": _integer(data.get("prompt_tokens")),
        "completion_tokens": _integer(data.get("tokens_generated")),
        "latency_ms": None if latency is None else round(latency * 1000.0, 3),
        "status": 200 if ok else (_integer(data.get("status")) or 500),
        "error_code": _text(error, 64),
        "created_at": dt.datetime.fromtimestamp(event.timestamp, dt.UTC),
    }


def _text(value: Any, length: int) -> str | None:
    return None if value is None else str(value)[:length]


def _integer(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


class PersistenceSettings(Schema):
    """The ``persistence`` plugin's settings (``LLAMA_GPU_PERSISTENCE_<KEY>``)."""

    request_log_retention_days = fields.Float(
        load_default=30.0,
        validate=validate.Range(min=0),
        metadata={"alias": "request_log_retention_days", "description": "Days request-log rows are kept (0: always)"},
    )


class Persistence:
    """Shares the database, writes the request log, adds ``llama-gpu db``."""

    PLUGIN_INFO = PluginInfo(
        name="Persistence",
        category="core",
        description="The shared database (SQLite or PostgreSQL, migrated by Alembic), the request log, `llama-gpu db`.",
        essential=True,
        settings_schema=PersistenceSettings,
    )

    def __init__(self) -> None:
        self.db: Any = None
        self.writer = RequestLogWriter(lambda: self.db)
        #: Days request-log rows are kept (0: always); the monitoring plugin prunes with it.
        self.request_log_retention_days = 30.0

    @hookimpl
    def configure(self, settings: Mapping[str, Any]) -> None:
        """Apply ``request_log_retention_days`` (validated by :class:`PersistenceSettings`)."""
        self.request_log_retention_days = float(settings.get("request_log_retention_days", 30.0))

    @hookimpl(tryfirst=True)
    def startup(self, kernel: Kernel) -> None:
        """Share the database as ``kernel.services[DATABASE]`` (opened on first use, not now)."""
        from ..db import Database

        settings = kernel.settings
        self.db = kernel.services.setdefault(
            DATABASE, Database(settings.database, auto_upgrade=settings.db_auto_upgrade)
        )

    @hookimpl
    def on_event(self, event: Event) -> None:
        """Turn finished and refused requests into request-log rows (written in batches)."""
        row = request_log_row(event)
        if row is not None:
            self.writer.add(row)

    @hookimpl
    def shutdown(self, kernel: Kernel) -> None:
        """Write the pending rows and close the database's connections."""
        self.writer.close()
        if self.db is not None:
            self.db.dispose()
        kernel.services.discard(DATABASE, self.db)

    @hookimpl
    def collect_metrics(self) -> Mapping[str, float]:
        """The request log writer's backlog and counters."""
        writer = self.writer
        return {
            "request_log_pending": float(writer.pending),
            "request_log_written_total": float(writer.written),
            "request_log_write_errors_total": float(writer.write_errors),
            "request_log_dropped_total": float(writer.dropped),
        }

    @hookimpl
    def register_commands(self, register: Callable[[Any], None]) -> None:
        """``llama-gpu db upgrade`` and ``llama-gpu db current``."""
        register(db)


@click.group()
def db() -> None:
    """The database: migrations (LLAMA_GPU_DATABASE_URL, default SQLite in the data folder)."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply pending migrations and print the revision the database is at."""
    from ..db.migrate import upgrade
    from ..kernel.config import Settings

    click.echo(upgrade(Settings.from_env().database))


@db.command("current")
def db_current() -> None:
    """Print the database's revision and the newest one shipped."""
    from ..db.migrate import current_revision, head_revision
    from ..kernel.config import Settings

    current = current_revision(Settings.from_env().database)
    head = head_revision()
    state = "up to date" if current == head else "run `llama-gpu db upgrade`"
    click.echo(f"{current or 'none'} (head: {head}; {state})")
