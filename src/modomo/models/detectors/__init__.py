"""Object detectors, chosen by ``MODOMO_DETECTOR``; all return the pipeline's one detections
type (``supervision.Detections`` with ``data["category"]``, ``["taxonomy_group"]`` and
``["prompt"]``), selected by the same rules (:class:`Selection`).

========================  ===========================  ========================================
backend                   library, licence             labels
========================  ===========================  ========================================
``yolo`` (default)        ultralytics, AGPL-3.0        a closed class set mapped to the
                                                       taxonomy (COCO: 32 of 84 categories)
``grounding-dino``        transformers, Apache-2.0     every category, from text prompts
``owlv2``                 transformers, Apache-2.0     every category, from text prompts
``yoloe``                 ultralytics, AGPL-3.0        every category, from text prompts
                                                       (embeddings cached by ``models pull``)
========================  ===========================  ========================================
"""

from __future__ import annotations

from typing import Any

from modomo.models.detectors.grounding_dino import GroundingDinoDetector
from modomo.models.detectors.owlv2 import Owlv2Detector
from modomo.models.detectors.selection import Selection, empty_detections, labelled
from modomo.models.detectors.yolo import YoloDetector
from modomo.models.detectors.yoloe import YoloeDetector, embed_prompts

__all__ = [
    "BACKENDS",
    "Detector",
    "GroundingDinoDetector",
    "Owlv2Detector",
    "Selection",
    "YoloDetector",
    "YoloeDetector",
    "embed_prompts",
    "empty_detections",
    "labelled",
]

Detector = YoloDetector | GroundingDinoDetector | Owlv2Detector | YoloeDetector
"""Any backend's detector: ``detect(images) -> list[sv.Detections]``, ``weights``, ``backend``."""

BACKENDS: dict[str, Any] = {
    "yolo": YoloDetector,
    "grounding-dino": GroundingDinoDetector,
    "owlv2": Owlv2Detector,
    "yoloe": YoloeDetector,
}
"""``MODOMO_DETECTOR`` values and their detector classes."""
