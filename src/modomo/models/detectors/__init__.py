"""Object detectors, chosen by ``MODOMO_DETECTOR``; all return the pipeline's one detections
type (``supervision.Detections`` with ``data["category"]``, ``["taxonomy_group"]`` and
``["prompt"]``), selected by the same rules (:class:`Selection`).

========================  ===========================  ========================================
backend                   library, licence             labels
========================  ===========================  ========================================
``yolo`` (default)        ultralytics, AGPL-3.0        a closed class set mapped to the
                                                       taxonomy (COCO: 32 of 84 categories)
``grounding-dino``        transformers, Apache-2.0     every category, from text prompts
========================  ===========================  ========================================
"""

from __future__ import annotations

from typing import Any

from modomo.models.detectors.grounding_dino import GroundingDinoDetector
from modomo.models.detectors.selection import Selection, empty_detections, labelled
from modomo.models.detectors.yolo import YoloDetector

__all__ = [
    "BACKENDS",
    "GroundingDinoDetector",
    "Selection",
    "YoloDetector",
    "empty_detections",
    "labelled",
]

BACKENDS: dict[str, Any] = {
    "yolo": YoloDetector,
    "grounding-dino": GroundingDinoDetector,
}
"""``MODOMO_DETECTOR`` values and their detector classes."""
