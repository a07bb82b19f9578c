"""verdicts and verdict_failures: a flight's verdict stored once; pushes.why/decided_by,
gate_state.updated_by: the gate's decision with its reason and who gave a block or force

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 19:20:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "verdicts",
        sa.Column("flight", sa.Integer(), nullable=False),
        sa.Column("branch", sa.String(length=200), nullable=False),
        sa.Column("created", sa.Float(), nullable=False),
        sa.Column("outcome", sa.String(length=100), nullable=False),
        sa.Column("subject_prefix", sa.String(length=50), nullable=False),
        sa.Column("verdict", sa.String(length=100), nullable=False),
        sa.Column("blocking", sa.Boolean(), nullable=False),
        sa.Column("mode", sa.String(length=20), nullable=False),
        sa.Column("retest_flight", sa.Integer(), nullable=True),
        sa.Column("doc", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["flight"],
            ["flights.flight"],
            name=op.f("fk_verdicts_flight_flights"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("flight", name=op.f("pk_verdicts")),
    )
    op.create_index("ix_verdicts_branch_flight", "verdicts", ["branch", "flight"], unique=False)
    op.create_table(
        "verdict_failures",
        sa.Column("flight", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("job", sa.String(length=200), nullable=False),
        sa.Column("stepno", sa.Integer(), nullable=True),
        sa.Column("testid", sa.String(length=400), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("kind", sa.String(length=30), nullable=False),
        sa.Column("in_flight", sa.Integer(), nullable=True),
        sa.Column("reference_flight", sa.Integer(), nullable=True),
        sa.Column("passed_in", sa.Integer(), nullable=True),
        sa.Column("blocks", sa.Boolean(), nullable=False),
        sa.Column("annotation", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["flight"],
            ["verdicts.flight"],
            name=op.f("fk_verdict_failures_flight_verdicts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("flight", "seq", name=op.f("pk_verdict_failures")),
    )
    op.create_index(
        "ix_verdict_failures_job_testid", "verdict_failures", ["job", "testid"], unique=False
    )
    with op.batch_alter_table("pushes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("why", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("decided_by", sa.String(length=200), nullable=True))
    with op.batch_alter_table("gate_state", schema=None) as batch_op:
        batch_op.add_column(sa.Column("updated_by", sa.String(length=200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("gate_state", schema=None) as batch_op:
        batch_op.drop_column("updated_by")
    with op.batch_alter_table("pushes", schema=None) as batch_op:
        batch_op.drop_column("decided_by")
        batch_op.drop_column("why")
    op.drop_index("ix_verdict_failures_job_testid", table_name="verdict_failures")
    op.drop_table("verdict_failures")
    op.drop_index("ix_verdicts_branch_flight", table_name="verdicts")
    op.drop_table("verdicts")
