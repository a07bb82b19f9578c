"""gate cycles: per-flight state of the push gate's cycle

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 12:50:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gate_cycles",
        sa.Column("flight", sa.Integer(), nullable=False),
        sa.Column("branch", sa.String(length=200), nullable=False),
        sa.Column("tree", sa.String(length=200), nullable=False),
        sa.Column("mode", sa.String(length=20), nullable=False),
        sa.Column("target", sa.String(length=64), nullable=False),
        sa.Column("that_revision", sa.String(length=64), nullable=True),
        sa.Column("expected_old", sa.String(length=64), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("retest_flight", sa.Integer(), nullable=True),
        sa.Column("retest_note", sa.Text(), nullable=True),
        sa.Column("stage", sa.String(length=20), nullable=False),
        sa.Column("created", sa.Float(), nullable=False),
        sa.Column("updated", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["flight"],
            ["flights.flight"],
            name=op.f("fk_gate_cycles_flight_flights"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("flight", name=op.f("pk_gate_cycles")),
    )
    with op.batch_alter_table("gate_cycles", schema=None) as batch_op:
        batch_op.create_index("ix_gate_cycles_branch_flight", ["branch", "flight"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("gate_cycles", schema=None) as batch_op:
        batch_op.drop_index("ix_gate_cycles_branch_flight")
    op.drop_table("gate_cycles")
