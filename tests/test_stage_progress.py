"""Per-stage progress (``job_stages``): counted with the ledger exactly once, attributed to the
stage a scene failed at, and the same in the job record, the API and the progress bar.

Against the real PostgreSQL and Redis; the end-to-end test runs a real AI worker with the
fixture detector and random-weight SAM 2.1 / Depth Anything (as test_detection_tasks does).
The attribution tests fake the models in-process: one depth call that raises is enough.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np
import pytest
import supervision as sv
from sqlalchemy import select

from modomo.analysis.depth import DepthMap
from modomo.analysis.masks import BoxMask, box_region
from modomo.db.models import Job, Scene, SceneFailure
from modomo.db.session import session_scope
from modomo.images import LoadedImage, load_image
from modomo.inference import STAGES, DetectionPipeline, SceneResult, failed_stage
from modomo.jobs import ProgressReporter, create_job, describe_job, dispatch_batches, list_jobs
from modomo.jobs.accounting import add_scenes, apply_outcomes, stage_counts
from modomo.models.device import is_oom
from modomo.sources import expand_sources, ingest
from tests.fixture_scenes import synthetic_scenes
from tests.support import api_server, encode, noise_image, wait_for_job

pytestmark = pytest.mark.services


# --- helpers ------------------------------------------------------------------------------
def make_job(n_scenes: int) -> tuple[uuid.UUID, list[uuid.UUID]]:
    """A job with ``n_scenes`` bare scenes, all pending."""
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


def counts(job_id: uuid.UUID) -> dict[str, dict[str, int]]:
    with session_scope() as session:
        return stage_counts(session, job_id)


def assert_stages_add_up(job: dict[str, Any], pipeline: Sequence[str]) -> None:
    """The invariant of ``job_stages`` for a job whose scenes all went through ``pipeline``:
    the first stage saw every counted scene, each later one what its predecessor passed, and
    the last one passed what the job processed."""
    stages = job["stages"]
    assert list(stages) == list(pipeline), stages
    first = stages[pipeline[0]]
    assert first["processed"] + first["failed"] == job["processed"] + job["failed"], job
    for before, after in zip(pipeline, pipeline[1:], strict=False):
        assert stages[after]["processed"] + stages[after]["failed"] == stages[before]["processed"]
    assert stages[pipeline[-1]]["processed"] == job["processed"]
    assert sum(s["failed"] for s in stages.values()) == job["failed"]


def failure_stages(job_id: uuid.UUID) -> dict[uuid.UUID, str]:
    with session_scope() as session:
        rows = session.execute(
            select(SceneFailure.scene_id, SceneFailure.stage).where(SceneFailure.job_id == job_id)
        )
        return {row.scene_id: row.stage for row in rows}


# --- counting with the ledger ---------------------------------------------------------------
PIPELINE = ("detect", "segment", "depth", "colors")


def test_a_flush_counts_stages_for_flipped_scenes_only() -> None:
    job_id, ids = make_job(5)

    def deliver() -> ProgressReporter:
        reporter = ProgressReporter(job_id, "detect", stages=PIPELINE, interval=0)
        with reporter:
            reporter.succeeded(ids[0])
            reporter.succeeded(ids[1])
            reporter.failed(ids[2], "depth model broke", stage="depth")
            reporter.failed(ids[3], "not an image")  # default: the pipeline's first stage
        return reporter

    deliver()
    expected = {
        "detect": {"processed": 3, "failed": 1},
        "segment": {"processed": 3, "failed": 0},
        "depth": {"processed": 2, "failed": 1},
        "colors": {"processed": 2, "failed": 0},
    }
    assert counts(job_id) == expected
    # the same outcomes again, as a redelivered batch reports them: nothing more is counted
    deliver()
    assert counts(job_id) == expected
    with session_scope() as session:  # nor through the ledger directly
        apply_outcomes(session, job_id, done=ids[:2], failed=ids[2:4], stages=PIPELINE)
    assert counts(job_id) == expected
    assert failure_stages(job_id) == {ids[2]: "depth", ids[3]: "detect"}
    job = describe_job(job_id)
    assert (job["status"], job["processed"], job["failed"]) == ("running", 2, 2)
    assert job["stages"] == expected

    # the last scene completes the job; the counts still add up
    with ProgressReporter(job_id, "detect", stages=PIPELINE, interval=0) as reporter:
        reporter.succeeded(ids[4])
    job = describe_job(job_id)
    assert job["status"] == "completed"
    assert_stages_add_up(job, PIPELINE)
    [listed] = [j for j in list_jobs(job_type="test", limit=200) if j["id"] == str(job_id)]
    assert listed["stages"] == job["stages"]


def test_a_single_stage_reporter_counts_its_stage_and_failures_elsewhere() -> None:
    job_id, ids = make_job(3)
    with ProgressReporter(job_id, "colors", interval=0) as reporter:
        reporter.succeeded(ids[0])
        reporter.failed(ids[1], "corrupt")
    with session_scope() as session:  # a batch that died for good (BatchTask.on_failure)
        from modomo.jobs.accounting import fail_pending

        fail_pending(session, job_id, ids, "colors", "worker lost")
    assert counts(job_id) == {"colors": {"processed": 1, "failed": 2}}


@pytest.mark.parametrize(("stages", "first"), [(None, "detect"), (["depth", "colors"], "depth")])
def test_a_detection_batch_that_fails_for_good_counts_at_its_first_stage(
    stages: list[str] | None, first: str
) -> None:
    """``BatchTask.on_failure`` (run by Celery when a batch fails for good) counts the
    batch's pending scenes as failed at the first stage of that batch's own pipeline."""
    from modomo.tasks.detection_tasks import process_scenes_batch

    job_id, ids = make_job(2)
    process_scenes_batch.on_failure(
        RuntimeError("worker lost"),
        "task-id",
        (str(job_id), [str(i) for i in ids]),
        {"stages": stages},
        None,
    )
    assert counts(job_id) == {first: {"processed": 0, "failed": 2}}
    assert set(failure_stages(job_id).values()) == {first}


def test_concurrent_flushes_of_one_job_add_up() -> None:
    job_id, ids = make_job(64)
    errors: list[BaseException] = []

    def batch(part: list[uuid.UUID]) -> None:
        try:
            with ProgressReporter(job_id, "detect", stages=PIPELINE, interval=0) as reporter:
                for index, sid in enumerate(part):
                    if index % 4 == 3:
                        reporter.failed(sid, "broken", stage="segment")
                    else:
                        reporter.succeeded(sid)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=batch, args=(ids[i::8],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert counts(job_id) == {
        "detect": {"processed": 64, "failed": 0},
        "segment": {"processed": 48, "failed": 16},
        "depth": {"processed": 48, "failed": 0},
        "colors": {"processed": 48, "failed": 0},
    }
    assert_stages_add_up(describe_job(job_id), PIPELINE)


# --- attribution in the detection pipeline (models faked in-process) -------------------------
WHITE = 255


class FakeOOM(RuntimeError):
    """What torch raises on CUDA out of memory (``is_oom`` matches the message)."""


def is_white(rgb: np.ndarray) -> bool:
    return bool((rgb == WHITE).all())


class FakeModels:
    """A stand-in for :class:`modomo.models.registry.ModelRegistry`: one centred box per
    image, its box as the mask, a gradient as depth. Depth raises for an all-white image;
    segmentation runs out of memory on an image 1 pixel high."""

    device = "cpu"

    def __init__(self) -> None:
        label = SimpleNamespace(weights=SimpleNamespace(label="fake@test"))
        self._detector = SimpleNamespace(detect=self.detect, backend="fake", **vars(label))
        self._segmenter = SimpleNamespace(segment=self.segment, **vars(label))
        self._depth = SimpleNamespace(estimate=self.estimate)

    def warm_up(self, stages: Sequence[str]) -> None:
        pass

    def detector(self) -> Any:
        return self._detector

    def segmenter(self) -> Any:
        return self._segmenter

    def depth(self) -> Any:
        return self._depth

    @staticmethod
    def detect(rgbs: Sequence[np.ndarray]) -> list[sv.Detections]:
        found = []
        for rgb in rgbs:
            height, width = rgb.shape[:2]
            det = sv.Detections(
                xyxy=np.array([[width / 4, height / 4, 3 * width / 4, 3 * height / 4]], np.float32),
                confidence=np.array([0.9], np.float32),
            )
            det.data["category"] = np.array(["sofa"], dtype=object)
            det.data["taxonomy_group"] = np.array(["seating"], dtype=object)
            found.append(det)
        return found

    @staticmethod
    def segment(
        rgbs: Sequence[np.ndarray], boxes: Sequence[np.ndarray], sizes: Sequence[Any]
    ) -> list[tuple[list[BoxMask], np.ndarray]]:
        if any(rgb.shape[0] == 1 for rgb in rgbs):
            raise FakeOOM("CUDA out of memory. Tried to allocate 2.00 GiB")
        out = []
        for rgb, xyxy in zip(rgbs, boxes, strict=True):
            height, width = rgb.shape[:2]
            masks = [BoxMask.filled(box_region(box, height, width), height, width) for box in xyxy]
            out.append((masks, np.ones(len(xyxy), np.float32)))
        return out

    @staticmethod
    def estimate(rgbs: Sequence[np.ndarray], sizes: Sequence[Any]) -> list[DepthMap]:
        if any(is_white(rgb) for rgb in rgbs):
            raise ValueError("depth model produced NaNs for a white image")
        return [
            DepthMap(
                np.tile(np.linspace(0, 1, rgb.shape[1], dtype=np.float32), (rgb.shape[0], 1)),
                "relative_inverse_depth",
                "fake-depth@test",
                *rgb.shape[:2],
            )
            for rgb in rgbs
        ]


def loaded(rgb: np.ndarray) -> LoadedImage:
    return load_image(encode(rgb), max_pixels=10**8)


def test_a_model_failure_names_its_stage_and_keeps_its_type(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import modomo.inference.scene as scene

    white = np.full((48, 64, 3), WHITE, np.uint8)
    batch = [
        loaded(noise_image("a")),
        loaded(white),
        loaded(noise_image("b")),
        loaded(np.full((1, 64, 3), 90, np.uint8)),  # segmentation runs out of memory on it
    ]
    models: Any = FakeModels()
    pipeline = DetectionPipeline(models, STAGES, batch_size=4)
    results = pipeline.run(batch)
    assert isinstance(results[0], SceneResult) and isinstance(results[2], SceneResult)
    assert isinstance(results[1], ValueError) and failed_stage(results[1]) == "depth"
    # the out-of-memory error keeps its type: the back-off saw it and shrank the batch
    assert isinstance(results[3], FakeOOM) and is_oom(results[3])
    assert failed_stage(results[3]) == "segment"
    assert pipeline.batch_size < 4
    assert failed_stage(ValueError("no note")) is None

    # a failure while turning outputs into rows names its stage too (colours of a region)
    def palette(*_: object, **__: object) -> Any:
        raise ArithmeticError("k-means diverged")

    monkeypatch.setattr(scene, "extract_palette", palette)
    [result] = DetectionPipeline(models, ("detect", "colors"), batch_size=2).run(
        [loaded(noise_image("c"))]
    )
    assert isinstance(result, ArithmeticError) and failed_stage(result) == "colors"


def put_scenes(tmp_path: Path, images: dict[str, bytes]) -> tuple[uuid.UUID, dict[str, uuid.UUID]]:
    """A detection job with these files ingested (not dispatched); ``{name: scene id}``."""
    folder = tmp_path / "in"
    folder.mkdir()
    for name, data in images.items():
        (folder / name).write_bytes(data)
    job_id = create_job("detection", {})
    report = ingest(job_id, expand_sources([str(folder)]))
    assert not report.failed, report.failed
    with session_scope() as session:
        rows = session.execute(
            select(Scene.id, Scene.source_key).where(Scene.id.in_(report.scene_ids))
        )
        by_name = {Path(row.source_key).name: row.id for row in rows}
    return job_id, by_name


def corrupt_jpeg(seed: str) -> bytes:
    """A JPEG cut in half: its header passes ingest, decoding it fails."""
    data = encode(noise_image(seed, (96, 128)), "JPEG")
    return data[: len(data) // 2]


def test_detection_batch_counts_a_depth_failure_at_depth(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modomo.tasks import detection_tasks

    tag = uuid.uuid4().hex
    job_id, scenes = put_scenes(
        tmp_path,
        {
            "a.png": encode(noise_image(f"{tag}-a")),
            "b.png": encode(noise_image(f"{tag}-b")),
            # all white, its height making its bytes unique to this test
            "white.png": encode(np.full((40 + int(tag[:4], 16) % 500, 64, 3), WHITE, np.uint8)),
            "broken.jpg": corrupt_jpeg(tag),
        },
    )
    models: Any = FakeModels()
    monkeypatch.setattr(
        detection_tasks, "_pipeline", lambda stages: DetectionPipeline(models, stages, batch_size=4)
    )
    # the task body, in this process (its reporter skips Celery's PROGRESS state here)
    outcome = detection_tasks.process_scenes_batch.run(
        str(job_id), [str(s) for s in scenes.values()]
    )
    assert (outcome["done"], outcome["failed"]) == (2, 2), outcome
    job = describe_job(job_id)
    assert job["status"] == "completed", job
    assert job["stages"] == {
        "detect": {"processed": 3, "failed": 1},  # the image that cannot be decoded
        "segment": {"processed": 3, "failed": 0},
        "depth": {"processed": 2, "failed": 1},  # the white image: passed detect, segment
        "colors": {"processed": 2, "failed": 0},
    }
    assert_stages_add_up(job, PIPELINE)
    assert failure_stages(job_id) == {scenes["broken.jpg"]: "detect", scenes["white.png"]: "depth"}
    reason = {f["stage"]: f["error"] for f in job["failures"]}["depth"]
    assert reason.startswith("ValueError: depth model produced NaNs")


def test_colour_batch_counts_the_colors_stage(tmp_path: Path) -> None:
    from modomo.tasks.color_tasks import process_colors_batch

    tag = uuid.uuid4().hex
    job_id, scenes = put_scenes(
        tmp_path,
        {"a.png": encode(noise_image(f"{tag}-a")), "broken.jpg": corrupt_jpeg(tag)},
    )
    process_colors_batch.run(str(job_id), [str(s) for s in scenes.values()])
    job = describe_job(job_id)
    assert job["stages"] == {"colors": {"processed": 1, "failed": 1}}
    assert_stages_add_up(job, ("colors",))


def test_progress_bar_note_lists_the_stages() -> None:
    from modomo.console import stage_note

    note = stage_note(
        {
            "detect": {"processed": 12, "failed": 0},
            "segment": {"processed": 11, "failed": 0},
            "depth": {"processed": 11, "failed": 1},
        },
        40,
    )
    assert note == "detect 12/40 · segment 11 · depth 11 [red](1 failed)[/]"


# --- end to end: a real AI worker, the job record and the API --------------------------------
def test_detection_job_stage_counts_add_up_in_record_and_api(
    ai_worker: str, tmp_path: Path
) -> None:
    from modomo.api.keys import create_key
    from modomo.tasks.detection_tasks import process_scenes_batch

    tag = uuid.uuid4().hex
    files = {f"scene{i}.png": encode(rgb) for i, (rgb, _, _) in enumerate(synthetic_scenes(6, 77))}
    files["broken.jpg"] = corrupt_jpeg(tag)
    job_id, scenes = put_scenes(tmp_path, files)
    dispatch_batches(job_id, process_scenes_batch, list(scenes.values()), 4)
    job = wait_for_job(job_id, timeout_s=240)
    assert (job["status"], job["total"], job["processed"], job["failed"]) == ("completed", 7, 6, 1)
    assert_stages_add_up(job, PIPELINE)
    assert job["stages"]["detect"] == {"processed": 6, "failed": 1}
    assert failure_stages(job_id) == {scenes["broken.jpg"]: "detect"}

    _, admin = create_key(f"stage-progress {tag}", "admin")
    with (
        api_server(log_path=tmp_path / "api.log") as base,
        httpx.Client(base_url=base, headers={"X-API-Key": admin}, timeout=30) as client,
    ):
        answer = client.get(f"/jobs/{job_id}")
        assert answer.status_code == 200, answer.text
        assert answer.json()["stages"] == job["stages"]
        assert list(answer.json()["stages"]) == list(PIPELINE)  # pipeline order survives JSON
        page = client.get("/jobs", params={"type": "detection", "limit": 200}).json()
        [listed] = [item for item in page["items"] if item["id"] == str(job_id)]
        assert listed["stages"] == job["stages"]
    with session_scope() as session:  # the record is what the table holds
        assert session.get(Job, job_id) is not None
        assert stage_counts(session, job_id) == job["stages"]


def test_a_soft_limit_fails_the_scenes_in_hand_and_sends_the_rest_again(
    ai_worker: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pipelined batch at its soft time limit (its body run here, with stand-in models):
    scenes counted stay counted, those on the device fail with the reason, and those not
    reached (or only read ahead) go again as a new task, which the real AI worker runs."""
    from celery.exceptions import SoftTimeLimitExceeded

    from modomo.tasks import detection_tasks

    tag = uuid.uuid4().hex
    job_id, scenes = put_scenes(
        tmp_path, {f"{i}.png": encode(noise_image(f"{tag}-{i}")) for i in range(6)}
    )
    order = [str(s) for s in scenes.values()]
    models: Any = FakeModels()
    calls = 0

    def detect(rgbs: Sequence[np.ndarray]) -> list[sv.Detections]:
        nonlocal calls
        calls += 1
        if calls == 2:  # the second chunk is on the device when the limit strikes
            time.sleep(0.5)  # (the first chunk's host work has finished by then)
            raise SoftTimeLimitExceeded()
        return FakeModels.detect(rgbs)

    models._detector.detect = detect
    monkeypatch.setattr(
        detection_tasks, "_pipeline", lambda stages: DetectionPipeline(models, stages, batch_size=2)
    )
    outcome = detection_tasks.process_scenes_batch.run(str(job_id), order)
    assert (outcome["done"], outcome["failed"]) == (2, 2), outcome
    job = wait_for_job(job_id, timeout_s=240)
    assert (job["status"], job["processed"], job["failed"]) == ("completed", 4, 2), job
    reasons = {f["scene_id"]: f["error"] for f in job["failures"]}
    assert set(reasons) == set(order[2:4])
    assert all("soft time limit" in r for r in reasons.values())
