"""Alembic, driven from Python: no ``alembic.ini``, the scripts ship in ``llama_gpu/migrations``.

``ensure_current(engine, upgrade=...)`` is what :class:`~llama_gpu.db.session.Database` calls on
first use: it brings the schema to the head revision, or refuses with a
:class:`~llama_gpu.kernel.errors.ConfigurationError` that tells the operator to run
``llama-gpu db upgrade``. Concurrent first uses are serialised by a database lock
(``BEGIN IMMEDIATE`` on SQLite, an advisory lock on PostgreSQL), so two processes starting at
once do not both create the schema; on SQLite the whole upgrade is then one transaction.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import SQLAlchemyError

from ..kernel.errors import ConfigurationError
from ..kernel.private import touch_private

#: Where the migration scripts live (a package, so that a wheel ships them).
SCRIPT_LOCATION = str(Path(__file__).resolve().parent.parent / "migrations")

#: Key of the PostgreSQL advisory lock that serialises upgrades (any fixed 64-bit number).
_PG_LOCK_KEY = 0x6C6C616D61475055  # "llamaGPU"


def alembic_config(url_or_engine: str | Engine | Connection) -> Config:
    """An Alembic configuration for a URL, an engine or a connection (``env.py`` uses what it is given)."""
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    if isinstance(url_or_engine, str):
        config.attributes["url"] = url_or_engine
        # ConfigParser interpolates '%': URL-encoded characters must be doubled.
        config.set_main_option("sqlalchemy.url", url_or_engine.replace("%", "%%"))
    elif isinstance(url_or_engine, Engine):
        config.attributes["engine"] = url_or_engine
    else:
        config.attributes["connection"] = url_or_engine
    return config


def head_revision() -> str:
    """The newest revision of the shipped migrations."""
    head = ScriptDirectory(SCRIPT_LOCATION).get_current_head()
    assert head is not None, "no migrations found in " + SCRIPT_LOCATION
    return head


def current_revision(target: str | Engine | Connection) -> str | None:
    """The revision the database (a URL, an engine or a connection) is at; ``None`` when it is empty."""
    if isinstance(target, Connection):
        return MigrationContext.configure(target).get_current_revision()
    if isinstance(target, str):
        from .session import _make_engine

        engine = _make_engine(target)
        try:
            return current_revision(engine)
        finally:
            engine.dispose()
    with _connect(target) as connection:
        return MigrationContext.configure(connection).get_current_revision()


def ensure_current(engine: Engine, upgrade: bool) -> None:
    """Bring the database to the head revision (``upgrade``), else refuse unless it is there already."""
    head = head_revision()
    with _connect(engine) as connection:
        if current_revision(connection) == head:
            connection.rollback()
            return
        _lock(connection)  # another process may be upgrading: wait for it, then look again
        current = current_revision(connection)
        if current == head:
            connection.rollback()
            return
        if current is not None and not _known(current):
            connection.rollback()
            raise ConfigurationError(
                f"the database {_shown(engine)} is at revision {current}, which this version of llama-gpu does not "
                f"know (its newest is {head}): it was migrated by a newer release; run that release",
                details={"current": current, "head": head},
            )
        if not upgrade:
            connection.rollback()
            raise ConfigurationError(
                f"the database {_shown(engine)} is at revision {current or 'none (empty)'}, not at {head}: "
                "run `llama-gpu db upgrade` (or set LLAMA_GPU_DB_AUTO_UPGRADE=true)",
                details={"current": current, "head": head},
            )
        try:
            command.upgrade(alembic_config(connection), "head")
            connection.commit()
        except (SQLAlchemyError, CommandError) as exc:
            connection.rollback()
            raise ConfigurationError(
                f"upgrading the database {_shown(engine)} to {head} failed: {type(exc).__name__}: {exc}",
                details={"current": current, "head": head},
            ) from exc


def upgrade(url: str) -> str:
    """Apply every pending migration to the database at ``url``; returns the revision it is at."""
    from .session import Database

    database = Database(url, auto_upgrade=True)
    try:
        return current_revision(database.engine) or ""
    finally:
        database.dispose()


def _connect(engine: Engine) -> Connection:
    """A connection; an unreachable database is a ConfigurationError naming it (password hidden)."""
    path = engine.url.database if engine.dialect.name == "sqlite" else None
    if path and path != ":memory:" and not path.startswith("file:"):
        touch_private(path)  # 0600, and its folder 0700 when this creates it (the data folder, on the first start)
    try:
        return engine.connect()
    except SQLAlchemyError as exc:
        raise ConfigurationError(
            f"cannot open the database {_shown(engine)}: {type(exc).__name__}: {_first_line(exc)}",
            details={"database": _shown(engine)},
        ) from exc


def _known(revision: str) -> bool:
    try:
        return ScriptDirectory(SCRIPT_LOCATION).get_revision(revision) is not None
    except CommandError:
        return False


def _lock(connection: Connection) -> None:
    """Serialise upgraders until the transaction ends."""
    if connection.dialect.name == "sqlite":
        # pysqlite opens no transaction before DDL; take the write lock now (waits busy_timeout).
        connection.commit()
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    elif connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})


def _shown(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def _first_line(exc: BaseException) -> str:
    return (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [""])[0]
