"""hosts' health and holds, host events, workers: the farm

A host has a health apart from its state (good, unknown, bad, maintenance; who
set it, when and why) and may be held by a person until a time (`hosts
allocate`): no job is allocated a slot of a held host, nor of a bad one or one in
maintenance. host_events is a host's history of health changes and holds;
workers is one row per worker process (flight runs included) with its heartbeat.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 12:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("hosts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("health_why", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("health_by", sa.String(200), nullable=True))
        batch_op.add_column(sa.Column("health_changed", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("held_by", sa.String(200), nullable=True))
        batch_op.add_column(sa.Column("held_until", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("held_why", sa.Text(), nullable=True))
    op.create_table(
        "host_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("host", sa.String(200), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("value", sa.String(200), nullable=False),
        sa.Column("why", sa.Text(), nullable=False),
        sa.Column("by", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_host_events")),
    )
    op.create_index("ix_host_events_host_at", "host_events", ["host", "at"])
    op.create_index("ix_host_allocations_host_allocated", "host_allocations", ["host", "allocated"])
    op.create_table(
        "workers",
        sa.Column("worker", sa.String(200), nullable=False),
        sa.Column("machine", sa.String(200), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started", sa.Float(), nullable=False),
        sa.Column("heartbeat", sa.Float(), nullable=False),
        sa.Column("lease_until", sa.Float(), nullable=False),
        sa.Column("stopped", sa.Float(), nullable=True),
        sa.Column("why", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("worker", name=op.f("pk_workers")),
    )


def downgrade() -> None:
    op.drop_table("workers")
    op.drop_index("ix_host_allocations_host_allocated", table_name="host_allocations")
    op.drop_index("ix_host_events_host_at", table_name="host_events")
    op.drop_table("host_events")
    with op.batch_alter_table("hosts", schema=None) as batch_op:
        for c in ("held_why", "held_until", "held_by", "health_changed", "health_by"):
            batch_op.drop_column(c)
        batch_op.drop_column("health_why")
