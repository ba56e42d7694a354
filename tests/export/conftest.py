"""Synthetic export scenes: numpy images with filled shapes, their masks as COCO RLE.

No database and no workers: every :class:`~modomo.export.records.ExportScene` is built here,
with ``read_image`` returning PNG (or JPEG) bytes of the drawn image and each object's box the
tight box of its mask (COCO ``[x, y, w, h]``, pixels).
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest
from PIL import Image

from modomo.analysis.masks import encode_rle, mask_bbox_xyxy, xyxy_to_xywh
from modomo.analysis.taxonomy import CATEGORIES
from modomo.export.records import ExportObject, ExportScene


def rectangle(height: int, width: int, x: int, y: int, w: int, h: int) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    mask[y : y + h, x : x + w] = True
    return mask


def ellipse(height: int, width: int, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    rows, cols = np.mgrid[0:height, 0:width]
    return ((cols - cx) / rx) ** 2 + ((rows - cy) / ry) ** 2 <= 1.0


@dataclass
class Built:
    """A scene and, per object, the mask it was made from (None: an object without mask)."""

    scene: ExportScene
    masks: list[np.ndarray | None] = field(default_factory=list)
    image: np.ndarray | None = None


def _encode(image: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt)
    return buffer.getvalue()


def build_scene(
    scene_id: str,
    split: str,
    objects: list[tuple[str, np.ndarray | None, list[float] | None]],
    *,
    height: int,
    width: int,
    room_type: str | None = "living_room",
    licence: str | None = "CC-BY-4.0",
    fmt: str = "PNG",
) -> Built:
    """A scene whose objects are ``(category, mask or None, bbox for a maskless object)``."""
    rng = np.random.default_rng(zlib.crc32(scene_id.encode()))
    image = np.full((height, width, 3), 235, dtype=np.uint8)
    built_objects = []
    masks: list[np.ndarray | None] = []
    for index, (category, mask, box) in enumerate(objects):
        if mask is not None:
            image[mask] = rng.integers(0, 200, 3, dtype=np.uint8)
            xyxy = mask_bbox_xyxy(mask)
            assert xyxy is not None
            bbox = xyxy_to_xywh(xyxy)
            rle = encode_rle(mask)
            area = int(mask.sum())
        else:
            assert box is not None
            bbox, rle, area = [float(v) for v in box], None, None
        built_objects.append(
            ExportObject(
                id=f"{scene_id}-obj{index}",
                bbox=bbox,
                category=category,
                taxonomy_group=CATEGORIES[category].group,
                confidence=0.5 + index / 100,
                mask_rle=rle,
                mask_area=area,
                depth_median=1.5 + index,
                depth_min=1.0,
                depth_max=3.0,
            )
        )
        masks.append(mask)
    data = _encode(image, fmt)
    ext = "jpg" if fmt == "JPEG" else fmt.lower()
    scene = ExportScene(
        id=scene_id,
        split=split,
        file_name=f"{scene_id}.{ext}",
        width=width,
        height=height,
        source="fixture",
        source_key=f"key-{scene_id}",
        image_url=f"https://example.org/{scene_id}.{ext}",
        licence=licence,
        room_type=room_type,
        style="modern",
        scene_type="scene",
        colors={"dominant": ["#aabbcc"]},
        depth_info={"unit": "m", "min": 0.5, "max": 6.25},
        models={"detector": "yolo-fixture@1", "segmenter": "sam2-fixture@2"},
        objects=built_objects,
        read_image=lambda: data,
    )
    return Built(scene=scene, masks=masks, image=image)


def standard_scenes() -> list[Built]:
    """Scenes over every split: ellipses, rectangles, a two-part mask, a mask touching the
    border, a maskless object, a background scene, two licences and a JPEG."""
    h, w = 96, 128
    two_part = rectangle(h, w, 8, 10, 20, 30) | ellipse(h, w, 95, 60, 18, 12)
    return [
        build_scene(
            "scene-a",
            "train",
            [
                ("sofa", rectangle(h, w, 10, 20, 50, 30), None),
                ("potted_plant", ellipse(h, w, 90, 40, 15, 25), None),
            ],
            height=h,
            width=w,
        ),
        build_scene(
            "scene-b",
            "train",
            [
                ("coffee_table", two_part, None),
                ("lamp", None, [100.0, 5.0, 20.0, 30.0]),
            ],
            height=h,
            width=w,
            licence="CC0-1.0",
        ),
        build_scene(
            "scene-c",
            "train",
            [("rug", rectangle(h, w, 0, 70, 128, 26), None)],  # touches three borders
            height=h,
            width=w,
            room_type=None,
            licence=None,
            fmt="JPEG",
        ),
        build_scene("scene-d", "train", [], height=h, width=w),  # background image
        build_scene(
            "scene-e",
            "val",
            [
                ("bed", ellipse(64, 80, 40, 32, 30, 20), None),
                ("nightstand", rectangle(64, 80, 2, 2, 10, 12), None),
                ("vase", ellipse(64, 80, 70, 10, 6, 8), None),
            ],
            height=64,
            width=80,
            room_type="bedroom",
        ),
        build_scene(
            "scene-f",
            "test",
            [("chair", ellipse(h, w, 64, 48, 20, 30), None)],
            height=h,
            width=w,
            room_type="bedroom",
        ),
    ]


@pytest.fixture
def scenes() -> list[Built]:
    return standard_scenes()


@pytest.fixture
def make_scene() -> Callable[..., Built]:
    return build_scene
