"""Broker queues: their depths, each Redis priority sub-list, and purging one of them without
losing track of its jobs.

Both go through kombu's channel API, so they work on Redis and on the embedded SQLite
broker alike. On Redis, kombu keeps a queue's messages in one list per priority level
(``name``, ``name\\x06\\x163`` …, from the transport's ``priority_steps``); its
``queue_declare`` counts every level and its ``basic_get`` takes from every level, so depths
and purges cover the priority sub-queues with no key names spelled out here.
:func:`priority_lists` does spell them out, with the transport's own naming, for
``modomo queues``: ``redis-cli llen ai_processing`` counts only the priority-0 list.

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
from modomo.db.models import Priority
from modomo.jobs.lifecycle import fail_lost_work
from modomo.tasks.base import job_arguments

__all__ = [
    "NotRedisBroker",
    "listening",
    "PriorityList",
    "PriorityLists",
    "PurgeReport",
    "QueueLists",
    "UnknownQueue",
    "priority_lists",
    "purge_queue",
    "queue_depths",
    "shell_word",
]

log = logging.getLogger(__name__)


class UnknownQueue(LookupError):
    """The name is not one of Modomo's queues (:data:`modomo.celery_app.QUEUES`)."""


class NotRedisBroker(RuntimeError):
    """The broker is not Redis (the embedded SQLite broker): no priority sub-lists."""


@dataclass
class PurgeReport:
    """What a purge removed: message count, the tasks by name, the jobs it touched."""

    queue: str
    messages: int = 0
    tasks: dict[str, int] = field(default_factory=dict)
    jobs: list[str] = field(default_factory=list)


def listening(celery: Celery, timeout: float = 1.0) -> set[str]:
    """The queues some running worker consumes (its ``active_queues``), asked over the
    broker; empty when no worker answers within ``timeout`` seconds."""
    replies = celery.control.inspect(timeout=timeout).active_queues() or {}
    return {str(queue["name"]) for queues in replies.values() for queue in queues or []}


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


@dataclass(frozen=True)
class PriorityList:
    """The Redis list holding one queue's messages of one priority step.

    Attributes:
        priority: the message priority (a step of ``priority_steps``; 0 is served first).
        key: the list's Redis key, any ``global_keyprefix`` included.
        waiting: messages in it (reserved or running tasks are not).
    """

    priority: int
    key: str
    waiting: int

    @property
    def level(self) -> str:
        """The job priority sent at this step (``urgent`` …), or ``""`` for another step."""
        return _LEVELS.get(self.priority, "")

    @property
    def redis_cli(self) -> str:
        """The key as typed on a shell command line: ``redis-cli llen <this>``."""
        return shell_word(self.key)


@dataclass(frozen=True)
class QueueLists:
    """A queue's priority sub-lists, most urgent first."""

    queue: str
    lists: tuple[PriorityList, ...]

    @property
    def total(self) -> int:
        return sum(item.waiting for item in self.lists)


@dataclass(frozen=True)
class PriorityLists:
    """What :func:`priority_lists` read, and where (the Redis database for ``redis-cli -n``)."""

    broker: str
    db: int
    queues: list[QueueLists]

    def as_json(self) -> dict[str, Any]:
        return {
            "broker": self.broker,
            "db": self.db,
            "queues": [
                {
                    "queue": queue.queue,
                    "total": queue.total,
                    "lists": [
                        {
                            "priority": item.priority,
                            "level": item.level,
                            "key": item.key,
                            "redis_cli": item.redis_cli,
                            "waiting": item.waiting,
                        }
                        for item in queue.lists
                    ],
                }
                for queue in self.queues
            ],
        }


_LEVELS = {step: name for name, step in Priority.MESSAGE.items()}


def priority_lists(celery: Celery, names: Iterable[str] = QUEUES) -> PriorityLists:
    """The messages waiting in each Redis list of each queue: one list per step of the
    broker's ``priority_steps``, named by kombu's Redis transport itself (the queue's name for
    step 0, name + ``sep`` + step for the others, after any ``global_keyprefix``).

    Raises:
        UnknownQueue: a name is not a Modomo queue.
        NotRedisBroker: the broker is not Redis.
        kombu.exceptions.OperationalError, redis.RedisError: the broker cannot be reached.
    """
    names = list(names)
    unknown = [name for name in names if name not in QUEUES]
    if unknown:
        raise UnknownQueue(
            f"no queue named {', '.join(map(repr, unknown))}; the queues are {', '.join(QUEUES)}"
        )
    with celery.pool.acquire(block=True) as connection:
        broker = str(connection.as_uri(mask="**" if connection.password else ""))
        if connection.transport.driver_type != "redis":
            raise NotRedisBroker(
                f"the broker ({broker}) is not Redis: its queues have no priority sub-lists"
            )
        channel = connection.default_channel
        steps = sorted(channel.priority_steps)
        # kombu's own naming (Channel._q_for_pri), so these are the keys the workers read
        keys = [[channel._q_for_pri(name, step) for step in steps] for name in names]
        with channel.conn_or_acquire() as client:
            with client.pipeline(transaction=False) as pipe:
                for row in keys:
                    for key in row:
                        pipe.llen(key)  # the client adds any global_keyprefix itself
                counts = iter(pipe.execute())
            db = int(client.connection_pool.connection_kwargs.get("db") or 0)
        prefix = str(channel.global_keyprefix or "")
    queues = [
        QueueLists(
            queue=name,
            lists=tuple(
                PriorityList(priority=step, key=prefix + key, waiting=int(next(counts)))
                for step, key in zip(steps, row, strict=True)
            ),
        )
        for name, row in zip(names, keys, strict=True)
    ]
    return PriorityLists(broker=broker, db=db, queues=queues)


_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.:/@%+=,")


def shell_word(text: str) -> str:
    r"""``text`` as one word of a bash (or zsh) command line: as it is when every character is
    plain, else ANSI-C quoted with each other byte as ``\xHH``, e.g.
    ``$'ai_processing\x06\x166'`` for kombu's priority-6 list of ``ai_processing`` (bash
    reads at most two hex digits, so the ``6`` after ``\x16`` stays a ``6``)."""
    if text and all(char in _PLAIN for char in text):
        return text
    out: list[str] = []
    for char in text:
        if char in "\\'":
            out.append("\\" + char)
        elif char.isascii() and char.isprintable():
            out.append(char)
        else:
            out.extend(f"\\x{byte:02x}" for byte in char.encode())
    return "$'" + "".join(out) + "'"


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
