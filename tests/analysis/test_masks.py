import numpy as np
import pytest
from pycocotools import mask as mask_utils

from modomo.analysis.masks import (
    box_iou,
    clip_masks_to_boxes,
    decode_rle,
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
