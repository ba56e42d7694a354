"""Host processes (modomo.inference.host_processes): scenes decoded and finished in separate
processes give the rows the worker's own process gives; errors come back with their type and
stage; a killed host process fails only what it held and is replaced; host processes end with
their worker. Also the half-size decoding of large JPEGs the pipeline asks for."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import supervision as sv
from PIL import Image

from modomo.analysis.colors import Palette
from modomo.analysis.depth import DepthMap
from modomo.analysis.masks import BoxMask
from modomo.config import load_settings
from modomo.images import ImageError, load_image
from modomo.inference import (
    STAGES,
    DetectionPipeline,
    HostProcessError,
    HostProcesses,
    Inferred,
    failed_stage,
    finish_scene,
)
from modomo.inference.pipeline import DEPTH_SHORT_SIDE, INPUT_SIDE
from modomo.models.registry import ModelRegistry
from tests.fixture_scenes import FIXTURE_WEIGHTS, synthetic_scenes
from tests.support import REPO, encode

REDUCED = (INPUT_SIDE, DEPTH_SHORT_SIDE)


def sideways_jpeg(rgb: np.ndarray, quality: int = 92) -> bytes:
    """A JPEG of ``rgb`` stored turned a quarter, with EXIF orientation 6 to turn it back."""
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    Image.fromarray(rgb).transpose(Image.Transpose.ROTATE_90).save(
        buffer, "JPEG", quality=quality, exif=exif
    )
    return buffer.getvalue()


def room(height: int, width: int, seed: int = 3) -> np.ndarray:
    """A smooth (H, W, 3) uint8 picture: a synthetic room scaled up (camera-like, not noise)."""
    small = synthetic_scenes(1, seed=seed)[0][0]
    return np.asarray(Image.fromarray(small).resize((width, height), Image.BICUBIC))


# --- the half-size decoding -----------------------------------------------------------------
def test_a_large_jpeg_is_decoded_at_half_size_upright() -> None:
    rgb = room(1800, 2400)
    data = sideways_jpeg(rgb)
    whole = load_image(data, max_pixels=10**8)
    half = load_image(data, max_pixels=10**8, reduced=REDUCED)
    assert whole.reduction == 1 and whole.rgb.shape == (1800, 2400, 3)
    assert half.reduction == 2 and half.rgb.shape == (900, 1200, 3)
    assert half.size == whole.size == (1800, 2400)
    # about the 2x2 means of the whole decode, the right way up
    means = whole.rgb.reshape(900, 2, 1200, 2, 3).mean(axis=(1, 3))
    assert np.abs(means - half.rgb).mean() < 2.0


@pytest.mark.parametrize(
    ("height", "width", "fmt", "reduction"),
    [
        (1440, 1920, "JPEG", 1),  # half would be narrower than the models' copy
        (600, 4200, "JPEG", 1),  # a panorama: half would be lower than depth's 518
        (4200, 4200, "JPEG", 4),  # 1050 still covers 1024
        (1800, 2400, "PNG", 1),  # only JPEGs decode reduced
    ],
)
def test_a_reduction_never_goes_below_the_models_copy(
    height: int, width: int, fmt: str, reduction: int
) -> None:
    data = encode(room(height, width), fmt)
    image = load_image(data, max_pixels=10**8, reduced=REDUCED)
    assert image.reduction == reduction
    assert image.size == (height, width)
    assert image.rgb.shape == (-(-height // reduction), -(-width // reduction), 3)


def test_finishing_a_half_size_decode_gives_the_same_masks_and_close_palettes() -> None:
    data = sideways_jpeg(room(1800, 2400, seed=5))
    whole = load_image(data, max_pixels=10**8)
    half = load_image(data, max_pixels=10**8, reduced=REDUCED)
    boxes = np.array([[100, 200, 900, 1000], [1200, 300, 2300, 1700], [0, 0, 2400, 1800]])
    det = sv.Detections(xyxy=boxes.astype(np.float32), confidence=np.full(3, 0.9, np.float32))
    det.data["category"] = np.array(["sofa", "rug", "wall_art"], dtype=object)
    det.data["taxonomy_group"] = np.array(["seating", "soft_furnishings", "decor"], dtype=object)
    masks = np.empty(3, dtype=object)
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        yy, xx = np.mgrid[y1:y2, x1:x2]
        ellipse = ((yy - (y1 + y2) / 2) / ((y2 - y1) / 2)) ** 2 + (
            (xx - (x1 + x2) / 2) / ((x2 - x1) / 2)
        ) ** 2 <= 1
        masks[i] = BoxMask.from_crop(int(x1), int(y1), ellipse, 1800, 2400)
    det.data["box_mask"] = masks
    depth = DepthMap(
        np.linspace(0.5, 3.0, 259 * 345, dtype=np.float32).reshape(259, 345),
        "metres",
        "stand-in@test",
        1800,
        2400,
    )
    labels = {"detector": "stand-in@test", "segmenter": "stand-in@test"}
    a, b = (
        finish_scene(image, Inferred(det, depth), STAGES, labels, palette_size=5)
        for image in (whole, half)
    )
    assert [o["mask_rle"] for o in a.objects] == [o["mask_rle"] for o in b.objects]
    assert [o["bbox"] for o in a.objects] == [o["bbox"] for o in b.objects]
    assert [o["depth_median"] for o in a.objects] == [o["depth_median"] for o in b.objects]
    assert a.depth_png == b.depth_png and a.depth_info == b.depth_info
    for x, y in zip(a.objects, b.objects, strict=True):
        # each colour to the other palette's nearest, share-weighted (the bench's measure):
        # the dominant colour alone flips between two clusters of equal share
        palettes = Palette.from_dict(x["colors"]), Palette.from_dict(y["colors"])
        for one, other in (palettes, palettes[::-1]):
            labs = np.array([c.lab for c in other.colors])
            distance = [c.share * np.linalg.norm(labs - c.lab, axis=1).min() for c in one.colors]
            assert sum(distance) < 1.0
    assert a.colors is not None and b.colors is not None


# --- host processes -------------------------------------------------------------------------
@pytest.fixture
def registry(tiny_models: dict[str, Path], tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(
        load_settings(
            data_dir=tmp_path,
            device="cpu",
            detector_weights=str(FIXTURE_WEIGHTS),
            segmenter_weights=str(tiny_models["sam2"]),
            depth_weights=str(tiny_models["depth_anything"]),
            depth_fallback_weights=str(tiny_models["zoedepth"]),
        )
    )


def test_scenes_finished_in_host_processes_equal_those_finished_here(
    registry: ModelRegistry,
) -> None:
    files = [sideways_jpeg(room(1500, 2200, seed=s)) for s in range(3)]
    files += [encode(rgb) for rgb, _, _ in synthetic_scenes(3, seed=11)]  # PNGs, small
    here = DetectionPipeline(registry, STAGES, batch_size=2)
    hosts = HostProcesses(2)
    try:
        there = DetectionPipeline(registry, STAGES, batch_size=2, hosts=hosts)
        local = [here.decode(data, max_pixels=10**8) for data in files]
        remote = [there.decode(data, max_pixels=10**8) for data in files]
        assert {scene.lane for scene in remote} == {0, 1}  # both processes took scenes
        for a, b in zip(local, remote, strict=True):
            assert a.size == b.size
            assert np.array_equal(a.view, b.view)
        inferred = here.infer(local)
        results_here = [here.finish(s, i) for s, i in zip(local, inferred, strict=True)]
        results_there = [there.finish(s, i) for s, i in zip(remote, inferred, strict=True)]
    finally:
        hosts.close()
    assert sum(len(r.objects) for r in results_here) > 0
    for a, b in zip(results_here, results_there, strict=True):
        assert a.objects == b.objects
        assert a.colors == b.colors
        assert a.depth_png == b.depth_png and a.depth_info == b.depth_info
    # the host processes' seconds are added to the pipeline's clock
    assert {"decode", "prepare", "masks", "colors"} <= set(there.clock.seconds)


def test_errors_come_back_with_their_type_reason_and_stage() -> None:
    hosts = HostProcesses(1)
    try:
        with pytest.raises(ImageError, match="truncated or corrupt|not an image"):
            hosts.load(b"\xff\xd8\xff\xe0 not a jpeg", max_pixels=10**8, input_side=INPUT_SIDE)
        scene = hosts.load(encode(room(300, 400)), max_pixels=10**8, input_side=INPUT_SIDE)
        det = sv.Detections(xyxy=np.array([[10, 10, 50, 50]], np.float32))  # no category
        pipeline = DetectionPipeline(_NoModels(), ("detect",), batch_size=1, hosts=hosts)
        with pytest.raises(KeyError) as raised:
            pipeline.finish(scene, Inferred(det, None))
        assert failed_stage(raised.value) == "detect"
        # a scene is finished once: its pixels are gone
        with pytest.raises(HostProcessError, match="no longer holds"):
            pipeline.finish(scene, Inferred(det, None))
    finally:
        hosts.close()


class _NoModels:
    device = "cpu"

    def detector(self) -> object:
        class _Weights:
            label = "none@test"

        class _Detector:
            weights = _Weights()
            backend = "none"

        return _Detector()


def test_a_killed_host_process_fails_what_it_held_and_is_replaced() -> None:
    hosts = HostProcesses(1)
    try:
        data = encode(room(300, 400))
        held = hosts.load(data, max_pixels=10**8, input_side=INPUT_SIDE)
        (pid,) = hosts.pids()
        os.kill(pid, signal.SIGKILL)
        spec_pipeline = DetectionPipeline(_NoModels(), ("colors",), batch_size=1, hosts=hosts)
        with pytest.raises(HostProcessError, match=re.escape(f"(pid {pid}) ended")):
            spec_pipeline.finish(held, Inferred(sv.Detections.empty(), None))
        # the next scene goes to a fresh process, and comes out whole
        scene = hosts.load(data, max_pixels=10**8, input_side=INPUT_SIDE)
        assert hosts.pids() != [pid]
        result = spec_pipeline.finish(scene, Inferred(sv.Detections.empty(), None))
        assert result.colors is not None and result.objects == []
    finally:
        hosts.close()
    assert hosts.pids() == []


def test_host_processes_end_with_the_process_that_started_them(tmp_path: Path) -> None:
    script = (
        "import sys, time\n"
        "from modomo.inference import HostProcesses\n"
        "from tests.support import encode\n"
        "import numpy as np\n"
        "hosts = HostProcesses(2)\n"
        "for _ in range(2):\n"
        "    data = encode(np.zeros((64, 64, 3), np.uint8))\n"
        "    hosts.load(data, max_pixels=10**6, input_side=1024)\n"
        "print(*hosts.pids(), flush=True)\n"
        "time.sleep(600)\n"
    )
    owner = subprocess.Popen(
        [sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert owner.stdout is not None
        pids = [int(p) for p in owner.stdout.readline().split()]
        assert len(pids) == 2 and all(_alive(p) for p in pids)
        owner.kill()  # SIGKILL: no clean-up runs in the owner
        owner.wait(10)
        deadline = time.monotonic() + 20
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(p) for p in pids), "host processes outlived their owner"
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait(10)
        assert owner.stdout is not None
        owner.stdout.close()


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, or a pid gone, counts as ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def test_a_host_process_whose_worker_ends_before_it_is_ready_ends_quietly() -> None:
    """The worker child stops (its models fail to load) while its host process is still
    importing: the host process finds its pipe closed and ends without a traceback."""
    script = (
        "import os\n"
        "from modomo.inference import HostProcesses\n"
        "hosts = HostProcesses(1)\n"
        "print(*hosts.pids(), flush=True)\n"
        "os._exit(0)\n"  # at once, as a killed child: no clean-up
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    # stderr is read to its end: the host process, which shares it, has ended too
    (pid,) = (int(p) for p in done.stdout.split())
    assert not _alive(pid)
    assert "Traceback" not in done.stderr, done.stderr
