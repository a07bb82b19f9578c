"""jobs.attempt, host_slots.attempt, host_allocations.attempt: fenced leases

A job's attempt is its fencing token: bumped whenever the job changes hands
(claimed, taken over from a runner whose lease ran out, requeued, broken), and
every write a runner makes for the job names it, so a runner whose job was
taken over cannot write (invariant 8). A slot records the attempt holding it.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 10:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("attempt", sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("host_slots", schema=None) as batch_op:
        batch_op.add_column(sa.Column("attempt", sa.Integer(), nullable=True))
    with op.batch_alter_table("host_allocations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("attempt", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("host_allocations", schema=None) as batch_op:
        batch_op.drop_column("attempt")
    with op.batch_alter_table("host_slots", schema=None) as batch_op:
        batch_op.drop_column("attempt")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("attempt")
