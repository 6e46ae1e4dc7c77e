"""Record how many streams the worker process had open when each run started.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 21:10:00.000000
"""

from alembic import op
import sqlalchemy as sa

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("concurrent_streams", sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column("runs", "concurrent_streams")
