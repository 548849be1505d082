"""benchmark results: a benchmark evaluator's summary per round, and where a round's scenarios came from

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02

`rounds.source` is NULL for every existing round (they came from JSONL files); the ViStoryBench bridge
(storyloop/vistory) records its split, language and prompt template there.
"""

from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('benchmark_results',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('round_id', sa.Integer(), nullable=False),
    sa.Column('benchmark', sa.String(length=32), nullable=False),
    sa.Column('method', sa.String(length=128), nullable=False),
    sa.Column('mode', sa.String(length=128), nullable=False),
    sa.Column('language', sa.String(length=16), nullable=False),
    sa.Column('split', sa.String(length=16), nullable=False),
    sa.Column('evaluated_at', sa.String(length=32), nullable=False),
    sa.Column('figures', sa.JSON(), nullable=False),
    sa.Column('summary', sa.JSON(), nullable=False),
    sa.Column('summary_sha256', sa.String(length=64), nullable=False),
    sa.Column('source_path', sa.String(length=1024), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['round_id'], ['rounds.id'], name=op.f('fk_benchmark_results_round_id_rounds'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_benchmark_results')),
    sa.UniqueConstraint('round_id', 'benchmark', 'method', 'mode', 'language', 'evaluated_at',
                        name='uq_benchmark_results_run')
    )
    with op.batch_alter_table('benchmark_results', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_benchmark_results_round_id'), ['round_id'], unique=False)

    with op.batch_alter_table('rounds', schema=None) as batch_op:
        batch_op.add_column(sa.Column('source', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('rounds', schema=None) as batch_op:
        batch_op.drop_column('source')

    with op.batch_alter_table('benchmark_results', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_benchmark_results_round_id'))

    op.drop_table('benchmark_results')
