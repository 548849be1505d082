"""studies: blind arm-against-arm comparisons (issue #20)

Studies, their arms (a model spec or a folder of images), the arms' images per scenario and seed, the
items annotators answer, leases, answers (append-only revisions) and gold answers. New tables only:
an existing database migrates unchanged.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('studies',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('kind', sa.Enum('pairwise', 'likert', name='study_kind', native_enum=False, create_constraint=True, length=16), nullable=False),
    sa.Column('answers_per_item', sa.Integer(), nullable=False),
    sa.Column('seeds', sa.Integer(), nullable=False),
    sa.Column('base_seed', sa.BigInteger(), nullable=False),
    sa.Column('round_id', sa.Integer(), nullable=False),
    sa.Column('gold_rate', sa.Float(), nullable=False),
    sa.Column('skip_policy', sa.Enum('others', 'everyone_last', 'counts', name='study_skip_policy', native_enum=False, create_constraint=True, length=16), nullable=False),
    sa.Column('created_by', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('answers_per_item >= 1', name=op.f('ck_studies_k_positive')),
    sa.CheckConstraint('gold_rate >= 0 AND gold_rate <= 1', name=op.f('ck_studies_gold_rate_unit')),
    sa.CheckConstraint('seeds >= 1', name=op.f('ck_studies_seeds_positive')),
    sa.ForeignKeyConstraint(['created_by'], ['users.id'], name=op.f('fk_studies_created_by_users')),
    sa.ForeignKeyConstraint(['round_id'], ['rounds.id'], name=op.f('fk_studies_round_id_rounds')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_studies')),
    sa.UniqueConstraint('name', name=op.f('uq_studies_name'))
    )
    with op.batch_alter_table('studies', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_studies_round_id'), ['round_id'], unique=False)

    op.create_table('study_arms',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('study_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.Enum('model', 'folder', name='arm_kind', native_enum=False, create_constraint=True, length=16), nullable=False),
    sa.Column('base_model', sa.String(length=1024), nullable=True),
    sa.Column('stage1_lora_path', sa.String(length=1024), nullable=True),
    sa.Column('stage1_lora_sha256', sa.String(length=64), nullable=True),
    sa.Column('dpo_lora_path', sa.String(length=1024), nullable=True),
    sa.Column('dpo_lora_sha256', sa.String(length=64), nullable=True),
    sa.Column('reference_guidance_scale', sa.Float(), nullable=True),
    sa.Column('folder', sa.String(length=1024), nullable=True),
    sa.CheckConstraint("(kind = 'folder') = (folder IS NOT NULL)", name=op.f('ck_study_arms_folder_iff_folder_arm')),
    sa.CheckConstraint("kind = 'folder' OR (base_model IS NOT NULL AND reference_guidance_scale IS NOT NULL)", name=op.f('ck_study_arms_model_arm_has_base')),
    sa.ForeignKeyConstraint(['study_id'], ['studies.id'], name=op.f('fk_study_arms_study_id_studies'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_study_arms')),
    sa.UniqueConstraint('study_id', 'name', name=op.f('uq_study_arms_study_id_name'))
    )
    op.create_table('study_images',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('arm_id', sa.Integer(), nullable=False),
    sa.Column('scenario_id', sa.Integer(), nullable=False),
    sa.Column('seed_index', sa.Integer(), nullable=False),
    sa.Column('seed', sa.BigInteger(), nullable=True),
    sa.Column('asset_id', sa.Integer(), nullable=False),
    sa.Column('params', sa.JSON(), nullable=False),
    sa.Column('model_fingerprint', sa.String(length=128), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('seed_index >= 0', name=op.f('ck_study_images_seed_index_nonneg')),
    sa.ForeignKeyConstraint(['arm_id'], ['study_arms.id'], name=op.f('fk_study_images_arm_id_study_arms'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['asset_id'], ['assets.id'], name=op.f('fk_study_images_asset_id_assets')),
    sa.ForeignKeyConstraint(['scenario_id'], ['scenarios.id'], name=op.f('fk_study_images_scenario_id_scenarios'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_study_images')),
    sa.UniqueConstraint('arm_id', 'scenario_id', 'seed_index', name=op.f('uq_study_images_arm_id_scenario_id_seed_index'))
    )
    with op.batch_alter_table('study_images', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_study_images_scenario_id'), ['scenario_id'], unique=False)

    op.create_table('study_items',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('study_id', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=600), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('scenario_id', sa.Integer(), nullable=True),
    sa.Column('story_id', sa.String(length=256), nullable=True),
    sa.Column('seed_index', sa.Integer(), nullable=False),
    sa.Column('arm_a_id', sa.Integer(), nullable=False),
    sa.Column('arm_b_id', sa.Integer(), nullable=True),
    sa.CheckConstraint('(scenario_id IS NOT NULL AND arm_b_id IS NOT NULL AND arm_b_id <> arm_a_id AND story_id IS NULL) OR (scenario_id IS NULL AND arm_b_id IS NULL AND story_id IS NOT NULL)', name=op.f('ck_study_items_pairwise_or_likert')),
    sa.CheckConstraint('seed_index >= 0', name=op.f('ck_study_items_seed_index_nonneg')),
    sa.ForeignKeyConstraint(['arm_a_id'], ['study_arms.id'], name=op.f('fk_study_items_arm_a_id_study_arms'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['arm_b_id'], ['study_arms.id'], name=op.f('fk_study_items_arm_b_id_study_arms'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['scenario_id'], ['scenarios.id'], name=op.f('fk_study_items_scenario_id_scenarios'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['study_id'], ['studies.id'], name=op.f('fk_study_items_study_id_studies'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_study_items')),
    sa.UniqueConstraint('study_id', 'key', name=op.f('uq_study_items_study_id_key')),
    sa.UniqueConstraint('study_id', 'position', name=op.f('uq_study_items_study_id_position'))
    )
    with op.batch_alter_table('study_items', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_study_items_study_id'), ['study_id'], unique=False)

    op.create_table('study_answers',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('item_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('revision', sa.Integer(), nullable=False),
    sa.Column('idempotency_key', sa.String(length=64), nullable=False),
    sa.Column('left_arm_id', sa.Integer(), nullable=True),
    sa.Column('right_arm_id', sa.Integer(), nullable=True),
    sa.Column('choice', sa.Enum('left', 'right', 'tie', 'both_bad', name='study_choice', native_enum=False, create_constraint=True, length=16), nullable=True),
    sa.Column('cc', sa.Integer(), nullable=True),
    sa.Column('sc', sa.Integer(), nullable=True),
    sa.Column('sa', sa.Integer(), nullable=True),
    sa.Column('skip_reason', sa.Text(), nullable=True),
    sa.Column('shown_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('submitted_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('(cc IS NULL OR cc BETWEEN 1 AND 5) AND (sc IS NULL OR sc BETWEEN 1 AND 5) AND (sa IS NULL OR sa BETWEEN 1 AND 5)', name=op.f('ck_study_answers_scores_1_to_5')),
    sa.CheckConstraint('(left_arm_id IS NULL) = (right_arm_id IS NULL) AND (left_arm_id IS NULL OR left_arm_id <> right_arm_id)', name=op.f('ck_study_answers_two_sides')),
    sa.CheckConstraint('(skip_reason IS NOT NULL AND choice IS NULL AND cc IS NULL AND sc IS NULL AND sa IS NULL) OR (skip_reason IS NULL AND choice IS NOT NULL AND cc IS NULL AND sc IS NULL AND sa IS NULL) OR (skip_reason IS NULL AND choice IS NULL AND cc IS NOT NULL AND sc IS NOT NULL AND sa IS NOT NULL)', name=op.f('ck_study_answers_one_kind_of_answer')),
    sa.CheckConstraint('revision >= 1', name=op.f('ck_study_answers_revision_positive')),
    sa.ForeignKeyConstraint(['item_id'], ['study_items.id'], name=op.f('fk_study_answers_item_id_study_items'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['left_arm_id'], ['study_arms.id'], name=op.f('fk_study_answers_left_arm_id_study_arms'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['right_arm_id'], ['study_arms.id'], name=op.f('fk_study_answers_right_arm_id_study_arms'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_study_answers_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_study_answers')),
    sa.UniqueConstraint('idempotency_key', name=op.f('uq_study_answers_idempotency_key')),
    sa.UniqueConstraint('item_id', 'user_id', 'revision', name=op.f('uq_study_answers_item_id_user_id_revision'))
    )
    with op.batch_alter_table('study_answers', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_study_answers_item_id'), ['item_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_study_answers_user_id'), ['user_id'], unique=False)

    op.create_table('study_gold_answers',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('item_id', sa.Integer(), nullable=False),
    sa.Column('verdict', sa.Enum('arm', 'tie', 'both_bad', name='gold_verdict', native_enum=False, create_constraint=True, length=16), nullable=True),
    sa.Column('preferred_arm_id', sa.Integer(), nullable=True),
    sa.Column('cc', sa.Integer(), nullable=True),
    sa.Column('sc', sa.Integer(), nullable=True),
    sa.Column('sa', sa.Integer(), nullable=True),
    sa.Column('notes', sa.Text(), nullable=True),
    sa.Column('created_by', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("(verdict IS NULL AND preferred_arm_id IS NULL) OR (verdict = 'arm') = (preferred_arm_id IS NOT NULL)", name=op.f('ck_study_gold_answers_arm_iff_arm_verdict')),
    sa.CheckConstraint('(cc IS NULL OR cc BETWEEN 1 AND 5) AND (sc IS NULL OR sc BETWEEN 1 AND 5) AND (sa IS NULL OR sa BETWEEN 1 AND 5)', name=op.f('ck_study_gold_answers_scores_1_to_5')),
    sa.CheckConstraint('(verdict IS NULL) = (cc IS NOT NULL AND sc IS NOT NULL AND sa IS NOT NULL)', name=op.f('ck_study_gold_answers_verdict_or_scores')),
    sa.ForeignKeyConstraint(['created_by'], ['users.id'], name=op.f('fk_study_gold_answers_created_by_users')),
    sa.ForeignKeyConstraint(['item_id'], ['study_items.id'], name=op.f('fk_study_gold_answers_item_id_study_items'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['preferred_arm_id'], ['study_arms.id'], name=op.f('fk_study_gold_answers_preferred_arm_id_study_arms'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_study_gold_answers')),
    sa.UniqueConstraint('item_id', name=op.f('uq_study_gold_answers_item_id'))
    )
    op.create_table('study_leases',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('item_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('leased_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['item_id'], ['study_items.id'], name=op.f('fk_study_leases_item_id_study_items'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_study_leases_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_study_leases')),
    sa.UniqueConstraint('item_id', 'user_id', name=op.f('uq_study_leases_item_id_user_id'))
    )


def downgrade() -> None:
    op.drop_table('study_leases')
    op.drop_table('study_gold_answers')
    with op.batch_alter_table('study_answers', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_study_answers_user_id'))
        batch_op.drop_index(batch_op.f('ix_study_answers_item_id'))

    op.drop_table('study_answers')
    with op.batch_alter_table('study_items', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_study_items_study_id'))

    op.drop_table('study_items')
    with op.batch_alter_table('study_images', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_study_images_scenario_id'))

    op.drop_table('study_images')
    op.drop_table('study_arms')
    with op.batch_alter_table('studies', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_studies_round_id'))

    op.drop_table('studies')
