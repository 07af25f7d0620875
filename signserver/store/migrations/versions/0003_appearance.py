"""Credential appearance profiles: signature and seal images, seal diameter, default appearance

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06 10:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('credential_profiles',
    sa.Column('credential_id', sa.String(length=64), nullable=False),
    sa.Column('signature_image', sa.LargeBinary(), nullable=True),
    sa.Column('seal_image', sa.LargeBinary(), nullable=True),
    sa.Column('seal_diameter_mm', sa.Float(), nullable=True),
    sa.Column('default_appearance', sa.String(length=16), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_by', sa.String(length=128), nullable=False),
    sa.ForeignKeyConstraint(['credential_id'], ['credentials.id'], ),
    sa.PrimaryKeyConstraint('credential_id')
    )


def downgrade() -> None:
    op.drop_table('credential_profiles')
