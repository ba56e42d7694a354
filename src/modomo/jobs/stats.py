"""Job statistics for monitoring: counts by status, recent failures, scene throughput.

Each is one aggregate query, cheap enough for a dashboard polled every second or two.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import case, func, select

from modomo.db.models import (
    DetectedObject,
    ItemStatus,
    Job,
    JobScene,
    JobStatus,
    Scene,
    SceneFailure,
    utcnow,
)
from modomo.db.session import session_scope
from modomo.jobs.lifecycle import job_record

__all__ = ["job_status_counts", "recent_failures", "recent_jobs", "recent_scenes", "throughput"]


def _owned(query: Any, owners: Sequence[str] | None) -> Any:
    """``query`` restricted to the jobs created by ``owners`` (None: every job)."""
    return query if owners is None else query.where(Job.created_by.in_(list(owners)))


def job_status_counts(owners: Sequence[str] | None = None) -> dict[str, int]:
    """How many jobs are in each status (every status present, zeros included).

    Args:
        owners: only the jobs whose ``created_by`` is one of these; None for every job.
    """
    with session_scope() as session:
        query = _owned(select(Job.status, func.count()), owners).group_by(Job.status)
        rows = session.execute(query).all()
    counts = dict.fromkeys((*JobStatus.ACTIVE, *JobStatus.FINAL), 0)
    counts.update({status: int(n) for status, n in rows})
    return counts


def recent_jobs(limit: int = 10, owners: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """The active jobs, then the most recently created others, up to ``limit`` (of
    ``owners`` only, as :func:`job_status_counts`)."""
    with session_scope() as session:
        active = Job.status.in_(JobStatus.ACTIVE)
        query = (
            _owned(select(Job), owners)
            .order_by(case((active, 0), else_=1), Job.created_at.desc(), Job.id)
            .limit(limit)
        )
        return [job_record(job) for job in session.scalars(query)]


def recent_failures(limit: int = 10, owners: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """The latest scene failures with their reasons, newest first (in the jobs of ``owners``
    only, as :func:`job_status_counts`)."""
    with session_scope() as session:
        query = (
            select(
                SceneFailure.job_id,
                SceneFailure.scene_id,
                Scene.source_key,
                SceneFailure.stage,
                SceneFailure.error,
                SceneFailure.created_at,
            )
            .join(Scene, Scene.id == SceneFailure.scene_id)
            .order_by(SceneFailure.id.desc())
            .limit(limit)
        )
        if owners is not None:
            query = query.join(Job, Job.id == SceneFailure.job_id).where(
                Job.created_by.in_(list(owners))
            )
        rows = session.execute(query).all()
    return [
        {
            "job_id": str(r[0]) if r[0] else None,
            "scene_id": str(r[1]),
            "source_key": r[2],
            "stage": r[3],
            "error": r[4],
            "created_at": r[5].isoformat() if r[5] else None,
        }
        for r in rows
    ]


def throughput(minutes: int = 10) -> list[dict[str, Any]]:
    """Scene outcomes per minute over the last ``minutes`` minutes, oldest first: each
    ``{"minute": ISO start, "done": n, "failed": m}`` (from ``job_scenes.updated_at``)."""
    now = utcnow().replace(second=0, microsecond=0) + timedelta(minutes=1)
    starts = [now - timedelta(minutes=minutes - i) for i in range(minutes)]
    columns = []
    for start in starts:
        in_minute = (JobScene.updated_at >= start) & (
            JobScene.updated_at < start + timedelta(minutes=1)
        )
        for status in (ItemStatus.DONE, ItemStatus.FAILED):
            columns.append(func.sum(case((in_minute & (JobScene.status == status), 1), else_=0)))
    with session_scope() as session:
        row = session.execute(
            select(*columns).where(JobScene.updated_at >= starts[0], JobScene.status != "pending")
        ).one()
    return [
        {
            "minute": start.isoformat(),
            "done": int(row[2 * i] or 0),
            "failed": int(row[2 * i + 1] or 0),
        }
        for i, start in enumerate(starts)
    ]


def recent_scenes(limit: int = 8) -> list[dict[str, Any]]:
    """The scenes with the most recently detected objects, with their object counts."""
    with session_scope() as session:
        latest = session.scalars(
            select(DetectedObject.scene_id)
            .order_by(DetectedObject.created_at.desc())
            .limit(50 * limit)
        )
        scene_ids = list(dict.fromkeys(latest))[:limit]
        if not scene_ids:
            return []
        rows = session.execute(
            select(Scene.id, Scene.source_key, func.count(DetectedObject.id))
            .join(DetectedObject, DetectedObject.scene_id == Scene.id)
            .where(Scene.id.in_(scene_ids))
            .group_by(Scene.id, Scene.source_key)
        ).all()
    by_id = {r[0]: r for r in rows}
    return [
        {"id": str(sid), "source_key": by_id[sid][1], "objects": int(by_id[sid][2])}
        for sid in scene_ids
        if sid in by_id
    ]
