BEGIN;

-- Running upgrade 0006 -> 0007

ALTER TABLE detected_objects ADD COLUMN source VARCHAR(16) DEFAULT 'model' NOT NULL;

ALTER TABLE scenes ADD COLUMN reviewed_at TIMESTAMP WITH TIME ZONE;

ALTER TABLE job_scenes ADD COLUMN input VARCHAR(2048);

UPDATE alembic_version SET version_num='0007' WHERE alembic_version.version_num = '0006';

COMMIT;

