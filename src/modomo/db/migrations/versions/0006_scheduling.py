"""priorities, scheduled and expiring jobs, recurring schedules, per-stage counts

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-21 09:00:00

- ``jobs``: ``priority`` (urgent/high/normal/low, default normal), ``run_at`` and
  ``expires_at`` (UTC), ``start_task`` (what the scheduler tick sends for a scheduled job),
  ``schedule_id`` (the schedule that created it); an index on ``(status, run_at)`` for the
  tick.
- ``schedules``: recurring jobs (cron expression, time zone, job type, params, priority,
  enabled, last and next run).
- ``job_stages``: per job and pipeline stage, scenes that passed it and scenes that failed
  there.

On PostgreSQL, as revision 0005 did for the other tables: row-level security on the two new
tables, ``service_role`` may do anything (where that role exists), and signed-in users may
read the stage counts of their own jobs; ``schedules`` is for the service only.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NEW_TABLES = ("schedules", "job_stages")
POLICIES = ("modomo_service_role_all", "modomo_authenticated_read_own")

POLICIES_SQL = """DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
        CREATE POLICY modomo_service_role_all ON schedules
            FOR ALL TO service_role USING (true) WITH CHECK (true);
        CREATE POLICY modomo_service_role_all ON job_stages
            FOR ALL TO service_role USING (true) WITH CHECK (true);
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated')
        AND EXISTS (
            SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
            WHERE n.nspname = 'auth' AND p.proname = 'uid'
        ) THEN
        CREATE POLICY modomo_authenticated_read_own ON job_stages
            FOR SELECT TO authenticated USING (EXISTS (SELECT 1 FROM jobs
                WHERE jobs.id = job_stages.job_id
                AND jobs.created_by = (SELECT auth.uid())::text));
    END IF;
END $$"""


def _json() -> sa.types.TypeEngine:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "schedules",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("cron", sa.String(length=128), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("job_type", sa.String(length=32), nullable=False),
        sa.Column("params", _json(), nullable=False),
        sa.Column("priority", sa.String(length=8), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("last_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_job_id", sa.Uuid(), nullable=True),
        sa.Column("created_by", sa.String(length=128), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_index(op.f("ix_schedules_next_run_at"), "schedules", ["next_run_at"], unique=False)
    op.create_table(
        "job_stages",
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("stage", sa.String(length=16), nullable=False),
        sa.Column("processed", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("job_id", "stage"),
    )
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.add_column(
            sa.Column("priority", sa.String(length=8), server_default="normal", nullable=False)
        )
        batch_op.add_column(sa.Column("run_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("start_task", _json(), nullable=True))
        batch_op.add_column(sa.Column("schedule_id", sa.Uuid(), nullable=True))
        batch_op.create_index(batch_op.f("ix_jobs_schedule_id"), ["schedule_id"], unique=False)
        batch_op.create_index("ix_jobs_status_run_at", ["status", "run_at"], unique=False)
        batch_op.create_foreign_key(
            "fk_jobs_schedule_id",
            "schedules",
            ["schedule_id"],
            ["id"],
            ondelete="SET NULL",
        )
    if op.get_context().dialect.name != "postgresql":
        return
    for table in NEW_TABLES:
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    op.execute(POLICIES_SQL)


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.drop_constraint("fk_jobs_schedule_id", type_="foreignkey")
        batch_op.drop_index("ix_jobs_status_run_at")
        batch_op.drop_index(batch_op.f("ix_jobs_schedule_id"))
        for column in ("schedule_id", "start_task", "expires_at", "run_at", "priority"):
            batch_op.drop_column(column)
    op.drop_table("job_stages")
    op.drop_index(op.f("ix_schedules_next_run_at"), table_name="schedules")
    op.drop_table("schedules")
