"""detected_objects, scenes.depth_info

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> sa.types.TypeEngine:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.add_column("scenes", sa.Column("depth_info", _json(), nullable=True))
    op.create_table(
        "detected_objects",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("scene_id", sa.Uuid(), nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=True),
        sa.Column("bbox", _json(), nullable=False),
        sa.Column("category", sa.String(length=64), nullable=False),
        sa.Column("taxonomy_group", sa.String(length=64), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("mask_rle", _json(), nullable=True),
        sa.Column("mask_area", sa.Integer(), nullable=True),
        sa.Column("mask_box_iou", sa.Float(), nullable=True),
        sa.Column("depth_median", sa.Float(), nullable=True),
        sa.Column("depth_min", sa.Float(), nullable=True),
        sa.Column("depth_max", sa.Float(), nullable=True),
        sa.Column("colors", _json(), nullable=True),
        sa.Column("models", _json(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["scene_id"], ["scenes.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        op.f("ix_detected_objects_scene_id"), "detected_objects", ["scene_id"], unique=False
    )
    op.create_index(
        op.f("ix_detected_objects_category"), "detected_objects", ["category"], unique=False
    )
    op.create_index(
        op.f("ix_detected_objects_taxonomy_group"),
        "detected_objects",
        ["taxonomy_group"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_detected_objects_taxonomy_group"), table_name="detected_objects")
    op.drop_index(op.f("ix_detected_objects_category"), table_name="detected_objects")
    op.drop_index(op.f("ix_detected_objects_scene_id"), table_name="detected_objects")
    op.drop_table("detected_objects")
    op.drop_column("scenes", "depth_info")
