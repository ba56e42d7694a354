"""Open-vocabulary detection: the taxonomy's prompts, Grounding DINO's captions under its
token limit, YOLOE's prompt embeddings computed by `models pull` and cached, per-category
thresholds and class-agnostic NMS, OWLv2's queries embedded once, and jobs of each
open-vocabulary backend through a real AI worker
(random weights built from configs: outputs are noise, so the tests check labels, plumbing
and selection, not accuracy)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from modomo.analysis.masks import decode_rle
from modomo.analysis.taxonomy import CATEGORIES, PROMPTS, PromptTable
from modomo.config import ConfigError, load_settings
from modomo.db.models import DetectedObject
from modomo.db.session import session_scope
from modomo.models import MissingWeightsError, Weights
from modomo.models.detectors import (
    GroundingDinoDetector,
    Owlv2Detector,
    Selection,
    YoloeDetector,
    embed_prompts,
    labelled,
)
from modomo.models.detectors.grounding_dino import prompt_chunks
from modomo.models.detectors.yoloe import cached_embeddings, embeddings_path
from modomo.models.registry import ModelRegistry
from tests.fixture_scenes import synthetic_scenes
from tests.support import celery_worker, encode, wait_for_job, worker_env


# --- prompts --------------------------------------------------------------------------------
def test_every_category_has_prompts_each_naming_one_category() -> None:
    table = PromptTable()
    assert table.prompted == frozenset(CATEGORIES)
    assert len(set(table.prompts)) == len(table.prompts)
    for prompt, category in zip(table.prompts, table.categories, strict=True):
        assert prompt in PROMPTS[category]
    # a prompt inside another is still its own category, never matched by substring
    lamp, floor_lamp = table.prompts.index("lamp"), table.prompts.index("floor lamp")
    assert table.category(lamp).name == "lamp"
    assert table.category(floor_lamp).name == "floor_lamp"


def test_prompt_overrides_replace_and_are_checked() -> None:
    table = PromptTable({"rug": ["Area  Rug", "runner"], "crib": []})
    assert [p for p, c in zip(table.prompts, table.categories, strict=True) if c == "rug"] == [
        "area rug",
        "runner",
    ]
    assert "crib" not in table.prompted
    with pytest.raises(ValueError, match="'lamp' is given to both 'lamp' and 'rug'"):
        PromptTable({"rug": ["lamp"]})
    with pytest.raises(KeyError, match="rugs"):
        PromptTable({"rugs": ["rug"]})
    with pytest.raises(ValueError, match="list of strings"):
        PromptTable({"rug": "rug"})  # type: ignore[dict-item]


def test_prompt_settings_from_json_and_file(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.json"
    prompts.write_text('{"rug": ["area rug"]}', encoding="utf-8")
    settings = load_settings(
        data_dir=tmp_path, detector="grounding-dino", detector_prompts=str(prompts)
    )
    assert settings.detector_prompts == {"rug": ["area rug"]}
    assert settings.detector_weights == "IDEA-Research/grounding-dino-tiny"
    with pytest.raises(ConfigError, match="MODOMO_DETECTOR_THRESHOLDS.*unknown taxonomy"):
        load_settings(data_dir=tmp_path, detector_thresholds='{"sofas": 0.5}')
    with pytest.raises(ConfigError, match="MODOMO_DETECTOR_PROMPTS.*cannot read"):
        load_settings(data_dir=tmp_path, detector_prompts=str(tmp_path / "missing.json"))
    with pytest.raises(ConfigError, match="MODOMO_DETECTOR:"):
        load_settings(data_dir=tmp_path, detector="sam3")


# --- selection ------------------------------------------------------------------------------
def _boxes(*rows: tuple[str, float, tuple[float, float, float, float]]) -> object:
    return labelled(
        np.array([r[2] for r in rows], np.float32),
        np.array([r[1] for r in rows], np.float32),
        [CATEGORIES[r[0]] for r in rows],
        [r[0] for r in rows],
    )


def test_selection_thresholds_per_category() -> None:
    detections = _boxes(
        ("rug", 0.35, (0, 0, 10, 10)),
        ("sofa", 0.35, (20, 20, 40, 40)),
        ("lamp", 0.2, (50, 50, 60, 60)),
    )
    kept = Selection(threshold=0.3, thresholds={"rug": 0.4, "lamp": 0.1}).apply(detections)
    assert sorted(kept.data["category"]) == ["lamp", "sofa"]


def test_selection_is_one_object_per_box_across_categories() -> None:
    detections = _boxes(
        ("chair", 0.6, (10, 10, 110, 110)),
        ("armchair", 0.8, (12, 10, 110, 112)),  # the same box: one object, the likelier label
        ("chair", 0.5, (200, 10, 300, 110)),
    )
    kept = Selection(threshold=0.1, nms_iou=0.7).apply(detections)
    assert list(kept.data["category"]) == ["armchair", "chair"]
    assert list(kept.confidence) == pytest.approx([0.8, 0.5])
    assert len(Selection(threshold=0.1, nms_iou=1.0).apply(detections)) == 3
    assert list(Selection(threshold=0.1, max_detections=1).apply(detections).confidence) == [
        pytest.approx(0.8)
    ]


# --- Grounding DINO -------------------------------------------------------------------------
def test_captions_fit_the_token_limit_and_hold_every_prompt_once(
    tiny_models: dict[str, Path],
) -> None:
    from transformers import AutoProcessor

    tokenizer = AutoProcessor.from_pretrained(tiny_models["grounding_dino"]).tokenizer
    table = PromptTable()
    for limit in (256, 40):
        captions = prompt_chunks(table, tokenizer, limit)
        held = [index for caption in captions for index in caption.prompts]
        assert held == list(range(len(table)))
        for caption in captions:
            ids = tokenizer(caption.text)["input_ids"]
            assert len(ids) == caption.tokens <= limit
            for index, span in zip(caption.prompts, caption.spans, strict=True):
                assert tokenizer.decode([ids[t] for t in span]) == table.prompts[index]
    assert len(prompt_chunks(table, tokenizer, 40)) > len(prompt_chunks(table, tokenizer, 256)) > 1
    with pytest.raises(ValueError, match="longer than 3 tokens"):
        prompt_chunks(table, tokenizer, 3)


def test_grounding_dino_labels_every_category_from_all_captions(
    tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    settings = load_settings(
        data_dir=tmp_path,
        device="cpu",
        detector="grounding-dino",
        detector_weights=str(tiny_models["grounding_dino"]),
        detector_threshold=0.0,
        detector_nms_iou=1.0,
        detector_max_detections=100_000,
    )
    detector = ModelRegistry(settings).detector()
    assert isinstance(detector, GroundingDinoDetector)
    assert detector.backend == "grounding-dino"
    queries = detector.model.config.num_queries
    rgbs = [rgb for rgb, _, _ in synthetic_scenes(2, seed=3)]
    table = detector.prompts
    for rgb, found in zip(rgbs, detector.detect(rgbs), strict=True):
        # threshold 0, no NMS: every query of every caption, merged
        assert len(found) == queries * len(detector.captions)
        height, width = rgb.shape[:2]
        assert (found.xyxy >= 0).all() and (found.xyxy[:, [0, 2]] <= width).all()
        assert (found.xyxy[:, [1, 3]] <= height).all()
        for category, group, prompt in zip(
            found.data["category"], found.data["taxonomy_group"], found.data["prompt"], strict=True
        ):
            assert table.categories[table.prompts.index(prompt)] == category
            assert CATEGORIES[category].group == group
    # per-category thresholds then apply as for any backend
    unfiltered = detector.detect(rgbs[:1])[0]
    assert unfiltered.confidence is not None
    default = float(np.quantile(unfiltered.confidence, 0.9))
    sofas = int((unfiltered.data["category"] == "sofa").sum())
    detector.selection = Selection(
        threshold=default, thresholds={"sofa": 0.0}, nms_iou=1.0, max_detections=10**5
    )
    found = detector.detect(rgbs[:1])[0]
    assert found.confidence is not None
    is_sofa = found.data["category"] == "sofa"
    assert int(is_sofa.sum()) == sofas
    assert (found.confidence[~is_sofa] >= default).all()
    assert len(found) < len(unfiltered)


def test_owlv2_embeds_every_prompt_once_and_labels_each_patch_box(
    tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    settings = load_settings(
        data_dir=tmp_path,
        device="cpu",
        detector="owlv2",
        detector_weights=str(tiny_models["owlv2"]),
        detector_threshold=0.0,
        detector_nms_iou=1.0,
        detector_max_detections=100_000,
    )
    detector = ModelRegistry(settings).detector()
    assert isinstance(detector, Owlv2Detector) and detector.backend == "owlv2"
    table = detector.prompts
    assert detector.queries.shape[0] == len(table)  # one query per prompt, embedded at load
    vision = detector.model.config.vision_config
    patches = (vision.image_size // vision.patch_size) ** 2
    rgbs = [rgb for rgb, _, _ in synthetic_scenes(2, seed=9)]
    rgbs[1] = np.ascontiguousarray(rgbs[1][: rgbs[1].shape[0] // 2])  # not square: padded
    for rgb, found in zip(rgbs, detector.detect(rgbs), strict=True):
        assert len(found) == patches  # threshold 0, no NMS: one box per patch
        height, width = rgb.shape[:2]
        assert (found.xyxy[:, [0, 2]] <= width).all() and (found.xyxy[:, [1, 3]] <= height).all()
        for category, prompt in zip(found.data["category"], found.data["prompt"], strict=True):
            assert table.categories[table.prompts.index(prompt)] == category


def test_missing_open_vocabulary_weights_name_the_pull_command(tmp_path: Path) -> None:
    from modomo.models import resolve

    for backend, name in (
        ("grounding-dino", "IDEA-Research/grounding-dino-tiny"),
        ("owlv2", "google/owlv2-base-patch16-ensemble"),
        ("yoloe", "yoloe-11s-seg.pt"),
    ):
        settings = load_settings(data_dir=tmp_path, detector=backend)
        assert settings.detector_weights == name
        with pytest.raises(MissingWeightsError, match="modomo models pull detector"):
            resolve("detector", name, settings.model_cache)
        with pytest.raises(MissingWeightsError, match="modomo models pull detector"):
            ModelRegistry(settings).detector()


# --- YOLOE ----------------------------------------------------------------------------------
def yoloe_cache(tiny_models: dict[str, Path], tmp_path: Path) -> Path:
    """A model cache holding YOLOE's text encoder, as `models pull` leaves it."""
    cache = tmp_path / "model-cache"
    (cache / "ultralytics").mkdir(parents=True)
    shutil.copy(tiny_models["yoloe_text_encoder"], cache / "ultralytics" / "mobileclip_blt.ts")
    return cache


def test_yoloe_prompt_embeddings_computed_by_pull_then_loaded_without_a_text_model(
    tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    weights = tmp_path / "yoloe.pt"
    shutil.copy(tiny_models["yoloe"], weights)
    cache = yoloe_cache(tiny_models, tmp_path)
    env = {
        "MODOMO_DETECTOR": "yoloe",
        "MODOMO_DETECTOR_WEIGHTS": str(weights),
        "MODOMO_MODEL_DIR": str(cache),
    }
    settings = load_settings(
        data_dir=tmp_path,
        device="cpu",
        detector="yoloe",
        detector_weights=str(weights),
        model_dir=cache,
        detector_threshold=0.0,
    )
    with pytest.raises(
        MissingWeightsError, match=r"MODOMO_DETECTOR=yoloe modomo models pull detector"
    ):
        ModelRegistry(settings).detector()
    listed = run_cli("models", "list", env=env, data_dir=tmp_path)
    assert "missing: `modomo models pull detector`" in listed.stdout  # the fetching command

    pulled = run_cli("models", "pull", "detector", env=env, data_dir=tmp_path)
    assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    table = PromptTable()
    cached = embeddings_path(weights, table)
    assert cached.is_file() and f"{len(table)} prompts embedded" in pulled.stdout
    assert "ready" in run_cli("models", "list", env=env, data_dir=tmp_path).stdout

    # the worker's side: no text encoder needed (moved away), one class per prompt
    (cache / "ultralytics" / "mobileclip_blt.ts").unlink()
    detector = ModelRegistry(settings).detector()
    assert isinstance(detector, YoloeDetector) and detector.backend == "yoloe"
    assert list(detector.model.names.values()) == table.prompts
    rgbs = [rgb for rgb, _, _ in synthetic_scenes(2, seed=5)]
    for found in detector.detect(rgbs):
        assert len(found) > 0
        for category, prompt in zip(found.data["category"], found.data["prompt"], strict=True):
            assert table.categories[table.prompts.index(prompt)] == category
    # other prompts, other embeddings: not computed yet
    with pytest.raises(MissingWeightsError, match="prompt embeddings"):
        cached_embeddings(
            Weights("detector", str(weights), weights, "local"), PromptTable({"rug": ["area rug"]})
        )


def run_cli(*args: str, env: dict[str, str], data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modomo.cli", *args],
        env=worker_env(MODOMO_DATA_DIR=str(data_dir), COLUMNS="250", HF_HUB_OFFLINE="1", **env),
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.services
@pytest.mark.parametrize("backend", ["grounding-dino", "owlv2", "yoloe"])
def test_open_vocabulary_job_through_an_ai_worker(
    backend: str, tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    from modomo.jobs import create_job, dispatch_batches
    from modomo.sources import expand_sources, ingest
    from modomo.tasks.detection_tasks import process_scenes_batch

    folder = tmp_path / "scenes"
    folder.mkdir()
    for index, (rgb, _, _) in enumerate(synthetic_scenes(3, seed=11)):
        (folder / f"room{index}.png").write_bytes(encode(rgb))
    env = {"MODOMO_DETECTOR_WEIGHTS": str(tiny_models[backend.replace("-", "_")])}
    if backend == "yoloe":
        weights = tmp_path / "yoloe.pt"
        shutil.copy(tiny_models["yoloe"], weights)
        cache = yoloe_cache(tiny_models, tmp_path)
        embed_prompts(Weights("detector", str(weights), weights, "local"), PromptTable(), cache)
        env = {"MODOMO_DETECTOR_WEIGHTS": str(weights), "MODOMO_MODEL_DIR": str(cache)}
    with celery_worker(
        log_path=tmp_path / "worker.log",
        command=[sys.executable, "-m", "modomo.cli", "worker", "--ai", "--warmup"],
        MODOMO_DEVICE="cpu",
        MODOMO_DETECTOR=backend,
        MODOMO_DETECTOR_THRESHOLD="0.0",
        MODOMO_DETECTOR_MAX_DETECTIONS="12",
        MODOMO_SEGMENTER_WEIGHTS=str(tiny_models["sam2"]),
        MODOMO_DEPTH_WEIGHTS=str(tiny_models["depth_anything"]),
        MODOMO_DEPTH_FALLBACK_WEIGHTS=str(tiny_models["zoedepth"]),
        MODOMO_AI_BATCH_SIZE="2",
        **env,
    ):
        job_id = create_job("detection", {"sources": [str(folder)]})
        report = ingest(job_id, expand_sources([str(folder)]))
        dispatch_batches(job_id, process_scenes_batch, report.scene_ids, 8)
        job = wait_for_job(job_id, timeout_s=240)
    assert (job["status"], job["processed"], job["failed"]) == ("completed", 3, 0)
    table = PromptTable()
    with session_scope() as session:
        rows = list(
            session.scalars(
                select(DetectedObject).where(DetectedObject.job_id == uuid.UUID(str(job_id)))
            )
        )
        assert 0 < len(rows) <= 3 * 12
        for row in rows:
            assert row.models["detector_backend"] == backend
            assert row.models["detector"].startswith(env["MODOMO_DETECTOR_WEIGHTS"] + "@")
            prompt = row.models["prompt"]
            assert table.categories[table.prompts.index(prompt)] == row.category
            assert row.mask_rle is not None  # SAM prompted with the open-vocabulary box
            assert decode_rle(row.mask_rle).sum() == row.mask_area
