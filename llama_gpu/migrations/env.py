"""The Alembic environment: runs migrations on the connection, engine or URL it is given.

:func:`llama_gpu.db.migrate.alembic_config` puts a ``connection`` or an ``engine`` into
``config.attributes`` (or a URL into the options), so the caller's engine and its SQLite
settings are used, and an in-memory database is the caller's own. SQLite gets batch
operations (``render_as_batch``), since it cannot alter most of a table in place.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from llama_gpu.db.models import Base

config = context.config
target_metadata = Base.metadata


def run_on(connection: Connection) -> None:
    """Run the migrations on ``connection``, inside the caller's transaction when it has one."""
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_offline() -> None:
    """Emit the SQL instead of running it (``alembic upgrade --sql``)."""
    url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url")
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    """Run the migrations on the given connection, else on a connection of the given engine or URL."""
    connection = config.attributes.get("connection")
    if connection is not None:
        run_on(connection)
        return
    engine = config.attributes.get("engine")
    owned = engine is None
    if engine is None:
        engine = create_engine(config.attributes.get("url") or config.get_main_option("sqlalchemy.url"))
    try:
        with engine.begin() as connection:
            run_on(connection)
    finally:
        if owned:
            engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
