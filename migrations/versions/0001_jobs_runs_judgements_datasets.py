"""Create jobs, datasets, runs, judgements and pairwise judgements.

Revision ID: 0001
Revises: 
Create Date: 2026-12-04 19:58:13.283913
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('datasets',
    sa.Column('id', sa.UUID(), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('version', sa.String(length=80), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('source', sa.String(length=20), nullable=False),
    sa.Column('license', sa.Text(), nullable=True),
    sa.Column('item_count', sa.Integer(), nullable=False),
    sa.Column('items', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_datasets')),
    sa.UniqueConstraint('name', 'version', name=op.f('uq_datasets_name_version'))
    )
    op.create_table('jobs',
    sa.Column('id', sa.UUID(), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('request', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('items', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('models', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('repetitions', sa.Integer(), nullable=False),
    sa.Column('total_runs', sa.Integer(), nullable=False),
    sa.Column('dataset_name', sa.String(length=64), nullable=True),
    sa.Column('dataset_version', sa.String(length=80), nullable=True),
    sa.Column('judge_model', sa.String(length=128), nullable=True),
    sa.Column('schedule_id', sa.Uuid(), nullable=True),
    sa.Column('simulated', sa.Boolean(), nullable=False),
    sa.Column('result', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("kind IN ('evaluation', 'batch', 'comparison', 'dataset', 'scheduled')", name=op.f('ck_jobs_kind')),
    sa.CheckConstraint("status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')", name=op.f('ck_jobs_status')),
    sa.CheckConstraint('total_runs >= 0', name=op.f('ck_jobs_total_runs')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_jobs'))
    )
    op.create_index('ix_jobs_created_at', 'jobs', ['created_at'], unique=False)
    op.create_index('ix_jobs_status', 'jobs', ['status'], unique=False)
    op.create_table('runs',
    sa.Column('id', sa.UUID(), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('job_id', sa.UUID(), nullable=False),
    sa.Column('item_id', sa.String(length=200), nullable=False),
    sa.Column('repetition', sa.Integer(), nullable=False),
    sa.Column('model', sa.String(length=128), nullable=False),
    sa.Column('provider', sa.String(length=32), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('dataset_name', sa.String(length=64), nullable=True),
    sa.Column('dataset_version', sa.String(length=80), nullable=True),
    sa.Column('category', sa.String(length=100), nullable=True),
    sa.Column('prompt', sa.Text(), nullable=False),
    sa.Column('params', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('response', sa.Text(), nullable=True),
    sa.Column('finish_reason', sa.String(length=32), nullable=True),
    sa.Column('input_tokens', sa.Integer(), nullable=True),
    sa.Column('output_tokens', sa.Integer(), nullable=True),
    sa.Column('total_tokens', sa.Integer(), nullable=True),
    sa.Column('tokens_estimated', sa.Boolean(), nullable=False),
    sa.Column('total_ms', sa.Float(), nullable=True),
    sa.Column('time_to_first_token_ms', sa.Float(), nullable=True),
    sa.Column('tokens_per_second', sa.Float(), nullable=True),
    sa.Column('decode_tokens_per_second', sa.Float(), nullable=True),
    sa.Column('inter_token_latency_ms', sa.Float(), nullable=True),
    sa.Column('rate_limit_wait_ms', sa.Float(), nullable=False),
    sa.Column('retry_wait_ms', sa.Float(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('cost_usd', sa.Float(), nullable=True),
    sa.Column('error_reason', sa.String(length=64), nullable=True),
    sa.Column('error_message', sa.Text(), nullable=True),
    sa.Column('simulated', sa.Boolean(), nullable=False),
    sa.Column('injected', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("status IN ('succeeded', 'failed')", name=op.f('ck_runs_status')),
    sa.CheckConstraint('repetition >= 0', name=op.f('ck_runs_repetition')),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_runs_job_id_jobs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_runs')),
    sa.UniqueConstraint('job_id', 'item_id', 'model', 'repetition', name=op.f('uq_runs_job_id_item_id_model_repetition'))
    )
    op.create_index('ix_runs_dataset', 'runs', ['dataset_name', 'dataset_version'], unique=False)
    op.create_index('ix_runs_model_created_at', 'runs', ['model', 'created_at'], unique=False)
    op.create_table('judgements',
    sa.Column('id', sa.UUID(), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('run_id', sa.UUID(), nullable=False),
    sa.Column('judge_model', sa.String(length=128), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('overall_score', sa.Float(), nullable=True),
    sa.Column('clarity', sa.Float(), nullable=True),
    sa.Column('accuracy', sa.Float(), nullable=True),
    sa.Column('completeness', sa.Float(), nullable=True),
    sa.Column('relevance', sa.Float(), nullable=True),
    sa.Column('style_match', sa.Float(), nullable=True),
    sa.Column('feedback', sa.Text(), nullable=True),
    sa.Column('score_std_dev', sa.Float(), nullable=True),
    sa.Column('samples', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('parsed', sa.Boolean(), nullable=False),
    sa.Column('unscored_reason', sa.Text(), nullable=True),
    sa.Column('raw_output', sa.Text(), nullable=True),
    sa.Column('repairs', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('input_tokens', sa.Integer(), nullable=True),
    sa.Column('output_tokens', sa.Integer(), nullable=True),
    sa.Column('cost_usd', sa.Float(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("status = 'unscored' OR overall_score BETWEEN 0 AND 10", name=op.f('ck_judgements_overall_score')),
    sa.CheckConstraint("status IN ('scored', 'unscored')", name=op.f('ck_judgements_status')),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_judgements_run_id_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_judgements')),
    sa.UniqueConstraint('run_id', name=op.f('uq_judgements_run_id'))
    )
    op.create_index('ix_judgements_judge_model', 'judgements', ['judge_model'], unique=False)
    op.create_table('pairwise_judgements',
    sa.Column('id', sa.UUID(), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('job_id', sa.UUID(), nullable=True),
    sa.Column('run_a_id', sa.UUID(), nullable=False),
    sa.Column('run_b_id', sa.UUID(), nullable=False),
    sa.Column('judge_model', sa.String(length=128), nullable=False),
    sa.Column('verdict_original', sa.String(length=8), nullable=True),
    sa.Column('verdict_swapped', sa.String(length=8), nullable=True),
    sa.Column('outcome', sa.String(length=8), nullable=True),
    sa.Column('consistent', sa.Boolean(), nullable=True),
    sa.Column('raw_original', sa.Text(), nullable=True),
    sa.Column('raw_swapped', sa.Text(), nullable=True),
    sa.Column('unscored_reason', sa.Text(), nullable=True),
    sa.Column('cost_usd', sa.Float(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("outcome IS NULL OR outcome IN ('a', 'b', 'tie')", name=op.f('ck_pairwise_judgements_outcome')),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_pairwise_judgements_job_id_jobs'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['run_a_id'], ['runs.id'], name=op.f('fk_pairwise_judgements_run_a_id_runs'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['run_b_id'], ['runs.id'], name=op.f('fk_pairwise_judgements_run_b_id_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_pairwise_judgements')),
    sa.UniqueConstraint('run_a_id', 'run_b_id', 'judge_model', name=op.f('uq_pairwise_judgements_run_a_id_run_b_id_judge_model'))
    )


def downgrade() -> None:
    op.drop_table('pairwise_judgements')
    op.drop_index('ix_judgements_judge_model', table_name='judgements')
    op.drop_table('judgements')
    op.drop_index('ix_runs_model_created_at', table_name='runs')
    op.drop_index('ix_runs_dataset', table_name='runs')
    op.drop_table('runs')
    op.drop_index('ix_jobs_status', table_name='jobs')
    op.drop_index('ix_jobs_created_at', table_name='jobs')
    op.drop_table('jobs')
    op.drop_table('datasets')
