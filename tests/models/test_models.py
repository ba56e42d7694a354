"""The model registry and the detection pipeline in one process, with test models: the
fixture detector trained by scripts/train_fixture_detector.py and random-weight SAM 2.1 /
Depth Anything / ZoeDepth built from configs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from modomo.analysis.masks import decode_rle, xywh_to_xyxy
from modomo.config import Settings, get_settings, load_settings
from modomo.images import LoadedImage, load_image
from modomo.inference import STAGES, DetectionPipeline, SceneResult, parse_stages
from modomo.models import MissingWeightsError, resolve
from modomo.models.depth import DepthEstimator
from modomo.models.registry import ModelRegistry
from tests.fixture_scenes import FIXTURE_WEIGHTS, synthetic_scenes
from tests.support import REPO, encode


def settings_for(models: dict[str, Path], tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "data_dir": tmp_path,
        "device": "cpu",
        "detector_weights": str(FIXTURE_WEIGHTS),
        "segmenter_weights": str(models["sam2"]),
        "depth_weights": str(models["depth_anything"]),
        "depth_fallback_weights": str(models["zoedepth"]),
    }
    values.update(overrides)
    return load_settings(**values)


def images(n: int, seed: int = 7) -> list[LoadedImage]:
    return [
        load_image(encode(rgb), max_pixels=10**8) for rgb, _, _ in synthetic_scenes(n, seed=seed)
    ]


def ok(results: list[SceneResult | BaseException]) -> list[SceneResult]:
    failures = [r for r in results if isinstance(r, BaseException)]
    assert not failures, failures
    return [r for r in results if isinstance(r, SceneResult)]


def test_parse_stages() -> None:
    assert parse_stages("full") == STAGES
    assert parse_stages("colors, detect") == ("detect", "colors")
    with pytest.raises(ValueError, match="unknown"):
        parse_stages("detect,paint")
    with pytest.raises(ValueError, match="needs detect"):
        parse_stages("segment,depth")


def test_full_pipeline_results(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    registry = ModelRegistry(settings_for(tiny_models, tmp_path))
    batch = images(4)
    results = ok(DetectionPipeline(registry, STAGES, batch_size=3).run(batch))
    assert sum(len(r.objects) for r in results) >= 4
    for image, result in zip(batch, results, strict=True):
        height, width = image.rgb.shape[:2]
        assert result.depth_info is not None and result.depth_png is not None
        info = result.depth_info
        assert (info["image_width"], info["image_height"]) == (width, height)
        # the map keeps the model's output resolution and the image's aspect ratio
        assert max(info["width"], info["height"]) <= max(width, height)
        assert abs(info["width"] / info["height"] - width / height) < 0.05
        assert result.depth_info["unit"] == "relative_inverse_depth"
        assert result.depth_model == f"{tiny_models['depth_anything']}@local"
        assert result.colors is not None
        for row in result.objects:
            x1, y1, x2, y2 = xywh_to_xyxy(row["bbox"])
            assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
            mask = decode_rle(row["mask_rle"])
            assert mask.shape == (height, width)
            assert row["mask_area"] == int(mask.sum())
            assert 0.0 <= row["mask_box_iou"] <= 1.0
            assert row["models"]["detector"].startswith(str(FIXTURE_WEIGHTS))
            assert row["category"] in {"sofa", "potted_plant", "tv", "lamp"}
            assert row["taxonomy_group"] in {
                "seating",
                "plants_planters",
                "entertainment",
                "lighting",
            }


def test_models_load_once_per_process(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    registry = ModelRegistry(settings_for(tiny_models, tmp_path))
    assert registry.detector() is registry.detector()
    assert registry.segmenter() is registry.segmenter()
    assert set(registry.load_seconds) == {"detector", "segmenter"}


def test_cuda_oom_halves_the_batch(
    tiny_models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = ModelRegistry(settings_for(tiny_models, tmp_path))
    depth = registry.depth()
    real = depth.estimate
    sizes: list[int] = []

    def estimate(rgbs: list[np.ndarray], scene_sizes: list[tuple[int, int]]) -> list:
        sizes.append(len(rgbs))
        if len(rgbs) > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if rgbs[0].shape[0] == 1:  # the 1-pixel-high image runs out of memory on its own
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return real(rgbs, scene_sizes)

    monkeypatch.setattr(depth, "estimate", estimate)
    batch = images(4)
    batch[2] = load_image(encode(np.zeros((1, 300, 3), np.uint8)), max_pixels=10**8)
    pipeline = DetectionPipeline(registry, STAGES, batch_size=4)
    results = pipeline.run(batch)
    assert sizes[:3] == [4, 2, 1]
    assert isinstance(results[2], torch.cuda.OutOfMemoryError)
    assert all(isinstance(r, SceneResult) for i, r in enumerate(results) if i != 2)
    assert pipeline.batch_size == 1  # later chunks start at the size that fitted


def test_zoedepth_is_the_fallback_when_the_primary_fails_to_load(
    tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    registry = ModelRegistry(
        settings_for(tiny_models, tmp_path, depth_weights=str(tmp_path / "no-such-model"))
    )
    results = ok(DetectionPipeline(registry, ("depth",), batch_size=2).run(images(2)))
    assert registry.depth().primary is None
    assert "no-such-model" in (registry.depth().primary_error or "")
    for result in results:
        assert result.depth_model == f"{tiny_models['zoedepth']}@local"
        assert result.depth_info is not None and result.depth_info["unit"] == "metres"


def test_zoedepth_is_the_fallback_when_the_primary_fails_to_run(
    tiny_models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = ModelRegistry(settings_for(tiny_models, tmp_path))
    primary = registry.depth().primary
    assert primary is not None

    def broken(_: list[np.ndarray], __: object = None) -> list:
        raise RuntimeError("NaN in the decoder")

    monkeypatch.setattr(primary, "estimate", broken)
    results = ok(DetectionPipeline(registry, ("depth",), batch_size=2).run(images(2)))
    assert {r.depth_model for r in results} == {f"{tiny_models['zoedepth']}@local"}


def test_depth_maps_match_image_sizes_in_mixed_batches(tiny_models: dict[str, Path]) -> None:
    weights = resolve("depth", str(tiny_models["depth_anything"]), Path("/nonexistent"))
    model = DepthEstimator(weights, "cpu", half=False)
    rng = np.random.default_rng(0)
    shapes = [(60, 80, 3), (90, 40, 3), (60, 80, 3)]
    maps = model.estimate([rng.integers(0, 255, s, dtype=np.uint8) for s in shapes])
    assert [m.values.shape for m in maps] == [s[:2] for s in shapes]


def test_missing_weights_name_the_model_and_the_pull_command(tmp_path: Path) -> None:
    with pytest.raises(MissingWeightsError) as info:
        resolve("detector", "yolo11n.pt", tmp_path)
    assert "detector weights 'yolo11n.pt'" in str(info.value)
    assert "modomo models pull detector" in str(info.value)
    with pytest.raises(MissingWeightsError, match="modomo models pull segmenter"):
        resolve("segmenter", "facebook/sam2.1-hiera-tiny", tmp_path)


def test_pipeline_load_fails_with_the_missing_weights_message(
    tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    registry = ModelRegistry(settings_for(tiny_models, tmp_path, detector_weights="yolo11n.pt"))
    with pytest.raises(MissingWeightsError, match="modomo models pull detector"):
        DetectionPipeline(registry, STAGES, batch_size=2).load()


def test_model_configs_are_refused_as_weights(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="random weights"):
        resolve("detector", "yolo11n.yaml", tmp_path)


def test_celery_parent_never_imports_torch() -> None:
    """What a worker's parent process imports (the app and every task module) loads no
    torch, so nothing touches CUDA before the fork."""
    code = (
        "import sys\n"
        "from modomo.celery_app import app\n"
        "app.loader.import_default_modules()\n"
        "import modomo.cli\n"
        "assert 'modomo.tasks.detection_tasks' in sys.modules\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "assert 'ultralytics' not in sys.modules and 'transformers' not in sys.modules\n"
        "print('clean')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "clean"


def test_non_images_keep_pillows_reason_after_ultralytics_is_imported(
    tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    """ultralytics patches PIL.Image.open to pip-install pi-heif on unknown files; a worker
    must report Pillow's reason and install nothing."""
    import ultralytics  # noqa: F401  (the import applies the patch)

    from modomo.images import ImageError

    ModelRegistry(settings_for(tiny_models, tmp_path)).detector()
    for data in (b"<html>not an image</html>" * 4, b"\x00\x01\x02\x03" * 64):
        with pytest.raises(ImageError) as info:
            load_image(data, max_pixels=10**8)
        assert "pi_heif" not in str(info.value) and "pi-heif" not in str(info.value)


def test_modomo_sets_torch_threads_whatever_an_import_set(
    tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    import os

    torch.set_num_threads(1)  # as importing ultralytics does on a small machine
    registry = ModelRegistry(settings_for(tiny_models, tmp_path))
    registry.detector()
    assert torch.get_num_threads() == len(os.sched_getaffinity(0))
    ModelRegistry(settings_for(tiny_models, tmp_path, torch_threads=1)).detector()
    assert torch.get_num_threads() == 1
    torch.set_num_threads(len(os.sched_getaffinity(0)))


def test_torch_threads_leave_the_cores_of_the_host_work(
    tiny_models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An AI worker's host processes keep cores busy: torch's automatic thread count is the
    rest (at least one), and an explicit MODOMO_TORCH_THREADS still wins."""
    from modomo.models import device
    from modomo.tasks import detection_tasks

    cores = device.usable_cores()
    monkeypatch.setattr(device, "_host_cores", 0)  # restored after the test
    monkeypatch.setenv("MODOMO_AI_HOST_THREADS", str(max(1, cores - 1)))
    monkeypatch.setenv("MODOMO_AI_HOST_PROCESSES", "false")  # host threads: nothing to start
    monkeypatch.setenv("MODOMO_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    try:
        detection_tasks._pipeline(["colors"])  # as a task does before its batch
        assert torch.get_num_threads() == max(1, cores - max(1, cores - 1))
        ModelRegistry(settings_for(tiny_models, tmp_path)).detector()  # a load keeps it
        assert torch.get_num_threads() == max(1, cores - max(1, cores - 1))
        device.reserve_host_cores(cores + 3)
        assert device.set_torch_threads(0) == 1
        ModelRegistry(settings_for(tiny_models, tmp_path, torch_threads=2)).detector()
        assert torch.get_num_threads() == 2
    finally:
        get_settings.cache_clear()
        torch.set_num_threads(cores)
