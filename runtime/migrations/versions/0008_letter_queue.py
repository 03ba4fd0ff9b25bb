"""letter_queue: the letters a change queues in its own transaction, for the worker's relay.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision, down_revision = "0008", "0007"


def upgrade() -> None:
    op.create_table(
        "letter_queue",
        sa.Column("key", sa.String(250), primary_key=True),
        sa.Column("cloud", sa.String(16), nullable=False),
        sa.Column("workflow_id", sa.String(250), nullable=False),
        sa.Column("letter", sa.JSON, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.String(200), nullable=True),
    )
    op.create_index("ix_letter_queue_workflow_id", "letter_queue", ["workflow_id"])
    op.create_index("ix_letter_queue_due", "letter_queue", ["cloud", "due_at"])


def downgrade() -> None:
    op.drop_index("ix_letter_queue_due", "letter_queue")
    op.drop_index("ix_letter_queue_workflow_id", "letter_queue")
    op.drop_table("letter_queue")
