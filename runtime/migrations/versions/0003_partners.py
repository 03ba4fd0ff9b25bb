"""partners: the partner registry; proofs_used: each start's assertion, once; customers.admin_email.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision, down_revision = "0003", "0002"


def upgrade() -> None:
    op.create_table(
        "partners",
        sa.Column("cloud", sa.String(16), primary_key=True),
        sa.Column("partner_id", sa.String(100), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("indirect_provider_id", sa.String(100), nullable=True),
        sa.Column("contact_email", sa.String(254), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "proofs_used",
        sa.Column("jti", sa.String(200), primary_key=True),
        sa.Column("issuer", sa.String(200), nullable=False),
        sa.Column("workflow_id", sa.String(250), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_proofs_used_expires_at", "proofs_used", ["expires_at"])
    with op.batch_alter_table("customers") as batch:
        batch.add_column(sa.Column("admin_email", sa.String(254), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("customers") as batch:
        batch.drop_column("admin_email")
    op.drop_index("ix_proofs_used_expires_at", table_name="proofs_used")
    op.drop_table("proofs_used")
    op.drop_table("partners")
