BEGIN;

CREATE TABLE alembic_version (
    version_num VARCHAR(32) NOT NULL, 
    CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
);

-- Running upgrade  -> 0001

CREATE TABLE jobs (
    id UUID NOT NULL, 
    type VARCHAR(32) NOT NULL, 
    status VARCHAR(16) NOT NULL, 
    total INTEGER NOT NULL, 
    processed INTEGER NOT NULL, 
    failed INTEGER NOT NULL, 
    progress FLOAT NOT NULL, 
    message TEXT, 
    params JSONB NOT NULL, 
    result JSONB, 
    error TEXT, 
    celery_task_ids JSONB NOT NULL, 
    parent_id UUID, 
    created_at TIMESTAMP WITH TIME ZONE NOT NULL, 
    started_at TIMESTAMP WITH TIME ZONE, 
    finished_at TIMESTAMP WITH TIME ZONE, 
    updated_at TIMESTAMP WITH TIME ZONE NOT NULL, 
    PRIMARY KEY (id), 
    FOREIGN KEY(parent_id) REFERENCES jobs (id) ON DELETE SET NULL
);

CREATE INDEX ix_jobs_status ON jobs (status);

CREATE INDEX ix_jobs_type ON jobs (type);

CREATE TABLE scenes (
    id UUID NOT NULL, 
    source VARCHAR(16) NOT NULL, 
    source_key VARCHAR(2048) NOT NULL, 
    image_url TEXT, 
    image_key VARCHAR(512), 
    sha256 VARCHAR(64), 
    phash VARCHAR(16), 
    width INTEGER, 
    height INTEGER, 
    room_type VARCHAR(64), 
    style VARCHAR(64), 
    scene_type VARCHAR(16), 
    status VARCHAR(16) NOT NULL, 
    colors JSONB, 
    depth_key VARCHAR(512), 
    depth_model VARCHAR(128), 
    clip_embedding JSONB, 
    metadata JSONB NOT NULL, 
    created_at TIMESTAMP WITH TIME ZONE NOT NULL, 
    updated_at TIMESTAMP WITH TIME ZONE NOT NULL, 
    PRIMARY KEY (id), 
    UNIQUE (sha256), 
    UNIQUE (source_key)
);

CREATE INDEX ix_scenes_phash ON scenes (phash);

CREATE INDEX ix_scenes_room_type ON scenes (room_type);

CREATE INDEX ix_scenes_status ON scenes (status);

CREATE INDEX ix_scenes_style ON scenes (style);

CREATE TABLE job_scenes (
    job_id UUID NOT NULL, 
    scene_id UUID NOT NULL, 
    status VARCHAR(16) NOT NULL, 
    updated_at TIMESTAMP WITH TIME ZONE NOT NULL, 
    PRIMARY KEY (job_id, scene_id), 
    FOREIGN KEY(job_id) REFERENCES jobs (id) ON DELETE CASCADE, 
    FOREIGN KEY(scene_id) REFERENCES scenes (id) ON DELETE CASCADE
);

CREATE INDEX ix_job_scenes_job_status ON job_scenes (job_id, status);

CREATE TABLE scene_failures (
    id SERIAL NOT NULL, 
    scene_id UUID NOT NULL, 
    job_id UUID, 
    stage VARCHAR(32) NOT NULL, 
    error TEXT NOT NULL, 
    attempts INTEGER NOT NULL, 
    created_at TIMESTAMP WITH TIME ZONE NOT NULL, 
    PRIMARY KEY (id), 
    FOREIGN KEY(job_id) REFERENCES jobs (id) ON DELETE CASCADE, 
    FOREIGN KEY(scene_id) REFERENCES scenes (id) ON DELETE CASCADE, 
    UNIQUE (scene_id, job_id, stage)
);

CREATE INDEX ix_scene_failures_job_id ON scene_failures (job_id);

INSERT INTO alembic_version (version_num) VALUES ('0001') RETURNING alembic_version.version_num;

COMMIT;

