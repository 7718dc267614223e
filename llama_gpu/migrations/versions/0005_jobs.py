"""One ``jobs`` table: the rows of ``benchmark_runs`` (benchmarks, conversions, evaluations) move there.

Every kind of background job (``llama_gpu.jobs``) keeps its rows in ``jobs``; the columns are
those ``benchmark_runs`` had at 0004, so the rows move as they are, ids included (on PostgreSQL
the id sequence then continues after the highest moved id). The downgrade moves them back.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 11:45:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = (
    "id",
    "name",
    "target",
    "config",
    "results",
    "notes",
    "created_at",
    "kind",
    "status",
    "model",
    "progress",
    "error",
    "started_at",
    "finished_at",
    "owner",
    "summary",
)


def _create(table: str) -> None:
    """Create ``table`` with the job columns and its two indexes."""
    op.create_table(
        table,
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("target", sa.String(length=255), nullable=True),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("results", sa.JSON(), nullable=True),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=16), server_default="benchmark", nullable=False),
        sa.Column("status", sa.String(length=16), server_default="completed", nullable=False),
        sa.Column("model", sa.String(length=255), nullable=True),
        sa.Column("progress", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("owner", sa.String(length=64), nullable=True),
        sa.Column("summary", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=f"pk_{table}"),
    )
    op.create_index(f"ix_{table}_kind_created_at", table, ["kind", "created_at"], unique=False)
    op.create_index(f"ix_{table}_kind_owner_created_at", table, ["kind", "owner", "created_at"], unique=False)


def _move(source: str, target: str) -> None:
    """Copy every row of ``source`` into ``target`` (ids kept), then drop ``source``."""
    columns = [sa.column(name) for name in COLUMNS]
    origin, destination = sa.table(source, *columns), sa.table(target, *[sa.column(n) for n in COLUMNS])
    connection = op.get_bind()
    connection.execute(sa.insert(destination).from_select(list(COLUMNS), sa.select(*origin.c)))
    if connection.dialect.name == "postgresql":  # the next id follows the moved rows
        connection.execute(
            sa.text(
                f"SELECT setval(pg_get_serial_sequence('{target}', 'id'), "
                f"COALESCE((SELECT MAX(id) FROM {target}), 0) + 1, false)"
            )
        )
    op.drop_index(f"ix_{source}_kind_owner_created_at", table_name=source)
    op.drop_index(f"ix_{source}_kind_created_at", table_name=source)
    op.drop_table(source)


def upgrade() -> None:
    """Create ``jobs`` and move the rows of ``benchmark_runs`` into it."""
    _create("jobs")
    _move("benchmark_runs", "jobs")


def downgrade() -> None:
    """Recreate ``benchmark_runs`` and move the rows of ``jobs`` back."""
    _create("benchmark_runs")
    _move("jobs", "benchmark_runs")
