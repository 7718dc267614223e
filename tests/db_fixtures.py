"""Database fixtures: each test on SQLite (a file in tmp_path) and on PostgreSQL (a schema of its own).

PostgreSQL comes from ``LLAMA_GPU_TEST_DATABASE_URL`` (e.g. ``postgresql://postgres@127.0.0.1:5432/test``);
without it those tests are skipped, unless ``LLAMA_GPU_REQUIRE_SERVICES=1`` (CI), where they fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url


def postgres_base_url() -> str | None:
    """The test server's URL with the psycopg 3 driver, or ``None`` (skip or fail as configured)."""
    url = os.environ.get("LLAMA_GPU_TEST_DATABASE_URL", "").strip()
    if not url:
        if os.environ.get("LLAMA_GPU_REQUIRE_SERVICES") == "1":
            pytest.fail("LLAMA_GPU_REQUIRE_SERVICES=1 but LLAMA_GPU_TEST_DATABASE_URL is not set")
        pytest.skip("PostgreSQL tests need LLAMA_GPU_TEST_DATABASE_URL (e.g. postgresql://postgres@127.0.0.1/test)")
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            url = "postgresql+psycopg://" + url[len(plain) :]
    return url


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A URL whose connections use a fresh schema (``search_path``), dropped with everything in it afterwards."""
    base = postgres_base_url()
    assert base is not None
    schema = "test_" + uuid.uuid4().hex[:12]
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:
        admin.dispose()
        if os.environ.get("LLAMA_GPU_REQUIRE_SERVICES") == "1":
            raise
        pytest.skip(f"PostgreSQL at {make_url(base).render_as_string()} is not reachable: {exc}")
    url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database: a SQLite file in ``tmp_path``, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db' / 'llama-gpu.db'}"
    return request.getfixturevalue("postgres_url")
