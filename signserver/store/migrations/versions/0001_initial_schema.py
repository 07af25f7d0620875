"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-12-04 20:26:12.514369
"""
from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('applications',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('agency', sa.Text(), server_default='', nullable=False),
    sa.Column('api_key_sha256', sa.String(length=64), nullable=False),
    sa.Column('basic_username', sa.String(length=128), nullable=True),
    sa.Column('basic_password_hash', sa.Text(), nullable=True),
    sa.Column('enabled', sa.Boolean(), server_default='1', nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('api_key_sha256'),
    sa.UniqueConstraint('basic_username')
    )
    op.create_table('audit_head',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('audit_log',
    sa.Column('seq', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor_type', sa.String(length=32), nullable=False),
    sa.Column('actor_id', sa.String(length=64), nullable=False),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('request_id', sa.String(length=64), nullable=True),
    sa.Column('dossier_code', sa.String(length=128), nullable=True),
    sa.Column('document_sha256', sa.String(length=64), nullable=True),
    sa.Column('key_id_hex', sa.String(length=128), nullable=True),
    sa.Column('cert_serial_hex', sa.String(length=64), nullable=True),
    sa.Column('details_json', sa.Text(), nullable=False),
    sa.Column('prev_hash', sa.String(length=64), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('seq'),
    sa.UniqueConstraint('hash')
    )
    op.create_table('officials',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('username', sa.String(length=128), nullable=False),
    sa.Column('full_name', sa.Text(), nullable=False),
    sa.Column('title', sa.Text(), server_default='', nullable=False),
    sa.Column('agency', sa.Text(), server_default='', nullable=False),
    sa.Column('password_hash', sa.Text(), nullable=False),
    sa.Column('totp_secret_wrapped', sa.LargeBinary(), nullable=False),
    sa.Column('otp_failed_count', sa.Integer(), server_default='0', nullable=False),
    sa.Column('otp_locked_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('enabled', sa.Boolean(), server_default='1', nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('username')
    )
    op.create_table('tsa_serials',
    sa.Column('serial', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('issued_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('serial')
    )
    op.create_table('approvals',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('official_id', sa.String(length=64), nullable=False),
    sa.Column('otp_step', sa.BigInteger(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['official_id'], ['officials.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('credentials',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('key_id_hex', sa.String(length=128), nullable=False),
    sa.Column('key_label', sa.Text(), nullable=False),
    sa.Column('key_type', sa.String(length=8), nullable=False),
    sa.Column('key_size', sa.Integer(), nullable=False),
    sa.Column('certificate_der', sa.LargeBinary(), nullable=False),
    sa.Column('chain_pem', sa.Text(), nullable=False),
    sa.Column('cert_serial_hex', sa.String(length=64), nullable=False),
    sa.Column('owner_official_id', sa.String(length=64), nullable=True),
    sa.Column('approver_official_id', sa.String(length=64), nullable=True),
    sa.Column('display_name', sa.Text(), nullable=False),
    sa.Column('signer_title', sa.Text(), server_default='', nullable=False),
    sa.Column('agency', sa.Text(), server_default='', nullable=False),
    sa.Column('status', sa.String(length=16), server_default='active', nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['approver_official_id'], ['officials.id'], ),
    sa.ForeignKeyConstraint(['owner_official_id'], ['officials.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('key_id_hex')
    )
    op.create_table('official_sessions',
    sa.Column('token_sha256', sa.String(length=64), nullable=False),
    sa.Column('official_id', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['official_id'], ['officials.id'], ),
    sa.PrimaryKeyConstraint('token_sha256')
    )
    op.create_table('otp_used_steps',
    sa.Column('official_id', sa.String(length=64), nullable=False),
    sa.Column('step', sa.BigInteger(), nullable=False),
    sa.Column('used_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['official_id'], ['officials.id'], ),
    sa.PrimaryKeyConstraint('official_id', 'step')
    )
    op.create_table('sign_requests',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('application_id', sa.String(length=64), nullable=False),
    sa.Column('idempotency_key', sa.String(length=255), nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('dossier_code', sa.String(length=128), nullable=False),
    sa.Column('title', sa.Text(), nullable=False),
    sa.Column('document_type', sa.String(length=128), nullable=True),
    sa.Column('credential_id', sa.String(length=64), nullable=False),
    sa.Column('approver_official_id', sa.String(length=64), nullable=True),
    sa.Column('signature_format', sa.String(length=16), nullable=False),
    sa.Column('signature_level', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.Text(), server_default='', nullable=False),
    sa.Column('location', sa.Text(), server_default='', nullable=False),
    sa.Column('placement_json', sa.Text(), nullable=True),
    sa.Column('document_name', sa.Text(), nullable=False),
    sa.Column('document_path', sa.Text(), nullable=False),
    sa.Column('document_sha256', sa.String(length=64), nullable=False),
    sa.Column('document_size', sa.BigInteger(), nullable=False),
    sa.Column('page_count', sa.Integer(), nullable=True),
    sa.Column('pdf_password_wrapped', sa.LargeBinary(), nullable=True),
    sa.Column('state', sa.String(length=32), nullable=False),
    sa.Column('state_reason', sa.String(length=64), nullable=True),
    sa.Column('policy_rule', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('approval_id', sa.String(length=64), nullable=True),
    sa.Column('decided_by', sa.String(length=64), nullable=True),
    sa.Column('decided_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('rejection_reason', sa.Text(), nullable=True),
    sa.Column('signed_path', sa.Text(), nullable=True),
    sa.Column('signed_sha256', sa.String(length=64), nullable=True),
    sa.Column('signed_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['application_id'], ['applications.id'], ),
    sa.ForeignKeyConstraint(['approver_official_id'], ['officials.id'], ),
    sa.ForeignKeyConstraint(['credential_id'], ['credentials.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('application_id', 'idempotency_key', name='uq_sign_requests_idempotency')
    )
    op.create_table('approval_items',
    sa.Column('approval_id', sa.String(length=64), nullable=False),
    sa.Column('request_id', sa.String(length=64), nullable=False),
    sa.Column('document_sha256', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['approval_id'], ['approvals.id'], ),
    sa.ForeignKeyConstraint(['request_id'], ['sign_requests.id'], ),
    sa.PrimaryKeyConstraint('approval_id', 'request_id')
    )


def downgrade() -> None:
    op.drop_table('approval_items')
    op.drop_table('sign_requests')
    op.drop_table('otp_used_steps')
    op.drop_table('official_sessions')
    op.drop_table('credentials')
    op.drop_table('approvals')
    op.drop_table('tsa_serials')
    op.drop_table('officials')
    op.drop_table('audit_log')
    op.drop_table('audit_head')
    op.drop_table('applications')
