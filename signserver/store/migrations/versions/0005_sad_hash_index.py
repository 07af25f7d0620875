"""Index the hashes of a SAD, so that a signHash call reads only the rows of its own hashes

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05 05:20:00
"""
from alembic import op


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_csc_sad_hashes_sad_id_hash_hex', 'csc_sad_hashes', ['sad_id', 'hash_hex'])


def downgrade() -> None:
    op.drop_index('ix_csc_sad_hashes_sad_id_hash_hex', table_name='csc_sad_hashes')
