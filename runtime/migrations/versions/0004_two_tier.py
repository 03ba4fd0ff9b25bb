"""customers: the indirect provider linked with an indirect reseller, a suspension's reason;
subscriptions: the billing feed's detail (how many of what), shown when ending is refused.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision, down_revision = "0004", "0003"


def upgrade() -> None:
    with op.batch_alter_table("customers") as batch:
        batch.add_column(sa.Column("indirect_provider_id", sa.String(100), nullable=True))
        batch.add_column(sa.Column("suspension_reason", sa.String(32), nullable=True))
    op.create_index("ix_customers_provider", "customers", ["cloud", "indirect_provider_id"])
    # The customers of indirect resellers already in the list: linked to their provider now.
    op.execute(
        "UPDATE customers SET indirect_provider_id = (SELECT p.indirect_provider_id FROM partners p"
        " WHERE p.cloud = customers.cloud AND p.partner_id = customers.partner_id AND p.kind = 'indirect_reseller')"
    )
    with op.batch_alter_table("subscriptions") as batch:
        batch.add_column(sa.Column("detail", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("subscriptions") as batch:
        batch.drop_column("detail")
    op.drop_index("ix_customers_provider", table_name="customers")
    with op.batch_alter_table("customers") as batch:
        batch.drop_column("suspension_reason")
        batch.drop_column("indirect_provider_id")
