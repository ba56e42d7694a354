"""Job accounting against the real PostgreSQL: exact counts, guarded transitions, throttle."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select

from modomo.db.models import Job, JobScene, Scene, SceneFailure
from modomo.db.session import session_scope
from modomo.jobs import ProgressReporter, cancel_job, create_job, describe_job, finish_if_done
from modomo.jobs.accounting import add_scenes, apply_outcomes

pytestmark = pytest.mark.services


def make_job(n_scenes: int) -> tuple[uuid.UUID, list[uuid.UUID]]:
    job_id = create_job("test", {})
    with session_scope() as session:
        scenes = [
            Scene(source="folder", source_key=f"test:{uuid.uuid4()}") for _ in range(n_scenes)
        ]
        session.add_all(scenes)
        session.flush()
        ids = [scene.id for scene in scenes]
        add_scenes(session, job_id, ids)
    return job_id, ids


class FakeClock:
    """A monotonic clock the test advances by hand (seconds)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_throttle_allows_two_writes_a_second_whatever_the_batch_size() -> None:
    job_id, ids = make_job(1000)
    clock = FakeClock()
    with ProgressReporter(job_id, "test", interval=0.5, clock=clock) as reporter:
        for sid in ids:  # 1000 scenes, 3 ms each: 3 simulated seconds
            reporter.succeeded(sid)
            clock.now += 0.003
    assert reporter.writes <= 2 * 3 + 1 + 1  # 2 a second, the first write, the final write
    assert reporter.writes >= 6
    job = describe_job(job_id)
    assert (job["status"], job["processed"], job["failed"], job["pending"]) == (
        "completed",
        1000,
        0,
        0,
    )


def test_final_write_is_always_made() -> None:
    job_id, ids = make_job(3)
    clock = FakeClock()
    reporter = ProgressReporter(job_id, "test", interval=3600, clock=clock)
    for sid in ids:
        reporter.succeeded(sid)
    assert reporter.writes == 1  # only the first; the rest wait for the interval
    reporter.close()
    assert reporter.writes == 2
    assert describe_job(job_id)["processed"] == 3


def test_redelivered_outcomes_are_not_counted_twice() -> None:
    job_id, ids = make_job(4)
    with session_scope() as session:
        apply_outcomes(session, job_id, done=ids[:2])
    with session_scope() as session:  # the same batch again, as after a redelivery
        counts = apply_outcomes(session, job_id, done=ids[:2], failed=ids[2:3])
    assert counts is not None
    assert (counts.processed, counts.failed, counts.status) == (2, 1, "running")
    with session_scope() as session:
        counts = apply_outcomes(session, job_id, done=ids)
    assert (counts.processed, counts.failed, counts.status, counts.progress) == (
        3,
        1,
        "completed",
        100.0,
    )


def test_all_failed_job_is_failed() -> None:
    job_id, ids = make_job(2)
    with ProgressReporter(job_id, "test", interval=0) as reporter:
        for sid in ids:
            reporter.failed(sid, "broken on purpose")
    job = describe_job(job_id)
    assert (job["status"], job["failed"]) == ("failed", 2)
    assert [f["error"] for f in job["failures"]] == ["broken on purpose"] * 2


def test_cancelled_job_never_returns_to_running() -> None:
    job_id, ids = make_job(3)
    with session_scope() as session:
        apply_outcomes(session, job_id, done=ids[:1])
    assert cancel_job(job_id) == "cancelled"
    reporter = ProgressReporter(job_id, "test", interval=0)
    assert not reporter.active
    with session_scope() as session:
        counts = apply_outcomes(session, job_id, done=ids[1:])
    assert counts is not None and counts.status == "cancelled"
    assert cancel_job(job_id) == "cancelled"


def test_finished_job_stays_finished() -> None:
    job_id, ids = make_job(1)
    with session_scope() as session:
        apply_outcomes(session, job_id, done=ids)
    assert cancel_job(job_id) == "completed"


def test_empty_job_completes() -> None:
    job_id = create_job("test", {})
    counts = finish_if_done(job_id)
    assert counts is not None and counts.status == "completed"


def test_failure_retried_in_same_job_counts_attempts() -> None:
    from modomo.jobs.accounting import record_failures

    job_id, ids = make_job(1)
    with session_scope() as session:
        record_failures(session, job_id, [(ids[0], "colors", "first")])
    with session_scope() as session:
        record_failures(session, job_id, [(ids[0], "colors", "second")])
    with session_scope() as session:
        rows = session.execute(
            select(SceneFailure.error, SceneFailure.attempts).where(SceneFailure.job_id == job_id)
        ).all()
    assert rows == [("second", 2)]


def test_add_scenes_is_idempotent() -> None:
    job_id, ids = make_job(2)
    with session_scope() as session:
        assert add_scenes(session, job_id, ids) == 0
        assert session.scalar(select(Job.total).where(Job.id == job_id)) == 2
        assert len(session.scalars(select(JobScene).where(JobScene.job_id == job_id)).all()) == 2
