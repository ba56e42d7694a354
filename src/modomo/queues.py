"""Broker queues: their depths, and purging one of them without losing track of its jobs.

Both go through kombu's channel API, so they work on Redis and on the embedded SQLite
broker alike. On Redis, kombu keeps a queue's messages in one list per priority level
(``name``, ``name\\x06\\x163`` …, from the transport's ``priority_steps``); its
``queue_declare`` counts every level and its ``basic_get`` takes from every level, so depths
and purges cover the priority sub-queues with no key names spelled out here.

A purge drains the queue message by message instead of deleting the lists: each message
says which job and scenes it carried, and those scenes are counted as failed with the
reason, so a purged job ends (``failed`` or ``completed``) instead of waiting forever for
batches that will never run.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from celery import Celery

from modomo.celery_app import QUEUES
from modomo.jobs.lifecycle import fail_lost_work
from modomo.tasks.base import job_arguments

__all__ = ["PurgeReport", "UnknownQueue", "purge_queue", "queue_depths"]

log = logging.getLogger(__name__)


class UnknownQueue(LookupError):
    """The name is not one of Modomo's queues (:data:`modomo.celery_app.QUEUES`)."""


@dataclass
class PurgeReport:
    """What a purge removed: message count, the tasks by name, the jobs it touched."""

    queue: str
    messages: int = 0
    tasks: dict[str, int] = field(default_factory=dict)
    jobs: list[str] = field(default_factory=list)


def queue_depths(celery: Celery, names: Iterable[str] = QUEUES) -> dict[str, int]:
    """Messages waiting in each queue (every priority level counted); reserved or running
    tasks are not in the queue and not counted.

    Raises:
        kombu.exceptions.OperationalError: the broker cannot be reached.
    """
    depths: dict[str, int] = {}
    with celery.pool.acquire(block=True) as connection:
        channel = connection.default_channel
        for name in names:
            depths[name] = channel.queue_declare(queue=name, passive=False).message_count
    return depths


def purge_queue(celery: Celery, name: str) -> PurgeReport:
    """Remove every message waiting in queue ``name`` (all its priority levels).

    The scenes of each removed batch are counted as failed in their job with the reason
    ``purged from queue NAME``; a job whose start task was removed is marked failed.

    Raises:
        UnknownQueue: ``name`` is not a Modomo queue.
        kombu.exceptions.OperationalError: the broker cannot be reached.
    """
    if name not in QUEUES:
        raise UnknownQueue(f"no queue named {name!r}; the queues are {', '.join(QUEUES)}")
    report = PurgeReport(queue=name)
    reason = f"purged from queue {name} by an admin"
    jobs: dict[str, None] = {}
    with celery.pool.acquire(block=True) as connection:
        channel = connection.default_channel
        channel.queue_declare(queue=name, passive=False)
        while (message := channel.basic_get(name, no_ack=True)) is not None:
            report.messages += 1
            task = str(message.headers.get("task", "?"))
            report.tasks[task] = report.tasks.get(task, 0) + 1
            job_id, scene_ids = _job_work(message)
            if job_id is None:
                continue
            jobs[job_id] = None
            try:
                fail_lost_work(job_id, scene_ids, stage="queue", reason=reason)
            except Exception:  # a foreign message must not stop the purge
                log.warning("could not account purged task %s of job %s", task, job_id)
    report.jobs = list(jobs)
    return report


def _job_work(message: Any) -> tuple[str | None, list[str] | None]:
    """The job id and scene ids a Modomo task message carries (``task(job_id, scene_ids,
    ...)`` or keyword arguments of those names); ``(None, None)`` for anything else, and no
    scene ids for a job's start task."""
    try:
        args, kwargs, _ = message.decode()
    except Exception:
        return None, None
    job_id, scene_ids = job_arguments(tuple(args or ()), dict(kwargs or {}))
    job = _as_uuid(job_id)
    if job is None:
        return None, None
    if isinstance(scene_ids, str):  # reprocess_scene_objects(job_id, scene_id)
        scene_ids = [scene_ids]
    if isinstance(scene_ids, list):
        ids = [_as_uuid(s) for s in scene_ids]
        if ids and all(ids):
            return job, [s for s in ids if s]
    return job, None


def _as_uuid(value: Any) -> str | None:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        return None
