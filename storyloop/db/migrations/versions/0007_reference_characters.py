"""reference characters: each scenario reference records whose image it is

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02

NULL is the one unnamed character of a flat reference list, so existing rounds migrate unchanged.
"""

from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('scenario_references', schema=None) as batch_op:
        batch_op.add_column(sa.Column('character', sa.String(length=128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('scenario_references', schema=None) as batch_op:
        batch_op.drop_column('character')
