"""Which of a detector's boxes become objects: per-category thresholds, one object per box
across categories, at most N per image.

Every backend (closed-set YOLO, open-vocabulary Grounding DINO / OWLv2) ends with the same
selection, so a user tunes the same three knobs whichever they run:

1. a box is kept when its confidence reaches its category's threshold
   (``MODOMO_DETECTOR_THRESHOLDS``), else the default (``MODOMO_DETECTOR_THRESHOLD``);
2. class-agnostic non-maximum suppression (supervision's ``Detections.with_nms``,
   ``class_agnostic=True``) at ``MODOMO_DETECTOR_NMS_IOU``: an armchair and a chair found on
   the same box are one object, the more confident label;
3. the ``MODOMO_DETECTOR_MAX_DETECTIONS`` most confident boxes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import cast

import numpy as np
import supervision as sv

from modomo.analysis.taxonomy import CATEGORIES, Category

__all__ = ["Selection", "empty_detections", "labelled"]


def empty_detections() -> sv.Detections:
    """Detections with no boxes, carrying the taxonomy data keys."""
    detections = sv.Detections.empty()
    for key in ("category", "taxonomy_group", "prompt"):
        detections.data[key] = np.array([], dtype=object)
    return detections


def labelled(
    xyxy: np.ndarray, confidence: np.ndarray, categories: list[Category], prompts: list[str]
) -> sv.Detections:
    """The pipeline's detections type from boxes and their labels.

    Args:
        xyxy: (N, 4) float boxes, pixels of the image, exclusive right/bottom edge.
        confidence: (N,) float scores, 0-1.
        categories: N taxonomy categories.
        prompts: N texts that found them (the prompt, or the closed-set class name).
    """
    if not len(categories):
        return empty_detections()
    detections = sv.Detections(
        xyxy=np.asarray(xyxy, np.float32).reshape(-1, 4),
        confidence=np.asarray(confidence, np.float32),
    )
    detections.data["category"] = np.array([c.name for c in categories], dtype=object)
    detections.data["taxonomy_group"] = np.array([c.group for c in categories], dtype=object)
    detections.data["prompt"] = np.array(prompts, dtype=object)
    return detections


@dataclass(frozen=True)
class Selection:
    """The selection rules (see the module docstring).

    Attributes:
        threshold: default minimum confidence, 0-1.
        thresholds: ``{category: minimum confidence}`` over the default.
        nms_iou: IoU above which two boxes are one object (1.0: no suppression).
        max_detections: at most this many objects per image.

    Raises:
        ValueError: a threshold names an unknown category or is outside 0-1.
    """

    threshold: float = 0.25
    thresholds: Mapping[str, float] = field(default_factory=dict)
    nms_iou: float = 0.7
    max_detections: int = 100

    def __post_init__(self) -> None:
        unknown = sorted(set(self.thresholds) - set(CATEGORIES))
        if unknown:
            raise ValueError(f"thresholds name unknown taxonomy categories {unknown}")
        bad = {k: v for k, v in self.thresholds.items() if not 0 <= v <= 1}
        if bad:
            raise ValueError(f"thresholds must be within 0-1: {bad}")

    @property
    def floor(self) -> float:
        """The lowest threshold of any category: a backend may drop boxes below it early."""
        return min([self.threshold, *self.thresholds.values()])

    def minimum(self, category: str) -> float:
        """The threshold of ``category``."""
        return self.thresholds.get(category, self.threshold)

    def apply(self, detections: sv.Detections) -> sv.Detections:
        """Thresholds, class-agnostic NMS and the cap, in that order.

        Args:
            detections: boxes with ``confidence`` and ``data["category"]``.

        Returns:
            The kept detections, most confident first.
        """
        if len(detections) == 0:
            return detections
        assert detections.confidence is not None
        minimum = np.array([self.minimum(str(c)) for c in detections.data["category"]])
        kept = cast(sv.Detections, detections[detections.confidence >= minimum])
        if len(kept) > 1 and self.nms_iou < 1:
            kept = kept.with_nms(threshold=self.nms_iou, class_agnostic=True)
        if len(kept) == 0:
            return empty_detections()
        assert kept.confidence is not None
        order = np.argsort(-kept.confidence, kind="stable")[: self.max_detections]
        return cast(sv.Detections, kept[order])
