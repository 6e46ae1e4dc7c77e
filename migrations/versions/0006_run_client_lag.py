"""Record the max time the worker process waited for the CPU during each run's call.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 23:40:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("client_lag_ms", sa.Float(), nullable=True))


def downgrade() -> None:
    op.drop_column("runs", "client_lag_ms")
