"""classification, embeddings (pgvector when available), duplicate groups

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21 06:00:00

On PostgreSQL the embedding columns become pgvector ``vector(d)`` (d = ``MODOMO_EMBEDDING_DIM``)
with an HNSW cosine index when the ``vector`` extension can be created (Supabase has it), and
``double precision[]`` otherwise. Offline (``modomo db sql``, for Supabase) the same choice is
made by the database that runs the SQL: a ``DO`` block checks ``pg_available_extensions``.
"""

import logging
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = logging.getLogger("alembic.runtime.migration")


def _json() -> sa.types.TypeEngine:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def _offline_embeddings(vector: str) -> None:
    """The embedding columns in offline SQL: the database that runs it picks the type.

    Like the online path: ``vector(d)`` with the HNSW index when the extension is available
    and can be created, ``double precision[]`` otherwise. The ALTERs are EXECUTEd so that
    ``vector`` is resolved only where it exists. (No ``%`` in the SQL: offline output is
    compiled for psycopg's pyformat, which would double it.)
    """
    op.execute(
        f"""DO $$
DECLARE
    column_type text := 'double precision[]';
BEGIN
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'vector') THEN
        BEGIN
            CREATE EXTENSION IF NOT EXISTS vector;
            column_type := '{vector}';
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'cannot create the vector extension: using double precision[]';
        END;
    END IF;
    EXECUTE 'ALTER TABLE scenes ALTER COLUMN clip_embedding TYPE ' || column_type || ' USING NULL';
    EXECUTE 'ALTER TABLE detected_objects ADD COLUMN embedding ' || column_type;
    IF column_type = '{vector}' THEN
        EXECUTE 'CREATE INDEX ix_scenes_clip_embedding_hnsw ON scenes '
            || 'USING hnsw (clip_embedding vector_cosine_ops)';
    END IF;
END $$"""
    )


def _pgvector() -> bool:
    """Whether the ``vector`` extension is (now) installed; creates it when available."""
    bind = op.get_bind()
    available = bind.execute(
        sa.text("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'")
    ).scalar()
    if not available:
        log.info("pgvector is not available: embeddings are stored as double precision[]")
        return False
    try:
        with bind.begin_nested():
            bind.execute(sa.text("CREATE EXTENSION IF NOT EXISTS vector"))
    except sa.exc.DBAPIError as exc:  # e.g. not allowed to create extensions
        log.warning("cannot create the vector extension (%s): using double precision[]", exc)
        return False
    return True


def upgrade() -> None:
    from modomo.config import get_settings

    op.create_table(
        "duplicate_groups",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("canonical_scene_id", sa.Uuid(), nullable=False),
        sa.Column("method", sa.String(length=32), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("max_distance", sa.Integer(), nullable=True),
        sa.Column("min_similarity", sa.Float(), nullable=True),
        sa.Column("job_id", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["canonical_scene_id"], ["scenes.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("scenes") as batch_op:
        batch_op.add_column(sa.Column("classification", _json(), nullable=True))
        batch_op.add_column(sa.Column("embedding_model", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("duplicate_group_id", sa.Uuid(), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_scenes_duplicate_group_id"), ["duplicate_group_id"], unique=False
        )
        batch_op.create_foreign_key(
            "fk_scenes_duplicate_group_id",
            "duplicate_groups",
            ["duplicate_group_id"],
            ["id"],
            ondelete="SET NULL",
        )
    if op.get_context().dialect.name != "postgresql":
        op.add_column("detected_objects", sa.Column("embedding", sa.JSON(), nullable=True))
        return  # scenes.clip_embedding is already JSON there
    vector = f"vector({get_settings().embedding_dim})"
    if context.is_offline_mode():
        _offline_embeddings(vector)
        return
    column_type = vector if _pgvector() else "double precision[]"
    op.execute(f"ALTER TABLE scenes ALTER COLUMN clip_embedding TYPE {column_type} USING NULL")
    op.execute(f"ALTER TABLE detected_objects ADD COLUMN embedding {column_type}")
    if column_type.startswith("vector"):
        op.execute(
            "CREATE INDEX ix_scenes_clip_embedding_hnsw ON scenes "
            "USING hnsw (clip_embedding vector_cosine_ops)"
        )


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_scenes_clip_embedding_hnsw")
        op.execute("ALTER TABLE scenes ALTER COLUMN clip_embedding TYPE jsonb USING NULL")
    op.drop_column("detected_objects", "embedding")
    with op.batch_alter_table("scenes") as batch_op:
        batch_op.drop_constraint("fk_scenes_duplicate_group_id", type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_scenes_duplicate_group_id"))
        batch_op.drop_column("duplicate_group_id")
        batch_op.drop_column("embedding_model")
        batch_op.drop_column("classification")
    op.drop_table("duplicate_groups")
