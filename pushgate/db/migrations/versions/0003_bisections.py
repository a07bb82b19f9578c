"""bisections: one row per bisection of a regression

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 12:55:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bisections",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("branch", sa.String(length=200), nullable=False),
        sa.Column("job", sa.String(length=200), nullable=False),
        sa.Column("testid", sa.String(length=400), nullable=False),
        sa.Column("active", sa.String(length=800), nullable=True),
        sa.Column("basis", sa.Text(), nullable=False),
        sa.Column("latest", sa.Text(), nullable=False),
        sa.Column("basis_flight", sa.Integer(), nullable=True),
        sa.Column("latest_flight", sa.Integer(), nullable=True),
        sa.Column("host", sa.String(length=200), nullable=False),
        sa.Column("start_flight", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("culprit_tree", sa.String(length=200), nullable=True),
        sa.Column("culprit_commit", sa.String(length=64), nullable=True),
        sa.Column("confidence", sa.Float(), nullable=True),
        sa.Column("runs", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created", sa.Float(), nullable=False),
        sa.Column("finished", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bisections")),
        sa.UniqueConstraint("active", name=op.f("uq_bisections_active")),
    )
    with op.batch_alter_table("bisections", schema=None) as batch_op:
        batch_op.create_index(
            "ix_bisections_branch_job_testid", ["branch", "job", "testid"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("bisections", schema=None) as batch_op:
        batch_op.drop_index("ix_bisections_branch_job_testid")
    op.drop_table("bisections")
