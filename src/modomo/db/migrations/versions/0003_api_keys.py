"""api_keys; indexes for the dashboard (job_scenes.updated_at, detected_objects.created_at)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21 18:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key_hash"),
    )
    op.create_index("ix_job_scenes_updated_at", "job_scenes", ["updated_at"], unique=False)
    op.create_index(
        "ix_detected_objects_created_at", "detected_objects", ["created_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_detected_objects_created_at", table_name="detected_objects")
    op.drop_index("ix_job_scenes_updated_at", table_name="job_scenes")
    op.drop_table("api_keys")
