"""Benchmark jobs: ``benchmark_runs`` gains a kind, a status, the model, progress, an error and run times.

Rows written before this revision are completed benchmarks (the server defaults say so).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 05:20:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade the schema."""
    with op.batch_alter_table("benchmark_runs") as batch:
        batch.add_column(sa.Column("kind", sa.String(length=16), server_default="benchmark", nullable=False))
        batch.add_column(sa.Column("status", sa.String(length=16), server_default="completed", nullable=False))
        batch.add_column(sa.Column("model", sa.String(length=255), nullable=True))
        batch.add_column(sa.Column("progress", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("error", sa.Text(), nullable=True))
        batch.add_column(sa.Column("started_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_benchmark_runs_kind_created_at", "benchmark_runs", ["kind", "created_at"], unique=False)


def downgrade() -> None:
    """Downgrade the schema."""
    op.drop_index("ix_benchmark_runs_kind_created_at", table_name="benchmark_runs")
    with op.batch_alter_table("benchmark_runs") as batch:
        batch.drop_column("finished_at")
        batch.drop_column("started_at")
        batch.drop_column("error")
        batch.drop_column("progress")
        batch.drop_column("model")
        batch.drop_column("status")
        batch.drop_column("kind")
