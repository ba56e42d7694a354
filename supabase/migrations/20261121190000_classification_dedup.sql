BEGIN;

-- Running upgrade 0003 -> 0004

CREATE TABLE duplicate_groups (
    id UUID NOT NULL, 
    canonical_scene_id UUID NOT NULL, 
    method VARCHAR(32) NOT NULL, 
    size INTEGER NOT NULL, 
    max_distance INTEGER, 
    min_similarity FLOAT, 
    job_id UUID, 
    created_at TIMESTAMP WITH TIME ZONE NOT NULL, 
    PRIMARY KEY (id), 
    FOREIGN KEY(canonical_scene_id) REFERENCES scenes (id) ON DELETE CASCADE, 
    FOREIGN KEY(job_id) REFERENCES jobs (id) ON DELETE SET NULL
);

ALTER TABLE scenes ADD COLUMN classification JSONB;

ALTER TABLE scenes ADD COLUMN embedding_model VARCHAR(128);

ALTER TABLE scenes ADD COLUMN duplicate_group_id UUID;

CREATE INDEX ix_scenes_duplicate_group_id ON scenes (duplicate_group_id);

ALTER TABLE scenes ADD CONSTRAINT fk_scenes_duplicate_group_id FOREIGN KEY(duplicate_group_id) REFERENCES duplicate_groups (id) ON DELETE SET NULL;

DO $$
DECLARE
    column_type text := 'double precision[]';
BEGIN
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'vector') THEN
        BEGIN
            CREATE EXTENSION IF NOT EXISTS vector;
            column_type := 'vector(512)';
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'cannot create the vector extension: using double precision[]';
        END;
    END IF;
    EXECUTE 'ALTER TABLE scenes ALTER COLUMN clip_embedding TYPE ' || column_type || ' USING NULL';
    EXECUTE 'ALTER TABLE detected_objects ADD COLUMN embedding ' || column_type;
    IF column_type = 'vector(512)' THEN
        EXECUTE 'CREATE INDEX ix_scenes_clip_embedding_hnsw ON scenes '
            || 'USING hnsw (clip_embedding vector_cosine_ops)';
    END IF;
END $$;

UPDATE alembic_version SET version_num='0004' WHERE alembic_version.version_num = '0003';

COMMIT;

