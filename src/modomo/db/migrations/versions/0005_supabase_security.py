"""Supabase security: jobs.created_by, row-level security and policies, jobs in Realtime

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-21 20:00:00

``jobs.created_by`` (both dialects) is the API principal that created a job: a JWT ``sub``
(a Supabase auth user's uuid, as text) or ``key:<api key id>``; NULL for jobs started from
the CLI or before this revision.

The rest is PostgreSQL only (a no-op on SQLite), the same statements online and offline
(``supabase/migrations/``), so that one SQL file runs on plain PostgreSQL and on Supabase:

- Row-level security is enabled on every table, ``alembic_version`` included (Supabase
  exposes ``public`` through its REST API and flags tables there without RLS). It is not
  FORCEd: Modomo's own processes (API, workers, ``modomo db upgrade``) connect as the tables'
  owner (``postgres`` on Supabase) or a superuser, which RLS does not restrict.
- Policies, created only where Supabase's roles exist (and, for the ``authenticated`` ones,
  ``auth.uid()``): ``service_role`` may do anything on every table (it also has BYPASSRLS on
  Supabase; the policy states it); ``authenticated`` may read ``scenes``,
  ``detected_objects`` and ``duplicate_groups``, the ``jobs`` it created
  (``created_by = auth.uid()::text``) and the ``job_scenes`` and ``scene_failures`` of those
  jobs; nothing on ``api_keys``, ``alembic_version``; ``anon`` has no policy, so it sees no
  row of any table. The table privileges Supabase grants by default on new tables in
  ``public`` are revoked on ``api_keys`` for ``anon`` and ``authenticated``.
  On plain PostgreSQL (no such roles) RLS is on with no policy: only the owner and
  superusers see rows, which is what Modomo itself uses.
- ``jobs`` is added to the ``supabase_realtime`` publication when that publication exists,
  so a front-end can subscribe to a job's progress (Realtime applies the SELECT policies:
  a user receives changes of their own jobs only).

The downgrade drops the policies, disables RLS, takes ``jobs`` out of the publication and
drops the column; it does not grant ``api_keys`` back to ``anon``/``authenticated`` (with
RLS off that would expose the key digests).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = (
    "jobs",
    "scenes",
    "job_scenes",
    "scene_failures",
    "detected_objects",
    "api_keys",
    "duplicate_groups",
)
POLICIES = (
    "modomo_service_role_all",
    "modomo_authenticated_read",
    "modomo_authenticated_read_own",
)
# auth.uid() in a sub-select: evaluated once per statement, not once per row.
_UID = "(SELECT auth.uid())::text"
_OWN_JOB = (
    "EXISTS (SELECT 1 FROM jobs WHERE jobs.id = {table}.job_id AND jobs.created_by = " + _UID + ")"
)


def _tables() -> tuple[str, ...]:
    return (*TABLES, op.get_context().version_table)


def _policies_sql() -> str:
    array = ", ".join(f"'{table}'" for table in _tables())
    read_all = "\n".join(
        f"        CREATE POLICY modomo_authenticated_read ON {table}\n"
        "            FOR SELECT TO authenticated USING (true);"
        for table in ("scenes", "detected_objects", "duplicate_groups")
    )
    read_own = "\n".join(
        f"        CREATE POLICY modomo_authenticated_read_own ON {table}\n"
        f"            FOR SELECT TO authenticated USING ({condition});"
        for table, condition in (
            ("jobs", f"created_by = {_UID}"),
            ("job_scenes", _OWN_JOB.format(table="job_scenes")),
            ("scene_failures", _OWN_JOB.format(table="scene_failures")),
        )
    )
    return f"""DO $$
DECLARE
    t text;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
        FOREACH t IN ARRAY ARRAY[{array}] LOOP
            EXECUTE 'CREATE POLICY modomo_service_role_all ON ' || quote_ident(t)
                || ' FOR ALL TO service_role USING (true) WITH CHECK (true)';
        END LOOP;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated')
        AND EXISTS (
            SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
            WHERE n.nspname = 'auth' AND p.proname = 'uid'
        ) THEN
{read_all}
{read_own}
    END IF;
END $$"""


REVOKE_API_KEYS = """DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN
        REVOKE ALL ON api_keys FROM anon;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
        REVOKE ALL ON api_keys FROM authenticated;
    END IF;
END $$"""

PUBLISH_JOBS = """DO $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM pg_publication WHERE pubname = 'supabase_realtime' AND NOT puballtables
    ) AND NOT EXISTS (
        SELECT 1 FROM pg_publication_tables
        WHERE pubname = 'supabase_realtime' AND schemaname = current_schema()
            AND tablename = 'jobs'
    ) THEN
        ALTER PUBLICATION supabase_realtime ADD TABLE jobs;
    END IF;
END $$"""

UNPUBLISH_JOBS = """DO $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM pg_publication_tables
        WHERE pubname = 'supabase_realtime' AND schemaname = current_schema()
            AND tablename = 'jobs'
    ) AND EXISTS (
        SELECT 1 FROM pg_publication WHERE pubname = 'supabase_realtime' AND NOT puballtables
    ) THEN
        ALTER PUBLICATION supabase_realtime DROP TABLE jobs;
    END IF;
END $$"""


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.add_column(sa.Column("created_by", sa.String(length=128), nullable=True))
        batch_op.create_index(batch_op.f("ix_jobs_created_by"), ["created_by"], unique=False)
    if op.get_context().dialect.name != "postgresql":
        return
    for table in _tables():
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    op.execute(_policies_sql())
    op.execute(REVOKE_API_KEYS)
    op.execute(PUBLISH_JOBS)


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute(UNPUBLISH_JOBS)
        for table in _tables():
            for policy in POLICIES:
                op.execute(f"DROP POLICY IF EXISTS {policy} ON {table}")
            op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.drop_index(batch_op.f("ix_jobs_created_by"))
        batch_op.drop_column("created_by")
