"""Train the tiny YOLO detector that the tests use: `tests/fixtures/fixture_detector.pt`.

Why this exists: real detector weights (COCO-trained YOLO, Grounding DINO …) are downloaded from
the internet, and CI machines have no internet. Tests that want to check *real* detections -
boxes that land on the objects, with the right class names - run a tiny detector this repository
trains itself, on synthetic "rooms" drawn here, and compare its output with the ground truth the
drawing code knows exactly.

A scene is a plain wall with a floor band and 1-4 objects, each class drawn as its own easy
shape and colour (`CLASS_NAMES` are names of the interior taxonomy, so the model's classes map to
themselves):

- ``sofa``: wide dark-red rounded body with a back, arms and short legs;
- ``potted_plant``: green disc of foliage over a small brown pot;
- ``tv``: black screen in a grey frame on a thin stand;
- ``lamp``: yellow trapezoid shade on a thin pole with a round base.

The model is YOLO11 at half the width of YOLO11n (``width_multiple`` 0.125, ~0.8 M parameters),
built from a model YAML written here, never from a pretrained ``.pt``, and trained from scratch on
CPU (about 12 epochs of 600 scenes; minutes on two cores); the checkpoint ultralytics writes
(fp16 weights, optimizer stripped) is about 1.9 MB.

Nothing here touches the network: ``YOLO_OFFLINE=1`` is set before ultralytics is imported
(which turns off its online check, the pip update check, analytics and crash reports) and the
font check that ultralytics runs while reading a dataset (it tries to download Arial.ttf) is
disabled during training. Run folders go to a temporary directory.

Usage::

    uv run --frozen python scripts/train_fixture_detector.py [--epochs N] [--seed S]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# Before ultralytics is imported anywhere in this process: its import-time online check (DNS
# look-ups) and everything gated on it (update check, analytics, Sentry) stay off.
os.environ.setdefault("YOLO_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "tests" / "fixtures" / "fixture_detector.pt"

CLASS_NAMES: tuple[str, ...] = ("sofa", "potted_plant", "tv", "lamp")

# Training and validation scenes come from `default_rng((TRAIN_STREAM, seed, split))`; scenes the
# tests draw with `default_rng(seed)` (an int seed) are therefore never the training scenes.
TRAIN_STREAM = 0x5CE2E

# YOLO11 detection model (ultralytics/cfg/models/11/yolo11.yaml) at depth 0.5 (as YOLO11n) and
# width 0.125 (half of YOLO11n): ~0.8 M parameters, 2.4 GFLOPs at 640.
MODEL_YAML = """\
# Fixture detector: YOLO11 with depth_multiple 0.5, width_multiple 0.125, 4 classes.
nc: {nc}
depth_multiple: 0.50
width_multiple: 0.125

backbone:
  - [-1, 1, Conv, [64, 3, 2]] # 0-P1/2
  - [-1, 1, Conv, [128, 3, 2]] # 1-P2/4
  - [-1, 2, C3k2, [256, False, 0.25]]
  - [-1, 1, Conv, [256, 3, 2]] # 3-P3/8
  - [-1, 2, C3k2, [512, False, 0.25]]
  - [-1, 1, Conv, [512, 3, 2]] # 5-P4/16
  - [-1, 2, C3k2, [512, True]]
  - [-1, 1, Conv, [1024, 3, 2]] # 7-P5/32
  - [-1, 2, C3k2, [1024, True]]
  - [-1, 1, SPPF, [1024, 5]] # 9
  - [-1, 2, C2PSA, [1024]] # 10

head:
  - [-1, 1, nn.Upsample, [None, 2, "nearest"]]
  - [[-1, 6], 1, Concat, [1]] # cat backbone P4
  - [-1, 2, C3k2, [512, False]] # 13
  - [-1, 1, nn.Upsample, [None, 2, "nearest"]]
  - [[-1, 4], 1, Concat, [1]] # cat backbone P3
  - [-1, 2, C3k2, [256, False]] # 16 (P3/8-small)
  - [-1, 1, Conv, [256, 3, 2]]
  - [[-1, 13], 1, Concat, [1]] # cat head P4
  - [-1, 2, C3k2, [512, False]] # 19 (P4/16-medium)
  - [-1, 1, Conv, [512, 3, 2]]
  - [[-1, 10], 1, Concat, [1]] # cat head P5
  - [-1, 2, C3k2, [1024, True]] # 22 (P5/32-large)
  - [[16, 19, 22], 1, Detect, [nc]] # Detect(P3, P4, P5)
"""

Colour = tuple[int, int, int]
# A drawer paints one object whose box is (x0, y0, x1, y1); `paint(part)` gives the fill for a
# named part, so the same drawer paints the image (colours) and the object's mask (255).
Drawer = Callable[[ImageDraw.ImageDraw, tuple[int, int, int, int], Callable[[str], object]], None]


def _jitter(rng: np.random.Generator, base: Colour, spread: int) -> Colour:
    values = np.asarray(base) + rng.integers(-spread, spread + 1, size=3)
    return tuple(int(v) for v in np.clip(values, 0, 255))  # type: ignore[return-value]


def _draw_sofa(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], paint) -> None:
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    leg = max(2, h // 10)
    arm = max(3, w // 9)
    body_bottom = y1 - leg
    seat_top = y0 + int(h * 0.45)
    radius = max(2, w // 20)
    # back, seat and arms
    draw.rounded_rectangle(
        (x0 + arm // 2, y0, x1 - arm // 2, seat_top + radius), radius, paint("back")
    )
    draw.rounded_rectangle((x0, seat_top, x1, body_bottom), radius, paint("seat"))
    arm_top = y0 + int(h * 0.3)
    draw.rounded_rectangle((x0, arm_top, x0 + arm, body_bottom), radius, paint("arm"))
    draw.rounded_rectangle((x1 - arm, arm_top, x1, body_bottom), radius, paint("arm"))
    # legs
    for lx in (x0 + arm // 2, x1 - arm // 2 - max(2, w // 30)):
        draw.rectangle((lx, body_bottom, lx + max(2, w // 30), y1), paint("leg"))


def _draw_plant(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], paint) -> None:
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    pot_h = int(h * 0.32)
    pot_top = y1 - pot_h
    cx = (x0 + x1) / 2
    top_w = w * 0.3
    bottom_w = w * 0.22
    draw.ellipse((x0, y0, x1, pot_top + int(h * 0.06)), paint("leaves"))
    draw.polygon(
        [(cx - top_w, pot_top), (cx + top_w, pot_top), (cx + bottom_w, y1), (cx - bottom_w, y1)],
        paint("pot"),
    )


def _draw_tv(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], paint) -> None:
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    screen_bottom = y0 + int(h * 0.78)
    frame = max(2, w // 25)
    cx = (x0 + x1) // 2
    neck = max(2, w // 16)
    base_h = max(2, h // 18)
    # stand: neck and foot
    draw.rectangle((cx - neck // 2, screen_bottom, cx + neck // 2, y1), paint("stand"))
    draw.rectangle((cx - w // 5, y1 - base_h, cx + w // 5, y1), paint("stand"))
    # frame and screen
    draw.rectangle((x0, y0, x1, screen_bottom), paint("frame"))
    draw.rectangle((x0 + frame, y0 + frame, x1 - frame, screen_bottom - frame), paint("screen"))


def _draw_lamp(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], paint) -> None:
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    cx = (x0 + x1) / 2
    shade_h = int(h * 0.3)
    top_half = w * 0.22
    pole = max(1, w // 14)
    base_h = max(2, h // 20)
    draw.rectangle((cx - pole, y0 + shade_h, cx + pole, y1), paint("pole"))
    draw.ellipse((x0 + w * 0.15, y1 - base_h * 2, x1 - w * 0.15, y1), paint("pole"))
    draw.polygon(
        [(cx - top_half, y0), (cx + top_half, y0), (x1, y0 + shade_h), (x0, y0 + shade_h)],
        paint("shade"),
    )


def _sofa_size(rng: np.random.Generator, size: int) -> tuple[int, int]:
    w = rng.uniform(0.28, 0.48) * size
    return int(w), int(w * rng.uniform(0.42, 0.58))


def _plant_size(rng: np.random.Generator, size: int) -> tuple[int, int]:
    h = rng.uniform(0.16, 0.32) * size
    return int(h * rng.uniform(0.6, 0.8)), int(h)


def _tv_size(rng: np.random.Generator, size: int) -> tuple[int, int]:
    w = rng.uniform(0.18, 0.34) * size
    return int(w), int(w * rng.uniform(0.68, 0.78))


def _lamp_size(rng: np.random.Generator, size: int) -> tuple[int, int]:
    h = rng.uniform(0.26, 0.5) * size
    return int(h * rng.uniform(0.3, 0.4)), int(h)


# Per class: drawer, size sampler, base colours per part (jittered per object).
_CLASSES: tuple[tuple[Drawer, Callable[..., tuple[int, int]], dict[str, Colour]], ...] = (
    (_draw_sofa, _sofa_size, {"back": (120, 22, 30), "seat": (150, 28, 36), "leg": (50, 30, 20)}),
    (_draw_plant, _plant_size, {"leaves": (40, 150, 50), "pot": (140, 80, 40)}),
    (_draw_tv, _tv_size, {"frame": (120, 120, 125), "screen": (12, 12, 16), "stand": (70, 70, 75)}),
    (_draw_lamp, _lamp_size, {"shade": (245, 215, 60), "pole": (60, 60, 60)}),
)


def make_scene(
    rng: np.random.Generator, size: int = 256
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw one synthetic room with 1-4 objects; deterministic given the state of `rng`.

    Returns:
        image: (size, size, 3) uint8 RGB - a wall colour, a floor band, light noise, objects.
        boxes: (N, 4) float32 xyxy in pixels, tight around the pixels each object covers
            (x1, y1 exclusive: a box (0, 0, 3, 2) covers pixels x 0..2, y 0..1).
        class_ids: (N,) int64 indices into `CLASS_NAMES`.
    """
    wall = _jitter(rng, (215, 205, 185), 30)
    floor = _jitter(rng, (150, 115, 80), 35)
    floor_y = int(rng.uniform(0.55, 0.75) * size)
    canvas = Image.new("RGB", (size, size), wall)
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((0, floor_y, size, size), floor)

    placed: list[tuple[int, int, int, int]] = []
    boxes: list[tuple[float, float, float, float]] = []
    class_ids: list[int] = []
    for _ in range(int(rng.integers(1, 5))):
        cls = int(rng.integers(len(CLASS_NAMES)))
        drawer, sampler, base = _CLASSES[cls]
        w, h = sampler(rng, size)
        colours = {part: _jitter(rng, colour, 18) for part, colour in base.items()}
        colours.setdefault("arm", colours.get("seat", (0, 0, 0)))
        for _attempt in range(30):
            x0 = int(rng.integers(2, max(3, size - w - 2)))
            # stands on the floor band where it fits, else as low as it fits
            bottom = int(rng.integers(min(floor_y + 4, size - 3), size - 2))
            y0 = max(2, bottom - h)
            box = (x0, y0, x0 + w, y0 + h)
            if all(_separate(box, other) for other in placed):
                break
        else:
            continue
        mask = Image.new("L", (size, size), 0)
        drawer(ImageDraw.Draw(mask), box, lambda _part: 255)
        drawer(draw, box, colours.__getitem__)
        ys, xs = np.nonzero(np.asarray(mask))
        placed.append(box)
        boxes.append((xs.min(), ys.min(), xs.max() + 1.0, ys.max() + 1.0))
        class_ids.append(cls)

    image = np.asarray(canvas, dtype=np.int16)
    image = image + rng.normal(0.0, 4.0, size=image.shape).round().astype(np.int16)
    return (
        np.clip(image, 0, 255).astype(np.uint8),
        np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        np.asarray(class_ids, dtype=np.int64),
    )


def _separate(a: tuple[int, int, int, int], b: tuple[int, int, int, int], gap: int = 3) -> bool:
    """Whether boxes `a` and `b` are at least `gap` pixels apart on some axis."""
    return a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]


def write_dataset(root: Path, n_train: int, n_val: int, seed: int, size: int = 256) -> Path:
    """Write a YOLO-format dataset of synthetic scenes under `root`; return its data.yaml path.

    Layout: ``images/{train,val}/NNNNN.png`` and ``labels/{train,val}/NNNNN.txt`` with one
    ``class cx cy w h`` line per object (normalised to [0, 1]); ``data.yaml`` names the classes.
    """
    root = Path(root)
    for split, count in (("train", n_train), ("val", n_val)):
        rng = np.random.default_rng((TRAIN_STREAM, seed, 0 if split == "train" else 1))
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for index in range(count):
            image, boxes, class_ids = make_scene(rng, size)
            height, width = image.shape[:2]
            Image.fromarray(image).save(root / "images" / split / f"{index:05d}.png")
            lines = []
            for (x0, y0, x1, y1), cls in zip(boxes.tolist(), class_ids.tolist(), strict=True):
                cx, cy = (x0 + x1) / 2 / width, (y0 + y1) / 2 / height
                bw, bh = (x1 - x0) / width, (y1 - y0) / height
                lines.append(f"{cls} {cx:.6f} {cy:.6f} {bw:.6f} {bh:.6f}\n")
            (root / "labels" / split / f"{index:05d}.txt").write_text("".join(lines))
    data_yaml = root / "data.yaml"
    # JSON strings are valid YAML scalars: paths with odd characters stay intact.
    data_yaml.write_text(
        f"path: {json.dumps(str(root.resolve()))}\n"
        "train: images/train\n"
        "val: images/val\n"
        f"names: {json.dumps(list(CLASS_NAMES))}\n"
    )
    return data_yaml


@contextlib.contextmanager
def _no_font_download() -> Iterator[None]:
    """Skip ultralytics' dataset-time font check (it downloads Arial.ttf when it is missing)."""
    import ultralytics.data.utils as data_utils

    original = data_utils.check_font
    data_utils.check_font = lambda *args, **kwargs: None
    try:
        yield
    finally:
        data_utils.check_font = original


def train(
    out: Path,
    *,
    epochs: int,
    imgsz: int = 256,
    seed: int = 0,
    n_train: int = 600,
    n_val: int = 100,
    batch: int = 32,
) -> tuple[Path, float]:
    """Train the fixture detector from scratch on CPU and copy its best checkpoint to `out`.

    Returns `out` and the validation mAP@0.5 of the saved weights.
    """
    from ultralytics import YOLO

    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="fixture-detector-") as tmp:
        work = Path(tmp)
        data_yaml = write_dataset(work / "data", n_train, n_val, seed, size=imgsz)
        model_yaml = work / "fixture_detector.yaml"
        model_yaml.write_text(MODEL_YAML.format(nc=len(CLASS_NAMES)))
        model = YOLO(str(model_yaml), task="detect")
        with _no_font_download():
            model.train(
                data=str(data_yaml),
                epochs=epochs,
                imgsz=imgsz,
                batch=batch,
                device="cpu",
                workers=0,
                seed=seed,
                deterministic=True,
                pretrained=False,
                amp=False,
                plots=False,
                verbose=False,
                project=str(work / "runs"),
                name="train",
                exist_ok=True,
                warmup_epochs=1,
                optimizer="AdamW",
                lr0=0.004,
                close_mosaic=max(1, epochs // 4),
                patience=epochs,
            )
            best = Path(model.trainer.best)
            metrics = YOLO(str(best)).val(
                data=str(data_yaml),
                imgsz=imgsz,
                batch=batch,
                device="cpu",
                workers=0,
                plots=False,
                verbose=False,
                project=str(work / "runs"),
                name="val",
                exist_ok=True,
            )
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(best, out)
    return out, float(metrics.box.map50)


def main() -> None:
    """Command line: train, write the checkpoint, print its validation mAP@0.5."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="checkpoint to write")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-train", type=int, default=600, help="training scenes")
    args = parser.parse_args()

    start = time.perf_counter()
    out, map50 = train(args.out, epochs=args.epochs, seed=args.seed, n_train=args.n_train)
    elapsed = time.perf_counter() - start
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB) in {elapsed:.0f} s")
    print(f"validation mAP@0.5: {map50:.4f}")


if __name__ == "__main__":
    main()
