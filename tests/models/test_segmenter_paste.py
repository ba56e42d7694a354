"""Masks pasted into their box region equal SAM's full-size post-processing clipped to the
box: on random smooth and ragged logits (on a torch device and from the logits' runs on the
CPU), and through the
random-weight SAM 2.1 on test images against the processor's own ``post_process_masks``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from modomo.analysis.masks import box_region, clip_masks_to_boxes
from modomo.models import resolve
from modomo.models.segmenter import (
    BOX_MARGIN,
    Sam2Segmenter,
    bilinear_taps,
    masks_from_logits,
    paste_in_region,
    paste_masks,
)
from tests.fixture_scenes import synthetic_scenes


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 1.0


@pytest.mark.parametrize("smoothing", [1, 3, 9, 31])
def test_a_pasted_region_equals_the_full_upsampling_clipped(smoothing: int) -> None:
    rng = np.random.default_rng(smoothing)
    for _ in range(40):
        height, width = (int(v) for v in rng.integers(5, 700, 2))
        side = int(rng.choice([16, 64, 256]))
        noise = torch.from_numpy(rng.normal(size=(1, 1, side, side)).astype(np.float32))
        logits = F.avg_pool2d(noise, smoothing, 1, smoothing // 2)[0, 0]  # ragged to blobby
        full = F.interpolate(logits[None, None], (height, width), mode="bilinear")[0, 0] > 0
        box = np.sort(rng.uniform(-20, max(height, width) + 20, 4).reshape(2, 2), axis=0)
        box = box.T.reshape(-1)[[0, 2, 1, 3]]  # x1, y1, x2, y2
        region = box_region(box, height, width, BOX_MARGIN)
        expected = clip_masks_to_boxes(full.numpy()[None], box[None], BOX_MARGIN)[0]
        taps = bilinear_taps(side, height), bilinear_taps(side, width)
        # a torch tensor: every pixel on its device; a NumPy array: runs from the logits
        masks = [paste_in_region(grid, *taps, region) for grid in (logits, logits.numpy())]
        for mask in masks:
            assert (mask.x, mask.y) == region[:2]
            assert mask.shape == (region[3] - region[1], region[2] - region[0])
            assert (mask.image_height, mask.image_width) == (height, width)
            assert iou(mask.to_full(), expected) >= 0.99
        # both ways agree but for pixels within float rounding of the threshold
        assert np.count_nonzero(masks[0].crop != masks[1].crop) <= 2


@pytest.mark.parametrize("smoothing", [1, 9])
def test_a_pending_mask_keeps_only_the_window_its_region_reads(smoothing: int) -> None:
    """Pasting from the kept window equals pasting from the whole grid, pixel for pixel,
    boxes at and beyond the image border and empty ones included; the window is what a host
    process is sent."""
    rng = np.random.default_rng(100 + smoothing)
    for _ in range(30):
        height, width = (int(v) for v in rng.integers(5, 3000, 2))
        noise = torch.from_numpy(rng.normal(size=(12, 1, 256, 256)).astype(np.float32))
        logits = F.avg_pool2d(noise, smoothing, 1, smoothing // 2)[:, 0]
        corners = rng.uniform(-40, max(height, width) + 40, (12, 2, 2))
        boxes = np.sort(corners, axis=1).transpose(0, 2, 1).reshape(12, 4)[:, [0, 2, 1, 3]]
        boxes[0] = [width + 5, 0, width + 50, 10]  # wholly outside: an empty region
        pending = masks_from_logits(logits, boxes.astype(np.float32), (height, width))
        whole = paste_masks(logits.numpy(), boxes, (height, width))
        for mask, expected in zip(pending, whole, strict=True):
            pasted = mask.paste()
            assert (pasted.x, pasted.y) == (expected.x, expected.y)
            assert pasted.shape == expected.shape
            assert np.array_equal(pasted.crop, expected.crop)
            region = box_region(mask.box, height, width, BOX_MARGIN)
            area = (region[2] - region[0]) * (region[3] - region[1])
            # the window grows with the region's share of the image, plus a cell per side
            share = area / (height * width)
            assert mask.logits.size <= share * 256 * 256 + 4 * 257 + 4


def test_sam_masks_equal_post_process_masks_on_test_images(tiny_models: dict[str, Path]) -> None:
    weights = resolve("segmenter", str(tiny_models["sam2"]), Path("/nonexistent"))
    segmenter = Sam2Segmenter(weights, "cpu", half=False)
    scenes = synthetic_scenes(3, seed=5)
    rgbs = [rgb for rgb, _, _ in scenes]
    boxes = [np.asarray(b, np.float32).reshape(-1, 4) for _, b, _ in scenes]
    results = segmenter.segment(rgbs, boxes)
    processor, model = segmenter.processor, segmenter.model
    with torch.inference_mode():
        for rgb, image_boxes, (masks, scores) in zip(rgbs, boxes, results, strict=True):
            assert len(masks) == len(image_boxes) == len(scores)
            height, width = rgb.shape[:2]
            encoded = processor(
                images=[rgb], input_boxes=[image_boxes.tolist()], return_tensors="pt"
            )
            output = model(**encoded, multimask_output=False)
            full = processor.post_process_masks(output.pred_masks, encoded["original_sizes"])[0]
            expected = clip_masks_to_boxes(full[:, 0].numpy(), image_boxes, BOX_MARGIN)
            for pending, reference in zip(masks, expected, strict=True):
                mask = pending.paste()  # on the CPU, pasted on a host thread
                assert (mask.image_height, mask.image_width) == (height, width)
                assert iou(mask.to_full(), reference) >= 0.99


def test_masks_of_a_reduced_copy_are_pasted_at_the_scene_size(
    tiny_models: dict[str, Path],
) -> None:
    weights = resolve("segmenter", str(tiny_models["sam2"]), Path("/nonexistent"))
    segmenter = Sam2Segmenter(weights, "cpu", half=False)
    rgb, boxes, _ = synthetic_scenes(1, seed=9)[0]
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    half = rgb[::2, ::2]
    [(masks, _)] = segmenter.segment([half], [boxes / 2], [rgb.shape[:2]])
    for pending, box in zip(masks, boxes, strict=True):
        mask = pending.paste()
        assert (mask.image_height, mask.image_width) == rgb.shape[:2]
        x1, y1, x2, y2 = box_region(box, *rgb.shape[:2], BOX_MARGIN)
        assert abs(mask.x - x1) <= 1 and abs(mask.y - y1) <= 1
        assert abs(mask.shape[1] - (x2 - x1)) <= 2
