"""entities: the current row of a lifecycle that keeps no list of its own (keyed by workflow id).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision, down_revision = "0002", "0001"


def upgrade() -> None:
    op.create_table(
        "entities",
        sa.Column("workflow_id", sa.String(250), primary_key=True),
        sa.Column("cloud", sa.String(16), nullable=False),
        sa.Column("partner_id", sa.String(100), nullable=False),
        sa.Column("customer_id", sa.String(100), nullable=False),
        sa.Column("company", sa.String(200), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("fields", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("last_change_id", sa.String(250), nullable=False),
    )
    op.create_index("ix_entities_partner_id", "entities", ["partner_id"])


def downgrade() -> None:
    op.drop_index("ix_entities_partner_id", table_name="entities")
    op.drop_table("entities")
