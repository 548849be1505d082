"""judgment active seconds: time spent judging, idle gaps left out

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02

NULL for judgments stored before it: their time is shown -> submitted, as it was measured then.
"""

from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('judgments', schema=None) as batch_op:
        batch_op.add_column(sa.Column('active_seconds', sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('judgments', schema=None) as batch_op:
        batch_op.drop_column('active_seconds')
