"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-24
"""

from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('assets',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('width', sa.Integer(), nullable=False),
    sa.Column('height', sa.Integer(), nullable=False),
    sa.Column('format', sa.String(length=16), nullable=False),
    sa.Column('size_bytes', sa.BigInteger(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_assets')),
    sa.UniqueConstraint('sha256', name=op.f('uq_assets_sha256'))
    )
    op.create_table('rounds',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('parent_id', sa.Integer(), nullable=True),
    sa.Column('base_model', sa.String(length=1024), nullable=True),
    sa.Column('stage1_lora_path', sa.String(length=1024), nullable=True),
    sa.Column('stage1_lora_sha256', sa.String(length=64), nullable=True),
    sa.Column('dpo_lora_path', sa.String(length=1024), nullable=True),
    sa.Column('dpo_lora_sha256', sa.String(length=64), nullable=True),
    sa.Column('judgments_per_scenario', sa.Integer(), nullable=False),
    sa.Column('gold_rate', sa.Float(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('gold_rate >= 0 AND gold_rate <= 1', name=op.f('ck_rounds_gold_rate_unit')),
    sa.CheckConstraint('judgments_per_scenario >= 1', name=op.f('ck_rounds_k_positive')),
    sa.ForeignKeyConstraint(['parent_id'], ['rounds.id'], name=op.f('fk_rounds_parent_id_rounds')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_rounds')),
    sa.UniqueConstraint('name', name=op.f('uq_rounds_name'))
    )
    op.create_table('users',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('username', sa.String(length=64), nullable=False),
    sa.Column('password_hash', sa.String(length=255), nullable=False),
    sa.Column('role', sa.Enum('annotator', 'researcher', 'admin', name='role', native_enum=False, create_constraint=True, length=16), nullable=False),
    sa.Column('is_active', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_users')),
    sa.UniqueConstraint('username', name=op.f('uq_users_username'))
    )
    op.create_table('dpo_runs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('round_id', sa.Integer(), nullable=False),
    sa.Column('status', sa.Enum('pending', 'running', 'completed', 'failed', name='run_status', native_enum=False, create_constraint=True, length=16), nullable=False),
    sa.Column('config', sa.JSON(), nullable=False),
    sa.Column('pair_set_sha256', sa.String(length=64), nullable=False),
    sa.Column('code_version', sa.String(length=128), nullable=False),
    sa.Column('artifact_path', sa.String(length=1024), nullable=True),
    sa.Column('failure_reason', sa.Text(), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['round_id'], ['rounds.id'], name=op.f('fk_dpo_runs_round_id_rounds')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_dpo_runs'))
    )
    op.create_table('scenarios',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('round_id', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=256), nullable=False),
    sa.Column('story_id', sa.String(length=256), nullable=False),
    sa.Column('frame_index', sa.Integer(), nullable=False),
    sa.Column('prompt', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('frame_index >= 0', name=op.f('ck_scenarios_frame_index_nonneg')),
    sa.ForeignKeyConstraint(['round_id'], ['rounds.id'], name=op.f('fk_scenarios_round_id_rounds'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_scenarios')),
    sa.UniqueConstraint('round_id', 'key', name=op.f('uq_scenarios_round_id_key'))
    )
    with op.batch_alter_table('scenarios', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_scenarios_round_id'), ['round_id'], unique=False)

    op.create_table('candidates',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('scenario_id', sa.Integer(), nullable=False),
    sa.Column('index', sa.Integer(), nullable=False),
    sa.Column('asset_id', sa.Integer(), nullable=False),
    sa.Column('seed', sa.BigInteger(), nullable=True),
    sa.Column('params', sa.JSON(), nullable=False),
    sa.Column('model_fingerprint', sa.String(length=128), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['asset_id'], ['assets.id'], name=op.f('fk_candidates_asset_id_assets')),
    sa.ForeignKeyConstraint(['scenario_id'], ['scenarios.id'], name=op.f('fk_candidates_scenario_id_scenarios'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_candidates')),
    sa.UniqueConstraint('scenario_id', 'index', name=op.f('uq_candidates_scenario_id_index'))
    )
    with op.batch_alter_table('candidates', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_candidates_scenario_id'), ['scenario_id'], unique=False)

    op.create_table('dpo_metrics',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('step', sa.Integer(), nullable=False),
    sa.Column('values', sa.JSON(), nullable=False),
    sa.Column('logged_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['dpo_runs.id'], name=op.f('fk_dpo_metrics_run_id_dpo_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_dpo_metrics')),
    sa.UniqueConstraint('run_id', 'step', name=op.f('uq_dpo_metrics_run_id_step'))
    )
    op.create_table('gold_answers',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('scenario_id', sa.Integer(), nullable=False),
    sa.Column('outcome', sa.Enum('ranked', 'tie', 'all_bad', 'skipped', name='gold_outcome', native_enum=False, create_constraint=True, length=16), nullable=False),
    sa.Column('winner_candidate_ids', sa.JSON(), nullable=False),
    sa.Column('loser_candidate_ids', sa.JSON(), nullable=False),
    sa.Column('notes', sa.Text(), nullable=True),
    sa.Column('created_by', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['created_by'], ['users.id'], name=op.f('fk_gold_answers_created_by_users')),
    sa.ForeignKeyConstraint(['scenario_id'], ['scenarios.id'], name=op.f('fk_gold_answers_scenario_id_scenarios'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_gold_answers')),
    sa.UniqueConstraint('scenario_id', name=op.f('uq_gold_answers_scenario_id'))
    )
    op.create_table('judgments',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('scenario_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('revision', sa.Integer(), nullable=False),
    sa.Column('idempotency_key', sa.String(length=64), nullable=False),
    sa.Column('outcome', sa.Enum('ranked', 'tie', 'all_bad', 'skipped', name='outcome', native_enum=False, create_constraint=True, length=16), nullable=False),
    sa.Column('skip_reason', sa.Text(), nullable=True),
    sa.Column('shown_order', sa.JSON(), nullable=False),
    sa.Column('shown_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('submitted_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("(outcome = 'skipped') = (skip_reason IS NOT NULL)", name=op.f('ck_judgments_skip_has_reason')),
    sa.CheckConstraint('revision >= 1', name=op.f('ck_judgments_revision_positive')),
    sa.ForeignKeyConstraint(['scenario_id'], ['scenarios.id'], name=op.f('fk_judgments_scenario_id_scenarios'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_judgments_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_judgments')),
    sa.UniqueConstraint('idempotency_key', name=op.f('uq_judgments_idempotency_key')),
    sa.UniqueConstraint('scenario_id', 'user_id', 'revision', name=op.f('uq_judgments_scenario_id_user_id_revision'))
    )
    with op.batch_alter_table('judgments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_judgments_scenario_id'), ['scenario_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_judgments_user_id'), ['user_id'], unique=False)

    op.create_table('leases',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('scenario_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('leased_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['scenario_id'], ['scenarios.id'], name=op.f('fk_leases_scenario_id_scenarios'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_leases_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_leases')),
    sa.UniqueConstraint('scenario_id', 'user_id', name=op.f('uq_leases_scenario_id_user_id'))
    )
    op.create_table('scenario_references',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('scenario_id', sa.Integer(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('asset_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['asset_id'], ['assets.id'], name=op.f('fk_scenario_references_asset_id_assets')),
    sa.ForeignKeyConstraint(['scenario_id'], ['scenarios.id'], name=op.f('fk_scenario_references_scenario_id_scenarios'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_scenario_references')),
    sa.UniqueConstraint('scenario_id', 'position', name=op.f('uq_scenario_references_scenario_id_position'))
    )
    op.create_table('judgment_labels',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('judgment_id', sa.Integer(), nullable=False),
    sa.Column('candidate_id', sa.Integer(), nullable=False),
    sa.Column('consistency_pass', sa.Boolean(), nullable=False),
    sa.Column('anatomy_pass', sa.Boolean(), nullable=True),
    sa.Column('aesthetics_rank', sa.Integer(), nullable=True),
    sa.CheckConstraint('aesthetics_rank IS NULL OR (anatomy_pass AND aesthetics_rank >= 1)', name=op.f('ck_judgment_labels_rank_only_survivors')),
    sa.CheckConstraint('consistency_pass OR anatomy_pass IS NULL', name=op.f('ck_judgment_labels_anatomy_after_consistency')),
    sa.ForeignKeyConstraint(['candidate_id'], ['candidates.id'], name=op.f('fk_judgment_labels_candidate_id_candidates'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['judgment_id'], ['judgments.id'], name=op.f('fk_judgment_labels_judgment_id_judgments'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_judgment_labels')),
    sa.UniqueConstraint('judgment_id', 'candidate_id', name=op.f('uq_judgment_labels_judgment_id_candidate_id'))
    )


def downgrade() -> None:
    op.drop_table('judgment_labels')
    op.drop_table('scenario_references')
    op.drop_table('leases')
    with op.batch_alter_table('judgments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_judgments_user_id'))
        batch_op.drop_index(batch_op.f('ix_judgments_scenario_id'))

    op.drop_table('judgments')
    op.drop_table('gold_answers')
    op.drop_table('dpo_metrics')
    with op.batch_alter_table('candidates', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_candidates_scenario_id'))

    op.drop_table('candidates')
    with op.batch_alter_table('scenarios', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_scenarios_round_id'))

    op.drop_table('scenarios')
    op.drop_table('dpo_runs')
    op.drop_table('users')
    op.drop_table('rounds')
    op.drop_table('assets')
