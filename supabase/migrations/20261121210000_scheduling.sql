BEGIN;

-- Running upgrade 0005 -> 0006

CREATE TABLE schedules (
    id UUID NOT NULL, 
    name VARCHAR(128) NOT NULL, 
    cron VARCHAR(128) NOT NULL, 
    timezone VARCHAR(64) NOT NULL, 
    job_type VARCHAR(32) NOT NULL, 
    params JSONB NOT NULL, 
    priority VARCHAR(8) NOT NULL, 
    enabled BOOLEAN NOT NULL, 
    last_run_at TIMESTAMP WITH TIME ZONE, 
    next_run_at TIMESTAMP WITH TIME ZONE, 
    last_job_id UUID, 
    created_by VARCHAR(128), 
    created_at TIMESTAMP WITH TIME ZONE NOT NULL, 
    updated_at TIMESTAMP WITH TIME ZONE NOT NULL, 
    PRIMARY KEY (id), 
    UNIQUE (name)
);

CREATE INDEX ix_schedules_next_run_at ON schedules (next_run_at);

CREATE TABLE job_stages (
    job_id UUID NOT NULL, 
    stage VARCHAR(16) NOT NULL, 
    processed INTEGER NOT NULL, 
    failed INTEGER NOT NULL, 
    PRIMARY KEY (job_id, stage), 
    FOREIGN KEY(job_id) REFERENCES jobs (id) ON DELETE CASCADE
);

ALTER TABLE jobs ADD COLUMN priority VARCHAR(8) DEFAULT 'normal' NOT NULL;

ALTER TABLE jobs ADD COLUMN run_at TIMESTAMP WITH TIME ZONE;

ALTER TABLE jobs ADD COLUMN expires_at TIMESTAMP WITH TIME ZONE;

ALTER TABLE jobs ADD COLUMN start_task JSONB;

ALTER TABLE jobs ADD COLUMN schedule_id UUID;

CREATE INDEX ix_jobs_schedule_id ON jobs (schedule_id);

CREATE INDEX ix_jobs_status_run_at ON jobs (status, run_at);

ALTER TABLE jobs ADD CONSTRAINT fk_jobs_schedule_id FOREIGN KEY(schedule_id) REFERENCES schedules (id) ON DELETE SET NULL;

ALTER TABLE schedules ENABLE ROW LEVEL SECURITY;

ALTER TABLE job_stages ENABLE ROW LEVEL SECURITY;

DO $$
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
END $$;

UPDATE alembic_version SET version_num='0006' WHERE alembic_version.version_num = '0005';

COMMIT;

