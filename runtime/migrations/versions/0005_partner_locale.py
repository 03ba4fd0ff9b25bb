"""partners: the language of a partner's notices.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision, down_revision = "0005", "0004"


def upgrade() -> None:
    with op.batch_alter_table("partners") as batch:
        batch.add_column(sa.Column("locale", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("partners") as batch:
        batch.drop_column("locale")
