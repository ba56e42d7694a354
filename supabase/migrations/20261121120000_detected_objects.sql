BEGIN;

-- Running upgrade 0001 -> 0002

ALTER TABLE scenes ADD COLUMN depth_info JSONB;

CREATE TABLE detected_objects (
    id UUID NOT NULL, 
    scene_id UUID NOT NULL, 
    job_id UUID, 
    bbox JSONB NOT NULL, 
    category VARCHAR(64) NOT NULL, 
    taxonomy_group VARCHAR(64) NOT NULL, 
    confidence FLOAT NOT NULL, 
    mask_rle JSONB, 
    mask_area INTEGER, 
    mask_box_iou FLOAT, 
    depth_median FLOAT, 
    depth_min FLOAT, 
    depth_max FLOAT, 
    colors JSONB, 
    models JSONB NOT NULL, 
    created_at TIMESTAMP WITH TIME ZONE NOT NULL, 
    PRIMARY KEY (id), 
    FOREIGN KEY(job_id) REFERENCES jobs (id) ON DELETE SET NULL, 
    FOREIGN KEY(scene_id) REFERENCES scenes (id) ON DELETE CASCADE
);

CREATE INDEX ix_detected_objects_scene_id ON detected_objects (scene_id);

CREATE INDEX ix_detected_objects_category ON detected_objects (category);

CREATE INDEX ix_detected_objects_taxonomy_group ON detected_objects (taxonomy_group);

UPDATE alembic_version SET version_num='0002' WHERE alembic_version.version_num = '0001';

COMMIT;

