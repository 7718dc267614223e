"""Key lineage and token revocation: ``api_keys.owner_user_id`` and the ``revoked_tokens`` deny-list.

A key's owner is the user at the root of its lineage (the key's own ``user_id``, else its
parent's owner): a user sees, revokes and shares rate limits with every key minted by their
keys. Rows written before this revision get their owner, and the keys below a revoked key
are revoked too (revoking now revokes a key's whole lineage).

``revoked_tokens`` holds the ``jti`` of login tokens revoked by a logout until they expire.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 08:10:00
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade the schema, then give existing keys their owner and revoke below revoked keys."""
    with _parents_kept(), op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("owner_user_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            op.f("fk_api_keys_owner_user_id_users"), "users", ["owner_user_id"], ["id"], ondelete="SET NULL"
        )
    op.create_index(op.f("ix_api_keys_owner_user_id"), "api_keys", ["owner_user_id"], unique=False)
    op.create_index(op.f("ix_api_keys_parent_key_id"), "api_keys", ["parent_key_id"], unique=False)
    op.create_table(
        "revoked_tokens",
        sa.Column("jti", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("jti", name=op.f("pk_revoked_tokens")),
    )
    op.create_index(op.f("ix_revoked_tokens_expires_at"), "revoked_tokens", ["expires_at"], unique=False)
    _backfill()


def _backfill() -> None:
    keys = sa.table(
        "api_keys",
        sa.column("id", sa.Integer()),
        sa.column("user_id", sa.Integer()),
        sa.column("parent_key_id", sa.Integer()),
        sa.column("owner_user_id", sa.Integer()),
        sa.column("revoked_at", sa.DateTime(timezone=True)),
    )
    bind = op.get_bind()
    rows = {
        r.id: r for r in bind.execute(sa.select(keys.c.id, keys.c.user_id, keys.c.parent_key_id, keys.c.revoked_at))
    }
    for key_id in rows:
        owner, revoked, seen, current = None, None, set(), rows.get(key_id)
        while current is not None and current.id not in seen:  # up the lineage to the first user
            seen.add(current.id)
            owner = owner if owner is not None else current.user_id
            revoked = revoked or current.revoked_at
            current = rows.get(current.parent_key_id) if current.parent_key_id is not None else None
        values: dict[str, object] = {}
        if owner is not None:
            values["owner_user_id"] = owner
        if revoked is not None and rows[key_id].revoked_at is None:
            values["revoked_at"] = revoked
        if values:
            bind.execute(sa.update(keys).where(keys.c.id == key_id).values(**values))


def downgrade() -> None:
    """Downgrade the schema."""
    op.drop_index(op.f("ix_revoked_tokens_expires_at"), table_name="revoked_tokens")
    op.drop_table("revoked_tokens")
    op.drop_index(op.f("ix_api_keys_parent_key_id"), table_name="api_keys")
    op.drop_index(op.f("ix_api_keys_owner_user_id"), table_name="api_keys")
    with _parents_kept(), op.batch_alter_table("api_keys") as batch:
        batch.drop_constraint(op.f("fk_api_keys_owner_user_id_users"), type_="foreignkey")
        batch.drop_column("owner_user_id")


@contextlib.contextmanager
def _parents_kept() -> Iterator[None]:
    """Restore ``parent_key_id`` after a batch rebuild of ``api_keys``.

    On SQLite the rebuild drops the old table under ``PRAGMA foreign_keys=ON``: its rows are
    deleted first, and the self-reference's ``ON DELETE SET NULL`` clears every parent in the copy.
    """
    bind = op.get_bind()
    keys = sa.table("api_keys", sa.column("id", sa.Integer()), sa.column("parent_key_id", sa.Integer()))
    parents = [(r.id, r.parent_key_id) for r in bind.execute(sa.select(keys.c.id, keys.c.parent_key_id))]
    yield
    for key_id, parent in parents:
        if parent is not None:
            bind.execute(sa.update(keys).where(keys.c.id == key_id).values(parent_key_id=parent))
