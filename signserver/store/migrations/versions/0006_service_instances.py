"""Service instances with heartbeats; the instance that claimed each request in signing, and its attempts

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 08:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('service_instances',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('node', sa.Text(), nullable=False),
    sa.Column('pid', sa.Integer(), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('sign_requests') as batch:
        batch.add_column(sa.Column('signing_instance', sa.String(length=64), nullable=True))
        batch.add_column(sa.Column('signing_attempts', sa.Integer(), server_default='0', nullable=False))
    op.create_index('ix_sign_requests_state', 'sign_requests', ['state'])


def downgrade() -> None:
    op.drop_index('ix_sign_requests_state', table_name='sign_requests')
    with op.batch_alter_table('sign_requests') as batch:
        batch.drop_column('signing_attempts')
        batch.drop_column('signing_instance')
    op.drop_table('service_instances')
