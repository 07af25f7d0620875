"""Roles, the HSM key inventory, four-eyes changes, policy versions and key usage counters

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05 02:00:00
"""
from datetime import datetime, timezone

from alembic import op
import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives import serialization


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('officials', sa.Column('roles', sa.Text(), server_default='official', nullable=False))
    op.create_table('hsm_keys',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('key_id_hex', sa.String(length=128), nullable=False),
    sa.Column('key_label', sa.Text(), nullable=False),
    sa.Column('key_type', sa.String(length=8), nullable=False),
    sa.Column('key_size', sa.Integer(), nullable=False),
    sa.Column('public_key_der', sa.LargeBinary(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('credential_id', sa.String(length=64), nullable=True),
    sa.Column('certificate_der', sa.LargeBinary(), nullable=True),
    sa.Column('chain_pem', sa.Text(), nullable=True),
    sa.Column('cert_serial_hex', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_by', sa.String(length=64), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['credential_id'], ['credentials.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('key_id_hex'),
    sa.UniqueConstraint('key_label')
    )
    op.create_table('admin_changes',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('summary', sa.Text(), nullable=False),
    sa.Column('payload_json', sa.Text(), nullable=False),
    sa.Column('requested_by', sa.String(length=64), nullable=False),
    sa.Column('requested_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('decided_by', sa.String(length=64), nullable=True),
    sa.Column('decided_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('decision_note', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['decided_by'], ['officials.id'], ),
    sa.ForeignKeyConstraint(['requested_by'], ['officials.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('policy_versions',
    sa.Column('version', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('documents_json', sa.Text(), nullable=False),
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.Column('author_id', sa.String(length=64), nullable=False),
    sa.Column('approver_id', sa.String(length=64), nullable=False),
    sa.Column('change_id', sa.String(length=64), nullable=True),
    sa.Column('applied_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('version')
    )
    op.create_table('key_usage',
    sa.Column('credential_id', sa.String(length=64), nullable=False),
    sa.Column('application_id', sa.String(length=64), nullable=False),
    sa.Column('period', sa.String(length=16), nullable=False),
    sa.Column('count', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['credential_id'], ['credentials.id'], ),
    sa.PrimaryKeyConstraint('credential_id', 'application_id', 'period')
    )
    _backfill()


def _backfill() -> None:
    """Inventory the keys of existing credentials, and give seal approvers the seal holder role."""
    connection = op.get_bind()
    now = datetime.now(timezone.utc)
    rows = connection.execute(sa.text(
        "SELECT id, kind, key_id_hex, key_label, key_type, key_size, certificate_der, chain_pem, cert_serial_hex,"
        " approver_official_id, created_at FROM credentials"
    )).mappings().all()
    for row in rows:
        certificate = x509.load_der_x509_certificate(bytes(row["certificate_der"]))
        public_key_der = certificate.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        connection.execute(sa.text(
            "INSERT INTO hsm_keys (id, key_id_hex, key_label, key_type, key_size, public_key_der, state,"
            " credential_id, certificate_der, chain_pem, cert_serial_hex, created_at, created_by, updated_at)"
            " VALUES (:id, :key_id_hex, :key_label, :key_type, :key_size, :public_key_der, 'active',"
            " :credential_id, :certificate_der, :chain_pem, :cert_serial_hex, :created_at, 'migration', :now)"
        ), {
            "id": "key_" + row["key_id_hex"][:20], "key_id_hex": row["key_id_hex"], "key_label": row["key_label"],
            "key_type": row["key_type"], "key_size": row["key_size"], "public_key_der": public_key_der,
            "credential_id": row["id"], "certificate_der": row["certificate_der"], "chain_pem": row["chain_pem"],
            "cert_serial_hex": row["cert_serial_hex"], "created_at": row["created_at"], "now": now,
        })
        if row["kind"] == "seal" and row["approver_official_id"]:
            connection.execute(sa.text(
                "UPDATE officials SET roles = 'official,seal_holder' WHERE id = :id AND roles = 'official'"
            ), {"id": row["approver_official_id"]})


def downgrade() -> None:
    op.drop_table('key_usage')
    op.drop_table('policy_versions')
    op.drop_table('admin_changes')
    op.drop_table('hsm_keys')
    with op.batch_alter_table('officials') as batch:
        batch.drop_column('roles')
