"""hosts.check_due, hosts.check_flight: a health check before a host is used again

A host that went bad by breaking jobs, whose worker was reaped while it ran a job,
or that a person set `unknown`, is given no job but the config's health-check job
(runner.health_check_job) until that passes on it: check_due is when the check was
asked for, check_flight the health-check flight queued for it.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 21:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("hosts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("check_due", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("check_flight", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("hosts", schema=None) as batch_op:
        batch_op.drop_column("check_flight")
        batch_op.drop_column("check_due")
