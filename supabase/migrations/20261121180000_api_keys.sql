BEGIN;

-- Running upgrade 0002 -> 0003

CREATE TABLE api_keys (
    id UUID NOT NULL, 
    name VARCHAR(128) NOT NULL, 
    prefix VARCHAR(16) NOT NULL, 
    key_hash VARCHAR(64) NOT NULL, 
    role VARCHAR(16) NOT NULL, 
    created_at TIMESTAMP WITH TIME ZONE NOT NULL, 
    last_used_at TIMESTAMP WITH TIME ZONE, 
    revoked_at TIMESTAMP WITH TIME ZONE, 
    PRIMARY KEY (id), 
    UNIQUE (key_hash)
);

CREATE INDEX ix_job_scenes_updated_at ON job_scenes (updated_at);

CREATE INDEX ix_detected_objects_created_at ON detected_objects (created_at);

UPDATE alembic_version SET version_num='0003' WHERE alembic_version.version_num = '0002';

COMMIT;

