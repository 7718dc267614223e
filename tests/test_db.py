"""The database: migrations, sessions, the request log writer and ``llama-gpu db`` (SQLite and PostgreSQL)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from click.testing import CliRunner
from sqlalchemy import create_engine, func, inspect, select, text
from sqlalchemy.exc import OperationalError

from llama_gpu import Event, InferenceRequest, Kernel
from llama_gpu.cli import main
from llama_gpu.db import Base, Database, RequestLog, User
from llama_gpu.db.migrate import alembic_config, current_revision, ensure_current, head_revision, upgrade
from llama_gpu.db.session import _make_engine
from llama_gpu.errors import ConfigurationError, InvalidInput, ModelNotFound
from llama_gpu.plugins.persistence import Persistence, RequestLogWriter, request_log_row

from . import db_fixtures
from .conftest import make_settings

database_url = db_fixtures.database_url
postgres_url = db_fixtures.postgres_url

TABLES = {
    "users",
    "api_keys",
    "request_log",
    "plugin_state",
    "model_config",
    "metric_samples",
    "audit_events",
    "jobs",
}


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@contextmanager
def opened(url: str, auto_upgrade: bool = True) -> Iterator[Database]:
    database = Database(url, auto_upgrade=auto_upgrade)
    try:
        yield database
    finally:
        database.dispose()


def table_names(url: str) -> set[str]:
    engine = _make_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def persistence_of(kernel: Kernel) -> Persistence:
    plugin = kernel.plugins.get("persistence").obj
    assert isinstance(plugin, Persistence)
    return plugin


# ------------------------------------------------------------------ migrations


def test_migrations_bring_an_empty_database_to_head_and_agree_with_the_models(database_url: str) -> None:
    assert current_revision(database_url) is None
    assert upgrade(database_url) == head_revision()
    assert table_names(database_url) >= TABLES
    with opened(database_url) as database, database.engine.connect() as connection:
        assert current_revision(connection) == head_revision()
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == [], f"the models and the migrations disagree: {differences}"
    assert upgrade(database_url) == head_revision()  # a second upgrade is a no-op
    command.downgrade(alembic_config(database_url), "base")
    assert table_names(database_url) & TABLES == set()
    assert upgrade(database_url) == head_revision()


def test_ensure_current_without_upgrade_refuses_an_empty_database(database_url: str) -> None:
    engine = _make_engine(database_url)
    try:
        with pytest.raises(ConfigurationError, match="llama-gpu db upgrade") as info:
            ensure_current(engine, upgrade=False)
        assert info.value.details == {"current": None, "head": head_revision()}
    finally:
        engine.dispose()
    with opened(database_url, auto_upgrade=False) as database, pytest.raises(ConfigurationError, match="db upgrade"):
        database.engine  # noqa: B018
    assert table_names(database_url) & TABLES == set(), "a refused upgrade creates nothing"
    upgrade(database_url)
    with opened(database_url, auto_upgrade=False) as database:
        assert current_revision(database.engine) == head_revision()  # at head: no upgrade needed


def test_a_database_from_a_newer_release_is_refused(database_url: str) -> None:
    upgrade(database_url)
    with opened(database_url) as database, database.engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999_future'"))
    for auto_upgrade in (True, False):
        with opened(database_url, auto_upgrade) as database, pytest.raises(ConfigurationError, match="newer release"):
            database.engine  # noqa: B018


def test_migrations_run_on_the_callers_in_memory_sqlite_engine() -> None:
    engine = create_engine("sqlite://")
    ensure_current(engine, upgrade=True)
    assert set(inspect(engine).get_table_names()) >= TABLES
    engine.dispose()


def test_concurrent_first_use_upgrades_once(database_url: str) -> None:
    barrier = threading.Barrier(4)
    results: list[Any] = []

    def first_use() -> None:
        barrier.wait()
        try:
            results.append(upgrade(database_url))
        except Exception as exc:
            results.append(exc)

    threads = [threading.Thread(target=first_use) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert results == [head_revision()] * 4
    with opened(database_url) as database, database.engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    with opened(f"sqlite:///{tmp_path / 'wal.db'}") as database, database.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_a_session_that_raises_leaves_nothing_written(database_url: str) -> None:
    with opened(database_url) as database:
        with pytest.raises(RuntimeError, match="boom"), database.session() as session:
            session.add(User(username="ada", password_hash="x", role="admin"))
            session.flush()  # the row reached the database inside the transaction
            raise RuntimeError("boom")
        with database.session() as session:
            assert session.scalar(select(func.count()).select_from(User)) == 0
            session.add(User(username="ada", password_hash="x", role="admin"))
        with database.session() as session:
            assert session.scalars(select(User.username)).all() == ["ada"]


# ------------------------------------------------------------------ the request log


def test_the_database_is_shared_and_not_opened_at_startup(tmp_path: Path) -> None:
    kernel = Kernel(make_settings(tmp_path)).start()
    try:
        database = kernel.services["db"]
        assert isinstance(database, Database) and database.url == kernel.settings.database
        assert kernel.plugins.get("persistence").essential
    finally:
        kernel.stop(timeout=5)
    assert not (tmp_path / "data" / "llama-gpu.db").exists(), "a kernel that served nothing opened the database"


def test_the_request_log_survives_a_restart(tmp_path: Path, database_url: str) -> None:
    settings = make_settings(tmp_path, database_url=database_url)
    kernel = Kernel(settings).start()
    try:
        ids = []
        for _ in range(3):
            request = InferenceRequest(prompt="a b c", max_tokens=2, endpoint="openai")
            kernel.complete(request)
            ids.append(request.id)
        with pytest.raises(ModelNotFound):
            kernel.complete(InferenceRequest(prompt="a", model="no-such-model", id="req-unknown"))
        with pytest.raises(InvalidInput):
            kernel.complete(InferenceRequest(prompt="a", max_tokens=10**9, id="req-too-many"))
    finally:
        kernel.stop(timeout=5)

    again = Kernel(settings).start()
    try:
        with again.services["db"].session() as session:
            rows = {row.request_id: row for row in session.scalars(select(RequestLog))}
    finally:
        again.stop(timeout=5)
    assert set(rows) == {*ids, "req-unknown", "req-too-many"}
    for request_id in ids:
        row = rows[request_id]
        assert (row.model, row.endpoint, row.status, row.error_code) == ("echo", "openai", 200, None)
        assert row.caller is None or isinstance(row.caller, str)
        assert row.prompt_tokens == 3 and row.completion_tokens == 2
        assert row.latency_ms is not None and row.latency_ms >= 0
        assert row.created_at is not None
    unknown = rows["req-unknown"]
    assert (unknown.model, unknown.status, unknown.error_code) == ("no-such-model", 404, "MODEL_NOT_FOUND")
    assert unknown.endpoint == "native" and unknown.completion_tokens is None
    too_many = rows["req-too-many"]
    assert (too_many.model, too_many.status, too_many.error_code) == ("default", 400, "INVALID_INPUT")


def test_a_failed_write_loses_no_rows(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(tmp_path, database_url=database_url)
    kernel = Kernel(settings).start()
    writer = persistence_of(kernel).writer
    database: Database = kernel.services["db"]
    real_session = database.session
    calls = {"n": 0}

    def flaky_session() -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OperationalError("INSERT", {}, Exception("database is locked"))
        return real_session()

    monkeypatch.setattr(database, "session", flaky_session)
    try:
        with caplog.at_level(logging.WARNING, logger="llama_gpu.plugins.persistence"):
            for _ in range(5):
                kernel.complete(InferenceRequest(prompt="a b", max_tokens=1))
            wait_for(lambda: writer.write_errors == 1 or writer.pending == 5)
            writer.flush()  # the first write fails (here or on the writer thread), the rows stay
            assert writer.write_errors == 1
            writer.flush()
            assert writer.pending == 0 and writer.written == 5
        assert "kept for a retry" in caplog.text
    finally:
        kernel.stop(timeout=5)
    with opened(database_url) as check, check.session() as session:
        assert session.scalar(select(func.count()).select_from(RequestLog)) == 5


def test_rows_are_written_periodically_by_the_writer_thread(tmp_path: Path, database_url: str) -> None:
    kernel = Kernel(make_settings(tmp_path, database_url=database_url)).start()
    writer = persistence_of(kernel).writer
    writer.interval = 0.05  # one second in production
    try:
        for _ in range(3):
            kernel.complete(InferenceRequest(prompt="x", max_tokens=1))
        wait_for(lambda: writer.written == 3)  # without a stop
        assert kernel.collect_metrics()["persistence.request_log_written_total"] == 3
    finally:
        kernel.stop(timeout=5)


def completed(request_id: str) -> Event:
    data = {"request_id": request_id, "model": "m", "caller": "api_key:7", "endpoint": "native", "latency": 0.25}
    return Event("inference_completed", {**data, "prompt_tokens": 4, "tokens_generated": 9, "backend": "echo"})


def test_request_log_rows_from_events() -> None:
    row = request_log_row(completed("r1"))
    assert row is not None
    assert {k: row[k] for k in ("request_id", "caller", "model", "endpoint", "status", "error_code")} == {
        "request_id": "r1",
        "caller": "api_key:7",
        "model": "m",
        "endpoint": "native",
        "status": 200,
        "error_code": None,
    }
    assert (row["prompt_tokens"], row["completion_tokens"], row["latency_ms"]) == (4, 9, 250.0)
    cancelled = request_log_row(
        Event("inference_failed", {"request_id": "r2", "reason": "cancelled", "error": None, "status": 499})
    )
    assert cancelled is not None and (cancelled["status"], cancelled["error_code"]) == (499, "REQUEST_CANCELLED")
    assert request_log_row(Event("kernel_state", {"state": "started"})) is None


def test_the_writer_batches_retries_and_writes_late_rows(tmp_path: Path) -> None:
    target: dict[str, Database | None] = {"db": None}
    writer = RequestLogWriter(lambda: target["db"], batch_size=3, interval=60.0)
    with opened(f"sqlite:///{tmp_path / 'log.db'}") as database:
        rows = [request_log_row(completed(f"r{n}")) for n in range(8)]
        writer.add(rows[0])
        writer.add(rows[1])
        assert writer.flush() == 0 and writer.write_errors == 1 and writer.pending == 2  # no database yet
        target["db"] = database
        writer.add(rows[2])  # a batch is due, but the writer waits out its pause after a failure
        assert writer.flush() == 3 and writer.pending == 0
        for row in rows[3:6]:
            writer.add(row)
        wait_for(lambda: writer.written == 6)  # a full batch is written at once, not after the interval
        writer.close()
        writer.add(rows[6])  # after close (events delivered while the kernel stops): written at once
        assert writer.written == 7 and writer.pending == 0
        with database.session() as session:
            assert session.scalar(select(func.count()).select_from(RequestLog)) == 7

    bounded = RequestLogWriter(lambda: None, max_pending=2, interval=60.0)
    for row in rows[:3]:
        bounded.add(row)
    assert (bounded.pending, bounded.dropped) == (2, 1)
    bounded.close(timeout=1)


# ------------------------------------------------------------------ command line and bad input


def test_db_upgrade_and_current_commands(tmp_path: Path, database_url: str) -> None:
    env = {"LLAMA_GPU_DATABASE_URL": database_url, "LLAMA_GPU_DATA_DIR": str(tmp_path / "data")}
    runner = CliRunner()
    before = runner.invoke(main, ["db", "current"], env=env)
    assert before.exit_code == 0, before.output
    assert "none" in before.output and "llama-gpu db upgrade" in before.output
    result = runner.invoke(main, ["db", "upgrade"], env=env)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == head_revision()
    assert table_names(database_url) >= TABLES
    after = runner.invoke(main, ["db", "current"], env=env)
    assert after.exit_code == 0 and "up to date" in after.output and head_revision() in after.output


@pytest.mark.parametrize(
    "url",
    ["not a url", "nosuchdialect://host/db", "postgresql+psycopg://ops:s3cret@localhost:notaport/db"],
)
def test_a_malformed_database_url_is_a_clear_error_at_first_use(tmp_path: Path, url: str) -> None:
    kernel = Kernel(make_settings(tmp_path, database_url=url)).start()  # lazy: starting does not open it
    try:
        with pytest.raises(ConfigurationError, match="LLAMA_GPU_DATABASE_URL") as info:
            kernel.services["db"].engine  # noqa: B018
        assert "s3cret" not in info.value.message
    finally:
        kernel.stop(timeout=5)
    result = CliRunner().invoke(main, ["db", "upgrade"], env={"LLAMA_GPU_DATABASE_URL": url})
    assert result.exit_code == 2
    assert "CONFIGURATION_ERROR" in result.output and "LLAMA_GPU_DATABASE_URL" in result.output
    assert "Traceback" not in result.output and "s3cret" not in result.output


def test_an_unreachable_database_is_a_clear_error(tmp_path: Path) -> None:
    url = "postgresql+psycopg://ops:s3cret@127.0.0.1:1/nothing"
    with opened(url) as database, pytest.raises(ConfigurationError, match="cannot open the database") as info:
        database.engine  # noqa: B018
    assert "s3cret" not in info.value.message and "127.0.0.1:1" in info.value.message
