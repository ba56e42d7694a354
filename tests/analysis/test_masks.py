import numpy as np
import pytest
from pycocotools import mask as mask_utils

from modomo.analysis.masks import (
    BoxMask,
    box_iou,
    box_region,
    clip_masks_to_boxes,
    decode_rle,
    encode_box_rle,
    encode_rle,
    mask_bbox_xyxy,
    xywh_to_xyxy,
    xyxy_to_xywh,
)


def test_rle_round_trip_is_exact_and_json_able() -> None:
    rng = np.random.default_rng(0)
    mask = rng.random((37, 53)) > 0.6
    rle = encode_rle(mask)
    assert rle["size"] == [37, 53] and isinstance(rle["counts"], str)
    assert np.array_equal(decode_rle(rle), mask)
    # the stored form is what pycocotools itself reads: area agrees with the pixel count
    assert mask_utils.area({"size": rle["size"], "counts": rle["counts"].encode()}) == mask.sum()


def test_uncompressed_rle_decodes() -> None:
    # column-major runs (COCO): 2 off, 3 on, 1 off in a 3x2 image
    mask = decode_rle({"size": [3, 2], "counts": [2, 3, 1]})
    assert mask.tolist() == [[False, True], [False, True], [True, False]]


def test_encode_rejects_non_2d() -> None:
    with pytest.raises(ValueError, match="mask"):
        encode_rle(np.zeros((2, 3, 4), bool))


def test_mask_bbox_is_xyxy_with_exclusive_edges() -> None:
    mask = np.zeros((10, 20), bool)
    mask[2:5, 3:9] = True
    assert mask_bbox_xyxy(mask).tolist() == [3, 2, 9, 5]
    assert mask_bbox_xyxy(np.zeros((4, 4), bool)) is None


def test_box_conventions_and_iou() -> None:
    assert xyxy_to_xywh(np.array([10, 20, 40, 60])) == [10, 20, 30, 40]
    assert xywh_to_xyxy([10, 20, 30, 40]).tolist() == [10, 20, 40, 60]
    a = np.array([0, 0, 10, 10.0])
    assert box_iou(a, a) == 1.0
    assert box_iou(a, np.array([5, 0, 15, 10.0])) == pytest.approx(50 / 150)
    assert box_iou(a, np.array([20, 20, 30, 30.0])) == 0.0


def test_clip_masks_to_boxes_keeps_a_margin() -> None:
    masks = np.ones((1, 100, 100), bool)
    clipped = clip_masks_to_boxes(masks, np.array([[20, 30, 60, 50]]), margin=0.1)
    assert mask_bbox_xyxy(clipped[0]).tolist() == [16, 28, 64, 52]
    assert masks.all()  # input untouched


def random_box_masks(count: int, seed: int = 0) -> list[BoxMask]:
    """Box masks of random regions and densities, many touching the image's border or
    spanning its full height (where runs join across columns), in C and Fortran order."""
    rng = np.random.default_rng(seed)
    masks = []
    for index in range(count):
        height, width = (int(v) for v in rng.integers(1, 40, 2))
        x1, y1 = int(rng.integers(0, width)), int(rng.integers(0, height))
        if index % 3 == 0:
            y1 = 0
        x2, y2 = int(rng.integers(x1, width + 1)), int(rng.integers(y1, height + 1))
        if index % 4 == 0:
            y2 = height
        if index % 5 == 0:
            x2 = width
        crop = rng.random((y2 - y1, x2 - x1)) < rng.random()
        if index % 2:
            crop = np.asfortranarray(crop)
        masks.append(BoxMask.from_crop(x1, y1, crop, height, width))
    return masks


def test_box_mask_rle_equals_pycocotools_on_random_masks() -> None:
    for mask in random_box_masks(2000):
        full = mask.to_full()
        expected = mask_utils.encode(np.asfortranarray(full.astype(np.uint8)))
        rle = encode_box_rle(mask)
        assert rle["counts"].encode() == expected["counts"], (mask.x, mask.y, mask.shape)
        assert rle == encode_rle(full)
        assert mask.area == int(full.sum())
        box = mask.bbox_xyxy()
        assert (box is None and not full.any()) or box.tolist() == mask_bbox_xyxy(full).tolist()


def test_a_box_mask_outside_its_image_is_refused() -> None:
    with pytest.raises(ValueError, match="outside"):
        BoxMask.from_crop(5, 0, np.ones((2, 2), bool), 4, 6)


def test_box_mask_samples_are_its_pixels_and_bounded() -> None:
    for mask in random_box_masks(300, seed=1):
        rows, cols = mask.sample(20, seed=3)
        assert rows.size == min(20, mask.area) or (mask.area > 20 and rows.size <= 20)
        assert mask.to_full()[rows, cols].all()
        again = mask.sample(20, seed=3)
        assert np.array_equal(again[0], rows) and np.array_equal(again[1], cols)
    big = BoxMask.from_crop(10, 20, np.ones((1000, 2000), bool), 1500, 2500)
    rows, cols = big.sample(4096)
    assert 3500 < rows.size <= 4096  # about the count asked for, never more
    assert rows.min() >= 20 and rows.max() < 1020 and cols.min() >= 10 and cols.max() < 2010


def test_box_region_covers_the_pixels_a_box_touches() -> None:
    assert box_region(np.array([1.5, 2.2, 5.1, 7.0]), 10, 10) == (1, 2, 6, 7)
    # grown by a margin, rounded, clipped to the image
    assert box_region(np.array([0.0, 0.0, 100.0, 50.0]), 40, 90, margin=0.05) == (0, 0, 90, 40)
    assert box_region(np.array([20.0, 10.0, 60.0, 30.0]), 100, 100, margin=0.1) == (16, 8, 64, 32)
    # a box wholly outside the image covers nothing
    x1, y1, x2, y2 = box_region(np.array([120.0, 5.0, 130.0, 9.0]), 100, 100)
    assert x2 - x1 == 0
