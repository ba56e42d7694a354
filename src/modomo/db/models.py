"""SQLAlchemy 2 models: the same schema on SQLite and PostgreSQL (Alembic owns it).

Tables:

- ``jobs``: one row per job, with counters updated by atomic SQL increments.
- ``scenes``: one row per distinct image (content sha256 unique).
- ``job_scenes``: which scenes a job covers and each one's outcome in that job. It is the
  job's ledger: counting an outcome flips a ``pending`` row, so a redelivered task never
  counts a scene twice, and a retry or the stale-job reaper knows exactly what is unfinished.
- ``scene_failures``: the dead-letter record, one row per (scene, job, stage) with the reason.
- ``detected_objects``: the objects the detection pipeline found in a scene; re-running the
  pipeline on a scene replaces them.
- ``api_keys``: the API's credentials, stored as SHA-256 digests (never the key itself).
- ``duplicate_groups``: scenes that are near-duplicates of each other (pHash or embedding),
  each group with one canonical scene; ``scenes.duplicate_group_id`` names a scene's group.
- ``job_stages``: per job and pipeline stage (detect, segment, depth, colors, classify …) how
  many scenes passed it and how many failed there, counted with the ledger (exactly once).
- ``schedules``: recurring jobs (a cron expression in a time zone); the scheduler tick
  creates one job per due time.

Image embeddings (``scenes.clip_embedding``, ``detected_objects.embedding``) are pgvector
``vector(d)`` columns on PostgreSQL when the extension is available (Supabase has it), a
``double precision[]`` otherwise, and JSON on SQLite; :class:`Embedding` reads and writes
all three as lists of floats.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.dialects.postgresql import ARRAY, DOUBLE_PRECISION, JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator, TypeEngine

__all__ = [
    "ApiKey",
    "Base",
    "DetectedObject",
    "DuplicateGroup",
    "Embedding",
    "Job",
    "JobScene",
    "JobStage",
    "JobStatus",
    "Priority",
    "Schedule",
    "ItemStatus",
    "Scene",
    "SceneFailure",
    "SceneStatus",
    "utcnow",
]

# none_as_null: Python None is SQL NULL (so "no colours yet" is IS NULL), not JSON null.
JSONType = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class Embedding(TypeDecorator[list[float]]):
    """An L2-normalised embedding, a list of floats in Python.

    On PostgreSQL the column is ``vector(d)`` (pgvector) or ``double precision[]``; both take
    a bound ``float8[]`` (pgvector defines an assignment cast from it), and a ``vector`` is
    read back as its text form ``[x,y,…]``, parsed here. JSON on SQLite.
    """

    impl = JSON
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(ARRAY(DOUBLE_PRECISION()))
        return dialect.type_descriptor(JSON(none_as_null=True))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        return None if value is None else [float(v) for v in value]

    def process_result_value(self, value: Any, dialect: Dialect) -> list[float] | None:
        if isinstance(value, str):  # pgvector's text form
            return [float(v) for v in value.strip("[]").split(",")] if value.strip("[]") else []
        return None if value is None else [float(v) for v in value]


class JobStatus:
    """Values of ``jobs.status``. A job in a final status never changes status again.

    ``scheduled``: waiting for its ``run_at``; the scheduler tick makes it ``pending`` (its
    start task sent) when due. ``expired``: not started by its ``expires_at``; its tasks never
    run. ``QUEUED`` are the statuses of a job whose work may be in flight (the stale-job
    reaper's concern); ``ACTIVE`` adds ``scheduled`` (a cancel still applies).
    """

    SCHEDULED = "scheduled"
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    QUEUED = (PENDING, RUNNING)
    ACTIVE = (SCHEDULED, PENDING, RUNNING)
    FINAL = (COMPLETED, FAILED, CANCELLED, EXPIRED)
    ALL = (*ACTIVE, *FINAL)


class Priority:
    """Job priorities and the Celery message priority each maps to.

    On Redis, kombu keeps one list per priority step and serves the lowest number first (0 is
    the highest priority there); ``priority_steps`` is set to exactly these four values
    (:func:`modomo.celery_app.celery_config`), so each level is its own sub-queue.
    """

    URGENT = "urgent"
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"
    MESSAGE: dict[str, int] = {URGENT: 0, HIGH: 3, NORMAL: 6, LOW: 9}
    NAMES = tuple(MESSAGE)
    STEPS = tuple(sorted(MESSAGE.values()))


class ItemStatus:
    """Values of ``job_scenes.status``."""

    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"


class SceneStatus:
    """Values of ``scenes.status``: ``failed`` means the image itself is unusable."""

    INGESTED = "ingested"
    FAILED = "failed"


class Base(DeclarativeBase):
    """Declarative base of every Modomo table."""

    type_annotation_map = {dict[str, Any]: JSONType, list[Any]: JSONType}


class Job(Base):
    """A unit of work a user asked for (``jobs``)."""

    __tablename__ = "jobs"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    type: Mapped[str] = mapped_column(String(32), index=True)
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.PENDING, index=True)
    total: Mapped[int] = mapped_column(Integer, default=0)
    processed: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    message: Mapped[str | None] = mapped_column(Text)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    result: Mapped[dict[str, Any] | None] = mapped_column()
    error: Mapped[str | None] = mapped_column(Text)
    celery_task_ids: Mapped[list[Any]] = mapped_column(default=list)
    parent_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("jobs.id", ondelete="SET NULL")
    )
    # The API principal that created the job: a JWT "sub" (a Supabase auth user's uuid) or
    # "key:<api key id>"; NULL from the CLI. Supabase's RLS policies show users their own jobs.
    created_by: Mapped[str | None] = mapped_column(String(128), index=True)
    priority: Mapped[str] = mapped_column(
        String(8), default=Priority.NORMAL, server_default=Priority.NORMAL
    )
    # a scheduled job waits for run_at; a job not started by expires_at becomes expired
    run_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # {"name": task name, "kwargs": {...}, "task_id": id}: what the scheduler tick sends
    start_task: Mapped[dict[str, Any] | None] = mapped_column()
    schedule_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("schedules.id", ondelete="SET NULL"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )

    __table_args__ = (Index("ix_jobs_status_run_at", "status", "run_at"),)


class Scene(Base):
    """One distinct image and what the stages found in it (``scenes``)."""

    __tablename__ = "scenes"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    source: Mapped[str] = mapped_column(String(16))
    source_key: Mapped[str] = mapped_column(String(2048), unique=True)
    image_url: Mapped[str | None] = mapped_column(Text)
    image_key: Mapped[str | None] = mapped_column(String(512))
    sha256: Mapped[str | None] = mapped_column(String(64), unique=True)
    phash: Mapped[str | None] = mapped_column(String(16), index=True)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    room_type: Mapped[str | None] = mapped_column(String(64), index=True)
    style: Mapped[str | None] = mapped_column(String(64), index=True)
    scene_type: Mapped[str | None] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default=SceneStatus.INGESTED, index=True)
    colors: Mapped[dict[str, Any] | None] = mapped_column()
    depth_key: Mapped[str | None] = mapped_column(String(512))
    depth_model: Mapped[str | None] = mapped_column(String(128))
    # {"unit", "offset", "scale", "min", "max", "width", "height"}: value = offset + scale * png
    depth_info: Mapped[dict[str, Any] | None] = mapped_column()
    # {"room_type"|"style"|"scene_type": {"label", "probability", "top_k"}, "model", ...}
    classification: Mapped[dict[str, Any] | None] = mapped_column()
    clip_embedding: Mapped[list[float] | None] = mapped_column(Embedding, deferred=True)
    embedding_model: Mapped[str | None] = mapped_column(String(128))
    duplicate_group_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("duplicate_groups.id", ondelete="SET NULL"), index=True
    )
    # "metadata" is reserved on declarative classes, hence the attribute name.
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    # when people's labels replaced the model's (``modomo annotations import``): a later
    # detection run no longer replaces this scene's objects
    reviewed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class JobScene(Base):
    """A scene's membership and outcome in one job (``job_scenes``)."""

    __tablename__ = "job_scenes"

    job_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    scene_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("scenes.id", ondelete="CASCADE"), primary_key=True
    )
    status: Mapped[str] = mapped_column(String(16), default=ItemStatus.PENDING)
    # the input as this job was given it (the scene's source_key is where it was first stored)
    input: Mapped[str | None] = mapped_column(String(2048))
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )

    __table_args__ = (
        Index("ix_job_scenes_job_status", "job_id", "status"),
        Index("ix_job_scenes_updated_at", "updated_at"),
    )


class SceneFailure(Base):
    """Why a scene failed a stage of a job: the dead-letter record (``scene_failures``)."""

    __tablename__ = "scene_failures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    scene_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("scenes.id", ondelete="CASCADE"))
    job_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("jobs.id", ondelete="CASCADE"), index=True
    )
    stage: Mapped[str] = mapped_column(String(32))
    error: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (UniqueConstraint("scene_id", "job_id", "stage"),)


class DetectedObject(Base):
    """One object found in a scene by the detection pipeline (``detected_objects``).

    ``bbox`` is ``[x, y, w, h]`` in pixels of the stored image (COCO convention: top-left
    corner, width, height). ``mask_rle`` is a COCO RLE (``{"size": [h, w], "counts": str}``,
    pycocotools' compressed form); ``mask_area`` its pixel count; ``mask_box_iou`` the IoU of
    the mask's bounding box with the detector's box that prompted it. Depth statistics are in
    the unit of the scene's depth map (``scenes.depth_info.unit``). ``source`` says who
    labelled it: ``model`` (the pipeline) or ``human`` (a review imported by ``modomo
    annotations import``).
    """

    __tablename__ = "detected_objects"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    scene_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("scenes.id", ondelete="CASCADE"), index=True
    )
    job_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("jobs.id", ondelete="SET NULL")
    )
    bbox: Mapped[list[Any]] = mapped_column()
    category: Mapped[str] = mapped_column(String(64), index=True)
    taxonomy_group: Mapped[str] = mapped_column(String(64), index=True)
    confidence: Mapped[float] = mapped_column(Float)
    mask_rle: Mapped[dict[str, Any] | None] = mapped_column()
    mask_area: Mapped[int | None] = mapped_column(Integer)
    mask_box_iou: Mapped[float | None] = mapped_column(Float)
    depth_median: Mapped[float | None] = mapped_column(Float)
    depth_min: Mapped[float | None] = mapped_column(Float)
    depth_max: Mapped[float | None] = mapped_column(Float)
    colors: Mapped[dict[str, Any] | None] = mapped_column()
    # {"detector": "yolo11n.pt@8.4.190", "segmenter": ..., "depth": ...}
    models: Mapped[dict[str, Any]] = mapped_column(default=dict)
    source: Mapped[str] = mapped_column(String(16), default="model", server_default="model")
    embedding: Mapped[list[float] | None] = mapped_column(Embedding, deferred=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, index=True
    )


class ApiKey(Base):
    """An API credential (``api_keys``): the SHA-256 hex digest of the key, never the key.

    Keys are 256-bit random tokens, so a plain digest is enough (no password-hashing KDF is
    needed against guessing). ``prefix`` is the key's first characters, shown in listings so
    a person can tell keys apart. A revoked key keeps its row, with ``revoked_at`` set.
    """

    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(128))
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class DuplicateGroup(Base):
    """Scenes that are near-duplicates of each other (``duplicate_groups``).

    ``method`` says which evidence joined them: ``phash`` (perceptual hashes within
    ``max_distance`` bits), ``embedding`` (cosine similarity at least ``min_similarity``) or
    both (``phash+embedding``). The canonical scene is the one an export keeps: the largest
    image, then the oldest. A de-duplication run replaces every group.
    """

    __tablename__ = "duplicate_groups"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    canonical_scene_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("scenes.id", ondelete="CASCADE", use_alter=True)
    )
    method: Mapped[str] = mapped_column(String(32))
    size: Mapped[int] = mapped_column(Integer)
    max_distance: Mapped[int | None] = mapped_column(Integer)
    min_similarity: Mapped[float | None] = mapped_column(Float)
    job_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("jobs.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class JobStage(Base):
    """One pipeline stage's counts in a job (``job_stages``).

    ``processed`` scenes passed the stage, ``failed`` failed at it (later stages never saw
    them). Counted in the same transaction as the ledger flip, so a redelivered batch never
    counts a scene twice. For a job's first stage ``processed + failed`` equals the job's
    ``processed + failed``; for each later stage it equals the previous stage's ``processed``.
    """

    __tablename__ = "job_stages"

    job_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    stage: Mapped[str] = mapped_column(String(16), primary_key=True)
    processed: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)


class Schedule(Base):
    """A recurring job (``schedules``): a cron expression evaluated in a time zone.

    ``job_type`` names a schedulable job (:data:`modomo.jobs.scheduling.JOB_TASKS`) and
    ``params`` its task's arguments. ``next_run_at`` (UTC) is when the scheduler tick creates
    the next job; it moves forward in the same statement that claims the run, so each due time
    creates one job even when two ticks race.
    """

    __tablename__ = "schedules"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    cron: Mapped[str] = mapped_column(String(128))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    job_type: Mapped[str] = mapped_column(String(32))
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    priority: Mapped[str] = mapped_column(String(8), default=Priority.NORMAL)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    last_run_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    next_run_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    last_job_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    created_by: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )
