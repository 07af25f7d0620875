"""CSC API: bearer tokens of auth/login and signature activation data (SAD)

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04 22:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('csc_tokens',
    sa.Column('token_sha256', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('grant_id', sa.String(length=64), nullable=False),
    sa.Column('application_id', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['application_id'], ['applications.id'], ),
    sa.PrimaryKeyConstraint('token_sha256')
    )
    op.create_index('ix_csc_tokens_grant_id', 'csc_tokens', ['grant_id'], unique=False)
    op.create_table('csc_sads',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('sad_sha256', sa.String(length=64), nullable=False),
    sa.Column('application_id', sa.String(length=64), nullable=False),
    sa.Column('credential_id', sa.String(length=64), nullable=False),
    sa.Column('official_id', sa.String(length=64), nullable=False),
    sa.Column('hash_algorithm', sa.String(length=16), nullable=True),
    sa.Column('num_signatures', sa.Integer(), nullable=False),
    sa.Column('otp_step', sa.BigInteger(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['application_id'], ['applications.id'], ),
    sa.ForeignKeyConstraint(['credential_id'], ['credentials.id'], ),
    sa.ForeignKeyConstraint(['official_id'], ['officials.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('sad_sha256')
    )
    op.create_table('csc_sad_hashes',
    sa.Column('sad_id', sa.String(length=64), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('hash_hex', sa.String(length=128), nullable=False),
    sa.Column('used_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['sad_id'], ['csc_sads.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('sad_id', 'position')
    )


def downgrade() -> None:
    op.drop_table('csc_sad_hashes')
    op.drop_table('csc_sads')
    op.drop_index('ix_csc_tokens_grant_id', table_name='csc_tokens')
    op.drop_table('csc_tokens')
