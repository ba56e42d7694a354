"""human review: who labelled an object, when a scene's labels were reviewed; the input a
job was given for each scene

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 10:00:00

- ``detected_objects.source``: ``model`` (the pipeline; every existing row) or ``human`` (a
  review imported with ``modomo annotations import``).
- ``scenes.reviewed_at``: when people's labels replaced the model's; a later detection run no
  longer replaces that scene's objects.
- ``job_scenes.input``: the input as this job was given it (a path, a URL), which may differ
  from the scene's ``source_key`` (where the same image was first stored).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("detected_objects") as batch_op:
        batch_op.add_column(
            sa.Column("source", sa.String(length=16), server_default="model", nullable=False)
        )
    with op.batch_alter_table("scenes") as batch_op:
        batch_op.add_column(sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("job_scenes") as batch_op:
        batch_op.add_column(sa.Column("input", sa.String(length=2048), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("job_scenes") as batch_op:
        batch_op.drop_column("input")
    with op.batch_alter_table("scenes") as batch_op:
        batch_op.drop_column("reviewed_at")
    with op.batch_alter_table("detected_objects") as batch_op:
        batch_op.drop_column("source")
