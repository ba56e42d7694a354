"""The closed-set backend: Ultralytics YOLO, its classes mapped to the interior taxonomy
through :class:`~modomo.analysis.taxonomy.ClassMap` (``MODOMO_DETECTOR=yolo``).

Classes outside the taxonomy are never returned; a COCO-trained model reaches 32 of the 84
categories (the open-vocabulary backends reach all of them).
"""

from __future__ import annotations

import os
from typing import Any, cast

import numpy as np
import supervision as sv
from PIL import Image

from modomo.analysis.taxonomy import ClassMap
from modomo.models.detectors.selection import Selection, empty_detections
from modomo.models.weights import Weights

__all__ = ["YoloDetector", "restore_pillow_open"]


def restore_pillow_open() -> None:
    """Give this process back Pillow's own ``Image.open``: importing ultralytics replaces it
    with a wrapper that pip-installs pi-heif on files Pillow cannot read (see
    :mod:`modomo.images.loading`)."""
    from ultralytics.utils import patches

    if Image.open is patches.image_open:
        Image.open = patches._image_open


class YoloDetector:
    """Ultralytics YOLO on a list of images.

    Args:
        weights: resolved ``.pt`` weights (see :mod:`modomo.models.weights`).
        device: torch device string.
        half: float16 inference (CUDA only).
        selection: thresholds, class-agnostic NMS and the cap per image.
        image_size: inference size in pixels (longest side, letterboxed).

    Raises:
        ValueError: none of the model's classes is in the taxonomy.
    """

    backend = "yolo"

    def __init__(
        self,
        weights: Weights,
        device: str,
        *,
        half: bool,
        selection: Selection,
        image_size: int,
    ) -> None:
        # Workers never use ultralytics' online features (hub, update checks, analytics); without
        # this, importing it probes DNS to decide whether it is online.
        os.environ.setdefault("YOLO_OFFLINE", "1")
        from ultralytics import YOLO

        restore_pillow_open()
        self.weights = weights
        self.model = YOLO(str(weights.path), task="detect")
        self.class_map = ClassMap.for_model(self.model.names)
        if not self.class_map.kept_ids:
            raise ValueError(
                f"none of the classes of {weights.name} is in the interior taxonomy: "
                f"{sorted(self.model.names.values())[:10]}…"
            )
        self.device = device
        self.half = half and device.startswith("cuda")
        self.selection = selection
        self.image_size = image_size
        self._classes = sorted(self.class_map.kept_ids)

    def detect(self, images: list[np.ndarray]) -> list[sv.Detections]:
        """Detect the taxonomy's objects in a batch of images.

        Args:
            images: (H, W, 3) uint8 RGB arrays (sizes may differ).

        Returns:
            One ``supervision.Detections`` per image: ``xyxy`` (N, 4) float32 pixels of that
            image, ``confidence`` (N,), ``data["category"]``, ``data["taxonomy_group"]`` and
            ``data["prompt"]`` (the model's class name) (N,) str arrays.
        """
        if not images:
            return []
        # Ultralytics reads numpy arrays as OpenCV does: BGR.
        bgr = [np.ascontiguousarray(image[..., ::-1]) for image in images]
        results = self.model.predict(
            bgr,
            conf=self.selection.floor,
            imgsz=self.image_size,
            device=self.device,
            quantize=16 if self.half else None,
            classes=self._classes,
            # its own (per-class) NMS first; the selection adds the class-agnostic one
            max_det=4 * self.selection.max_detections,
            verbose=False,
        )
        return [self._to_detections(result) for result in results]

    def _to_detections(self, result: Any) -> sv.Detections:
        detections = sv.Detections.from_ultralytics(result)
        if len(detections) == 0:
            return empty_detections()
        class_ids: Any = detections.class_id if detections.class_id is not None else []
        categories = [self.class_map.lookup(int(c)) for c in class_ids]
        keep = np.array([c is not None for c in categories], dtype=bool)
        detections = cast(sv.Detections, detections[keep])
        kept = [c for c in categories if c is not None]
        names = self.class_map.names
        detections.data["category"] = np.array([c.name for c in kept], dtype=object)
        detections.data["taxonomy_group"] = np.array([c.group for c in kept], dtype=object)
        detections.data["prompt"] = np.array(
            [names[int(c)] for c in np.asarray(detections.class_id)], dtype=object
        )
        return self.selection.apply(detections)
