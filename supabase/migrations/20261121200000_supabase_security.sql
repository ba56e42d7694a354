BEGIN;

-- Running upgrade 0004 -> 0005

ALTER TABLE jobs ADD COLUMN created_by VARCHAR(128);

CREATE INDEX ix_jobs_created_by ON jobs (created_by);

ALTER TABLE jobs ENABLE ROW LEVEL SECURITY;

ALTER TABLE scenes ENABLE ROW LEVEL SECURITY;

ALTER TABLE job_scenes ENABLE ROW LEVEL SECURITY;

ALTER TABLE scene_failures ENABLE ROW LEVEL SECURITY;

ALTER TABLE detected_objects ENABLE ROW LEVEL SECURITY;

ALTER TABLE api_keys ENABLE ROW LEVEL SECURITY;

ALTER TABLE duplicate_groups ENABLE ROW LEVEL SECURITY;

ALTER TABLE alembic_version ENABLE ROW LEVEL SECURITY;

DO $$
DECLARE
    t text;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
        FOREACH t IN ARRAY ARRAY['jobs', 'scenes', 'job_scenes', 'scene_failures', 'detected_objects', 'api_keys', 'duplicate_groups', 'alembic_version'] LOOP
            EXECUTE 'CREATE POLICY modomo_service_role_all ON ' || quote_ident(t)
                || ' FOR ALL TO service_role USING (true) WITH CHECK (true)';
        END LOOP;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated')
        AND EXISTS (
            SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
            WHERE n.nspname = 'auth' AND p.proname = 'uid'
        ) THEN
        CREATE POLICY modomo_authenticated_read ON scenes
            FOR SELECT TO authenticated USING (true);
        CREATE POLICY modomo_authenticated_read ON detected_objects
            FOR SELECT TO authenticated USING (true);
        CREATE POLICY modomo_authenticated_read ON duplicate_groups
            FOR SELECT TO authenticated USING (true);
        CREATE POLICY modomo_authenticated_read_own ON jobs
            FOR SELECT TO authenticated USING (created_by = (SELECT auth.uid())::text);
        CREATE POLICY modomo_authenticated_read_own ON job_scenes
            FOR SELECT TO authenticated USING (EXISTS (SELECT 1 FROM jobs WHERE jobs.id = job_scenes.job_id AND jobs.created_by = (SELECT auth.uid())::text));
        CREATE POLICY modomo_authenticated_read_own ON scene_failures
            FOR SELECT TO authenticated USING (EXISTS (SELECT 1 FROM jobs WHERE jobs.id = scene_failures.job_id AND jobs.created_by = (SELECT auth.uid())::text));
    END IF;
END $$;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN
        REVOKE ALL ON api_keys FROM anon;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
        REVOKE ALL ON api_keys FROM authenticated;
    END IF;
END $$;

DO $$
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
END $$;

UPDATE alembic_version SET version_num='0005' WHERE alembic_version.version_num = '0004';

COMMIT;

