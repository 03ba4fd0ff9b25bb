"""The event log (every change's event, in the change's transaction), webhook subscriptions
and their deliveries (dead letters among them).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision, down_revision = "0006", "0005"


def upgrade() -> None:
    op.create_table(
        "event_log",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(250), nullable=False, unique=True),
        sa.Column("type", sa.String(100), nullable=False),
        sa.Column("lifecycle", sa.String(32), nullable=False),
        sa.Column("cloud", sa.String(16), nullable=False),
        sa.Column("partner_id", sa.String(100), nullable=False),
        sa.Column("provider_id", sa.String(100), nullable=True),
        sa.Column("subject", sa.String(250), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("data", sa.JSON, nullable=False),
    )
    op.create_index("ix_event_log_partner", "event_log", ["cloud", "partner_id", "seq"])
    op.create_index("ix_event_log_provider", "event_log", ["cloud", "provider_id", "seq"])
    op.create_table(
        "webhooks",
        sa.Column("webhook_id", sa.String(64), primary_key=True),
        sa.Column("cloud", sa.String(16), nullable=False),
        sa.Column("partner_id", sa.String(100), nullable=False, index=True),
        sa.Column("url", sa.String(2000), nullable=False),
        sa.Column("types", sa.JSON, nullable=False),
        sa.Column("secret", sa.String(200), nullable=False),
        sa.Column("previous_secret", sa.String(200), nullable=True),
        sa.Column("after_seq", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("webhook_id", sa.String(64), primary_key=True),
        sa.Column("seq", sa.BigInteger, primary_key=True),
        sa.Column("event_id", sa.String(250), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("last_error", sa.String(200), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lag_ms", sa.BigInteger, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("webhook_deliveries")
    op.drop_table("webhooks")
    op.drop_index("ix_event_log_provider", table_name="event_log")
    op.drop_index("ix_event_log_partner", table_name="event_log")
    op.drop_table("event_log")
