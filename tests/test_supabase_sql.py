"""supabase/migrations/*.sql on a real PostgreSQL: the Alembic schema, with row-level security.

Each test creates its own scratch databases (``modomo_supa_<random>``) and drops them. Neither
database has pgvector here, so both store embeddings as ``double precision[]``; on Supabase
(which has the extension) both the SQL files and ``alembic upgrade`` make them ``vector(512)``.

The Supabase test simulates what Supabase provides: the roles ``anon``, ``authenticated`` and
``service_role`` (created when missing and left in place: roles are cluster-wide and another
session may be using them), an ``auth.uid()`` reading the JWT's ``sub``, Supabase's default
grants on new tables in ``public`` and an empty ``supabase_realtime`` publication.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import create_engine, inspect
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from modomo.db.migrate import alembic_config, upgrade
from modomo.db.models import ApiKey, DetectedObject, Job, JobScene, Scene, SceneFailure
from modomo.db.session import get_engine
from tests.support import REPO

pytestmark = pytest.mark.services

PG = "postgres@127.0.0.1:5432"
MIGRATIONS = REPO / "supabase" / "migrations"
TABLES = {
    "alembic_version",
    "api_keys",
    "detected_objects",
    "duplicate_groups",
    "job_scenes",
    "job_stages",
    "jobs",
    "scene_failures",
    "scenes",
    "schedules",
}
SUPABASE_ROLES = ("anon", "authenticated", "service_role")

SIMULATE_SUPABASE = """
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated', 'service_role'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            BEGIN
                EXECUTE 'CREATE ROLE ' || quote_ident(r) || ' NOLOGIN';
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;  -- created meanwhile by a concurrent session
            END;
        END IF;
    END LOOP;
END $$;
CREATE SCHEMA auth;
GRANT USAGE ON SCHEMA auth TO anon, authenticated, service_role;
CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS
    $$ SELECT nullif(current_setting('request.jwt.claim.sub', true), '')::uuid $$;
GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public
    GRANT ALL ON SEQUENCES TO anon, authenticated, service_role;
CREATE PUBLICATION supabase_realtime;
"""


def _conninfo(name: str) -> str:
    return f"postgresql://{PG}/{name}"


def _url(name: str) -> str:
    return f"postgresql+psycopg://{PG}/{name}"


@pytest.fixture
def fresh_database() -> Iterator[Callable[[], str]]:
    """Makes empty scratch databases (their names); drops them all at the end."""
    made: list[str] = []

    def make() -> str:
        name = f"modomo_supa_{secrets.token_hex(4)}"
        try:
            with psycopg.connect(_conninfo("postgres"), autocommit=True, connect_timeout=3) as c:
                c.execute(f'CREATE DATABASE "{name}"')
        except psycopg.OperationalError as exc:
            pytest.skip(f"no PostgreSQL on 127.0.0.1:5432: {exc}")
        made.append(name)
        return name

    yield make
    for name in made:
        get_engine(_url(name)).dispose()  # upgrade() keeps a pooled engine per URL
        with psycopg.connect(_conninfo("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _apply_supabase_sql(name: str) -> None:
    """Each file in order, as Supabase runs them (each has its own BEGIN ... COMMIT)."""
    files = sorted(MIGRATIONS.glob("*.sql"))
    assert files
    with psycopg.connect(_conninfo(name), autocommit=True) as conn:
        for file in files:
            conn.execute(file.read_bytes())


def _schema(name: str) -> dict[str, Any]:
    """Tables, columns (type, nullability, default), keys and indexes, through the inspector."""
    engine = create_engine(_url(name), poolclass=NullPool)
    try:
        insp = inspect(engine)
        schema: dict[str, Any] = {"sequences": sorted(insp.get_sequence_names())}
        for table in sorted(insp.get_table_names()):
            schema[table] = {
                "columns": [
                    (c["name"], str(c["type"].compile(engine.dialect)), c["nullable"], c["default"])
                    for c in insp.get_columns(table)
                ],
                "primary_key": insp.get_pk_constraint(table),
                "foreign_keys": sorted(
                    (
                        fk["name"] or "",
                        tuple(fk["constrained_columns"]),
                        fk["referred_table"],
                        tuple(fk["referred_columns"]),
                        tuple(sorted(fk["options"].items())),
                    )
                    for fk in insp.get_foreign_keys(table)
                ),
                "indexes": sorted(
                    (ix["name"] or "", tuple(map(str, ix["column_names"])), ix["unique"])
                    for ix in insp.get_indexes(table)
                ),
                "unique": sorted(
                    (uc["name"] or "", tuple(uc["column_names"]))
                    for uc in insp.get_unique_constraints(table)
                ),
                "checks": sorted(
                    (ck["name"] or "", ck["sqltext"]) for ck in insp.get_check_constraints(table)
                ),
            }
        return schema
    finally:
        engine.dispose()


def _rls(name: str) -> dict[str, bool]:
    with psycopg.connect(_conninfo(name)) as conn:
        rows = conn.execute(
            "SELECT c.relname, c.relrowsecurity FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'public' AND c.relkind = 'r'"
        ).fetchall()
    return dict(rows)


def _policies(name: str) -> set[tuple[Any, ...]]:
    with psycopg.connect(_conninfo(name)) as conn:
        return set(
            conn.execute(
                "SELECT tablename, policyname, cmd, roles::text FROM pg_policies"
                " WHERE schemaname = 'public'"
            ).fetchall()
        )


def _version(name: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(_conninfo(name)) as conn:
        return conn.execute("SELECT version_num FROM alembic_version").fetchall()


def _head() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head
    return head


def test_supabase_sql_is_the_alembic_schema_with_rls(
    fresh_database: Callable[[], str],
) -> None:
    from_sql, from_alembic = fresh_database(), fresh_database()
    _apply_supabase_sql(from_sql)
    upgrade(_url(from_alembic))

    sql_schema, alembic_schema = _schema(from_sql), _schema(from_alembic)
    assert set(sql_schema) - {"sequences"} == TABLES
    assert sql_schema == alembic_schema
    assert ("created_by", "VARCHAR(128)", True, None) in sql_schema["jobs"]["columns"]
    assert ("ix_jobs_created_by", ("created_by",), False) in sql_schema["jobs"]["indexes"]
    assert _version(from_sql) == _version(from_alembic) == [(_head(),)]

    # RLS on every table. No auth.uid() here, so no policy for signed-in users; a
    # service_role policy only if that (cluster-wide) role exists, e.g. left by the test
    # below. On plain PostgreSQL, then, only the owner and superusers see rows.
    with psycopg.connect(_conninfo("postgres")) as conn:
        service_role = conn.execute(
            "SELECT count(*) FROM pg_roles WHERE rolname = 'service_role'"
        ).fetchone() == (1,)
    for name in (from_sql, from_alembic):
        assert _rls(name) == dict.fromkeys(TABLES, True), name
        assert _policies(name) == (
            {(t, "modomo_service_role_all", "ALL", "{service_role}") for t in TABLES}
            if service_role
            else set()
        )


# ---------------------------------------------------------------------------- Supabase


def _simulate_supabase(name: str) -> None:
    with psycopg.connect(_conninfo(name), autocommit=True) as conn:
        conn.execute(SIMULATE_SUPABASE.encode())


def _seed(name: str, user_a: str, user_b: str) -> dict[str, uuid.UUID]:
    """Two users' jobs, each with a scene membership and a failure; an object; an API key."""
    engine = create_engine(_url(name), poolclass=NullPool)
    try:
        with Session(engine) as session:
            scene = Scene(source="local", source_key=f"seed/{secrets.token_hex(4)}")
            jobs = {
                "a": Job(type="ingest", created_by=user_a),
                "b": Job(type="ingest", created_by=user_b),
                "cli": Job(type="ingest"),
            }
            session.add_all([scene, *jobs.values()])
            session.flush()
            for job in jobs.values():
                session.add(JobScene(job_id=job.id, scene_id=scene.id))
                session.add(SceneFailure(scene_id=scene.id, job_id=job.id, stage="x", error="e"))
            session.add(
                DetectedObject(
                    scene_id=scene.id,
                    bbox=[0, 0, 1, 1],
                    category="chair",
                    taxonomy_group="seating",
                    confidence=0.9,
                )
            )
            session.add(ApiKey(name="k", prefix="mdm_", key_hash="0" * 64, role="admin"))
            session.commit()
            return {key: job.id for key, job in jobs.items()}
    finally:
        engine.dispose()


def _as(name: str, role: str, query: str, sub: str | None = None) -> list[tuple[Any, ...]]:
    """The rows of ``query`` run as ``role`` with the JWT subject ``sub``."""
    with psycopg.connect(_conninfo(name)) as conn:
        conn.execute(f"SET ROLE {role}")
        if sub is not None:
            conn.execute("SELECT set_config('request.jwt.claim.sub', %s, true)", (sub,))
        cursor = conn.execute(query.encode())
        rows = cursor.fetchall() if cursor.description else [(cursor.rowcount,)]
        conn.commit()
        return rows


def _count(name: str, role: str, table: str, sub: str | None = None) -> int:
    return int(_as(name, role, f"SELECT count(*) FROM {table}", sub)[0][0])


@pytest.mark.parametrize("how", ["supabase_sql", "alembic"])
def test_supabase_policies_and_realtime(fresh_database: Callable[[], str], how: str) -> None:
    name = fresh_database()
    _simulate_supabase(name)
    if how == "supabase_sql":
        _apply_supabase_sql(name)
    else:
        upgrade(_url(name))

    assert _rls(name) == dict.fromkeys(TABLES, True)
    policies = _policies(name)
    with psycopg.connect(_conninfo(name)) as conn:
        published = conn.execute(
            "SELECT schemaname, tablename FROM pg_publication_tables"
            " WHERE pubname = 'supabase_realtime'"
        ).fetchall()
    expected = {(t, "modomo_service_role_all", "ALL", "{service_role}") for t in TABLES}
    expected |= {
        (t, "modomo_authenticated_read", "SELECT", "{authenticated}")
        for t in ("scenes", "detected_objects", "duplicate_groups")
    }
    expected |= {
        (t, "modomo_authenticated_read_own", "SELECT", "{authenticated}")
        for t in ("jobs", "job_scenes", "scene_failures", "job_stages")
    }
    assert policies == expected
    assert published == [("public", "jobs")]

    user_a, user_b = str(uuid.uuid4()), str(uuid.uuid4())
    jobs = _seed(name, user_a, user_b)

    # a signed-in user: their own jobs and those jobs' rows; every scene and object
    assert _as(name, "authenticated", "SELECT id FROM jobs", user_a) == [(jobs["a"],)]
    assert _as(name, "authenticated", "SELECT job_id FROM job_scenes", user_a) == [(jobs["a"],)]
    assert _as(name, "authenticated", "SELECT job_id FROM scene_failures", user_b) == [(jobs["b"],)]
    assert _count(name, "authenticated", "scenes", user_a) == 1
    assert _count(name, "authenticated", "detected_objects", user_a) == 1
    assert _count(name, "authenticated", "alembic_version", user_a) == 0
    assert _count(name, "authenticated", "jobs") == 0  # no JWT subject: no jobs
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        _as(name, "authenticated", "SELECT * FROM api_keys", user_a)
    # ... who reads but does not write (Supabase's default grants allow it; RLS does not)
    assert _as(name, "authenticated", "UPDATE jobs SET message = 'x'", user_a) == [(0,)]
    assert _as(name, "authenticated", "DELETE FROM scenes", user_a) == [(0,)]

    # anonymous: nothing
    for table in sorted(TABLES - {"api_keys"}):
        assert _count(name, "anon", table) == 0, table
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        _as(name, "anon", "SELECT * FROM api_keys")

    # the service role reads and writes everything (even without Supabase's BYPASSRLS)
    assert _count(name, "service_role", "jobs") == 3
    assert _count(name, "service_role", "api_keys") == 1
    assert _as(name, "service_role", "UPDATE jobs SET message = 'x'") == [(3,)]

    if how == "alembic":  # the downgrade undoes it all
        from alembic import command

        config = alembic_config(_url(name))
        with get_engine(_url(name)).begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "0004")
        # (the tables of revision 0006 are gone with their policies)
        assert _rls(name) == dict.fromkeys(TABLES - {"job_stages", "schedules"}, False)
        with psycopg.connect(_conninfo(name)) as conn:
            assert conn.execute("SELECT count(*) FROM pg_policies").fetchone() == (0,)
            assert conn.execute(
                "SELECT count(*) FROM pg_publication_tables WHERE pubname = 'supabase_realtime'"
            ).fetchone() == (0,)
        assert "created_by" not in {column[0] for column in _schema(name)["jobs"]["columns"]}
