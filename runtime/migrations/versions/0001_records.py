"""The records schema: customers, audit, outbox, subscriptions (as `activities.records.metadata` defines it).

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "customers",
        sa.Column("cloud", sa.String(16), primary_key=True),
        sa.Column("partner_id", sa.String(100), primary_key=True),
        sa.Column("customer_id", sa.String(100), primary_key=True),
        sa.Column("workflow_id", sa.String(250), nullable=False),
        sa.Column("company", sa.String(200), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("purchase_permission", sa.Boolean, nullable=False),
        sa.Column("reinstated_count", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("last_change_id", sa.String(250), nullable=False),
    )
    op.create_table(
        "audit",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("change_id", sa.String(250), nullable=False),
        sa.Column("cloud", sa.String(16), nullable=False),
        sa.Column("partner_id", sa.String(100), nullable=False),
        sa.Column("customer_id", sa.String(100), nullable=False),
        sa.Column("workflow_id", sa.String(250), nullable=False),
        sa.Column("operation", sa.String(64), nullable=False),
        sa.Column("actor_user", sa.String(254), nullable=False),
        sa.Column("actor_role", sa.String(32), nullable=False),
        sa.Column("from_state", sa.String(32), nullable=True),
        sa.Column("to_state", sa.String(32), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("correlation_id", sa.String(250), nullable=False),
        sa.UniqueConstraint("change_id"),
    )
    op.create_index("ix_audit_workflow_id", "audit", ["workflow_id"])
    op.create_table(
        "outbox",
        sa.Column("key", sa.String(250), primary_key=True),
        sa.Column("message_id", sa.String(250), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("recipient", sa.String(254), nullable=False),
        sa.Column("subject", sa.String(300), nullable=False),
        sa.Column("workflow_id", sa.String(250), nullable=False),
        sa.Column("token_sha256", sa.String(64), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_outbox_workflow_id", "outbox", ["workflow_id"])
    op.create_table(
        "subscriptions",
        sa.Column("cloud", sa.String(16), primary_key=True),
        sa.Column("partner_id", sa.String(100), primary_key=True),
        sa.Column("customer_id", sa.String(100), primary_key=True),
        sa.Column("active", sa.Integer, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("subscriptions")
    op.drop_index("ix_outbox_workflow_id", table_name="outbox")
    op.drop_table("outbox")
    op.drop_index("ix_audit_workflow_id", table_name="audit")
    op.drop_table("audit")
    op.drop_table("customers")
