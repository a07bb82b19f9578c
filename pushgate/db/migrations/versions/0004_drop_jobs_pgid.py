"""jobs: drop pgid (orphaned steps are found by their environment in /proc instead)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 13:55:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("pgid")


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pgid", sa.Integer(), nullable=True))
