"""Approval chains, delegations, the webhook outbox, inbox sessions and application webhooks

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 11:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('applications') as batch:
        batch.add_column(sa.Column('webhook_url', sa.Text(), nullable=True))
        batch.add_column(sa.Column('webhook_secret_wrapped', sa.LargeBinary(), nullable=True))
    with op.batch_alter_table('sign_requests') as batch:
        batch.add_column(sa.Column('delegation_id', sa.String(length=64), nullable=True))
        batch.add_column(sa.Column('requested_credential_id', sa.String(length=64), nullable=True))
    with op.batch_alter_table('official_sessions') as batch:
        batch.add_column(sa.Column('kind', sa.String(length=16), server_default='api', nullable=False))
        batch.add_column(sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=True))
    op.create_table('approval_steps',
    sa.Column('request_id', sa.String(length=64), nullable=False),
    sa.Column('position', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('official_id', sa.String(length=64), nullable=False),
    sa.Column('assignee_official_id', sa.String(length=64), nullable=False),
    sa.Column('delegation_id', sa.String(length=64), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('approval_id', sa.String(length=64), nullable=True),
    sa.Column('decided_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['assignee_official_id'], ['officials.id'], ),
    sa.ForeignKeyConstraint(['official_id'], ['officials.id'], ),
    sa.ForeignKeyConstraint(['request_id'], ['sign_requests.id'], ),
    sa.PrimaryKeyConstraint('request_id', 'position')
    )
    op.create_index('ix_approval_steps_assignee_state', 'approval_steps', ['assignee_official_id', 'state'])
    op.create_table('delegations',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('delegator_official_id', sa.String(length=64), nullable=False),
    sa.Column('deputy_official_id', sa.String(length=64), nullable=False),
    sa.Column('starts_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ends_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('reason', sa.Text(), server_default='', nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_by', sa.String(length=64), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_by', sa.String(length=64), nullable=True),
    sa.ForeignKeyConstraint(['delegator_official_id'], ['officials.id'], ),
    sa.ForeignKeyConstraint(['deputy_official_id'], ['officials.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_delegations_delegator', 'delegations', ['delegator_official_id'])
    op.create_table('webhook_events',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('application_id', sa.String(length=64), nullable=False),
    sa.Column('request_id', sa.String(length=64), nullable=True),
    sa.Column('event_type', sa.String(length=64), nullable=False),
    sa.Column('payload_json', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('abandoned_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('claimed_by', sa.String(length=64), nullable=True),
    sa.Column('claimed_until', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['application_id'], ['applications.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_webhook_events_due', 'webhook_events', ['delivered_at', 'next_attempt_at'])
    op.create_index('ix_webhook_events_request', 'webhook_events', ['request_id', 'created_at'])
    op.create_table('webhook_attempts',
    sa.Column('event_id', sa.String(length=64), nullable=False),
    sa.Column('attempt', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('duration_ms', sa.Integer(), nullable=False),
    sa.Column('status_code', sa.Integer(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('instance', sa.String(length=64), nullable=True),
    sa.ForeignKeyConstraint(['event_id'], ['webhook_events.id'], ),
    sa.PrimaryKeyConstraint('event_id', 'attempt')
    )


def downgrade() -> None:
    op.drop_table('webhook_attempts')
    op.drop_index('ix_webhook_events_request', table_name='webhook_events')
    op.drop_index('ix_webhook_events_due', table_name='webhook_events')
    op.drop_table('webhook_events')
    op.drop_index('ix_delegations_delegator', table_name='delegations')
    op.drop_table('delegations')
    op.drop_index('ix_approval_steps_assignee_state', table_name='approval_steps')
    op.drop_table('approval_steps')
    with op.batch_alter_table('official_sessions') as batch:
        batch.drop_column('last_seen_at')
        batch.drop_column('kind')
    with op.batch_alter_table('sign_requests') as batch:
        batch.drop_column('requested_credential_id')
        batch.drop_column('delegation_id')
    with op.batch_alter_table('applications') as batch:
        batch.drop_column('webhook_secret_wrapped')
        batch.drop_column('webhook_url')
