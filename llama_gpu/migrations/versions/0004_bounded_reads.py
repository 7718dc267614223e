"""Bounded reads: ``benchmark_runs`` gains an indexed ``owner`` and a small ``summary``.

Lists of jobs and the metrics history filter by owner in SQL and page through rows without
loading their full ``results``. Rows written before this revision get their owner from
their ``config`` and their summary from their ``results`` here, once.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 08:30:00
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _summary(kind: str, results: Any) -> dict[str, float] | None:
    """The scalar figures of a run's results (as :func:`llama_gpu.db.models.summary_of` computes them)."""
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


def upgrade() -> None:
    """Upgrade the schema, then fill the new columns of existing rows."""
    with op.batch_alter_table("benchmark_runs") as batch:
        batch.add_column(sa.Column("owner", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("summary", sa.JSON(), nullable=True))
    op.create_index(
        "ix_benchmark_runs_kind_owner_created_at", "benchmark_runs", ["kind", "owner", "created_at"], unique=False
    )
    runs = sa.table(
        "benchmark_runs",
        sa.column("id", sa.Integer),
        sa.column("kind", sa.String),
        sa.column("config", sa.JSON),
        sa.column("results", sa.JSON),
        sa.column("owner", sa.String),
        sa.column("summary", sa.JSON),
    )
    connection = op.get_bind()
    for row in connection.execute(sa.select(runs.c.id, runs.c.kind, runs.c.config, runs.c.results)).all():
        owner = row.config.get("owner") if isinstance(row.config, dict) else None
        connection.execute(
            sa.update(runs)
            .where(runs.c.id == row.id)
            .values(owner=owner[:64] if isinstance(owner, str) else None, summary=_summary(row.kind, row.results))
        )


def downgrade() -> None:
    """Downgrade the schema."""
    op.drop_index("ix_benchmark_runs_kind_owner_created_at", table_name="benchmark_runs")
    with op.batch_alter_table("benchmark_runs") as batch:
        batch.drop_column("summary")
        batch.drop_column("owner")
