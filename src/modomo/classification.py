"""Scene classification on a batch of decoded images: CLIP embeddings of each scene and of its
objects' crops, and zero-shot room type, style and scene type.

Free of Celery and the database, like :mod:`modomo.inference`: :class:`SceneClassifier` turns
images (and their objects' boxes) into per-scene results; the task stores them. Model calls
are batched (``MODOMO_AI_BATCH_SIZE`` images or crops per call) and a CUDA out-of-memory error
halves the batch (:func:`modomo.batching.map_with_backoff`); an image that fails alone is
returned as that scene's error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modomo.analysis.classify import classify
from modomo.batching import map_with_backoff
from modomo.config import Settings
from modomo.images import LoadedImage
from modomo.models.device import empty_cache, is_oom
from modomo.models.registry import ModelRegistry

__all__ = ["ATTRIBUTES", "MIN_CROP_SIDE", "ClassifiedScene", "SceneClassifier"]

ATTRIBUTES: tuple[str, ...] = ("room_type", "style", "scene_type")
"""What a scene is classified by, each over its own label set."""

MIN_CROP_SIDE = 8
"""Object crops smaller than this many pixels on a side get no embedding (nothing to see)."""


@dataclass
class ClassifiedScene:
    """What CLIP says about one scene.

    Attributes:
        predictions: per attribute (:data:`ATTRIBUTES`), the prediction's JSON
            (``{"label", "probability", "top_k": [{"label", "probability"}]}``); ``label`` is
            ``"unknown"`` when the top probability is below the threshold.
        embedding: the scene's L2-normalised image embedding, ``dim`` floats.
        object_embeddings: per object id given, its crop's embedding (objects whose crop is
            too small are left out).
    """

    predictions: dict[str, dict[str, Any]]
    embedding: list[float]
    object_embeddings: dict[Any, list[float]] = field(default_factory=dict)


def crop_xywh(rgb: np.ndarray, bbox: Sequence[float]) -> np.ndarray | None:
    """The crop of an (H, W, 3) uint8 RGB image under a ``[x, y, w, h]`` pixel box, clipped
    to the image; None when the clipped crop is under :data:`MIN_CROP_SIDE` on a side."""
    height, width = rgb.shape[:2]
    x, y, w, h = (float(v) for v in bbox)
    x1, y1 = max(int(np.floor(x)), 0), max(int(np.floor(y)), 0)
    x2, y2 = min(int(np.ceil(x + w)), width), min(int(np.ceil(y + h)), height)
    if x2 - x1 < MIN_CROP_SIDE or y2 - y1 < MIN_CROP_SIDE:
        return None
    return np.ascontiguousarray(rgb[y1:y2, x1:x2])


class SceneClassifier:
    """CLIP embeddings and zero-shot labels for batches of scenes.

    Args:
        models: the process's model registry (CLIP loads on first use).
        settings: label lists, threshold, top-k, embedding dimension and batch size.
    """

    def __init__(self, models: ModelRegistry, settings: Settings) -> None:
        self.models = models
        self.settings = settings
        self.batch_size = settings.ai_batch_size

    @property
    def model_label(self) -> str:
        """``name@version`` of the CLIP weights."""
        return str(self.models.clip().weights.label)

    def load(self) -> None:
        """Load CLIP, check its embedding dimension and compute the label embeddings now.

        Raises:
            MissingWeightsError: the weights are not available locally.
            ValueError: the model's embedding dimension is not ``MODOMO_EMBEDDING_DIM``.
        """
        clip = self.models.clip()  # the registry checks the dimension as it loads
        clip.label_sets(tuple(self.settings.room_types), tuple(self.settings.styles))

    def _encode(self, images: Sequence[np.ndarray]) -> list[np.ndarray | BaseException]:
        """Embeddings of (H, W, 3) uint8 RGB images, batched, halving on out-of-memory."""
        clip = self.models.clip()
        out: list[np.ndarray | BaseException] = []
        for start in range(0, len(images), self.batch_size):
            chunk = list(images[start : start + self.batch_size])
            results, largest = map_with_backoff(
                chunk,
                lambda batch: list(clip.encode_images(list(batch))),
                is_oom=is_oom,
                after_oom=lambda: empty_cache(self.models.device),
            )
            if 0 < largest < self.batch_size:
                self.batch_size = largest
            out.extend(results)
        return out

    def run(
        self,
        images: Sequence[LoadedImage],
        objects: Sequence[Sequence[tuple[Any, Sequence[float]]]] | None = None,
    ) -> list[ClassifiedScene | BaseException]:
        """Classify a batch of scenes.

        Args:
            images: decoded images ((H, W, 3) uint8 RGB).
            objects: per image, ``(object id, [x, y, w, h] pixel box)`` of its detected
                objects, whose crops are embedded too; None for none.

        Returns:
            Per image its :class:`ClassifiedScene` or the exception that failed it (an
            object crop that fails to embed is left out, not a failure of the scene).
        """
        s = self.settings
        clip = self.models.clip()
        label_sets = clip.label_sets(tuple(s.room_types), tuple(s.styles))
        embedded = self._encode([image.rgb for image in images])
        crops: list[tuple[int, Any, np.ndarray]] = []
        for index, image in enumerate(images):
            for object_id, bbox in objects[index] if objects else ():
                crop = crop_xywh(image.rgb, bbox)
                if crop is not None:
                    crops.append((index, object_id, crop))
        crop_embeddings = self._encode([crop for _, _, crop in crops]) if crops else []
        results: list[ClassifiedScene | BaseException] = []
        for embedding in embedded:
            if isinstance(embedding, BaseException):
                results.append(embedding)
                continue
            row = np.asarray(embedding, dtype=np.float32)[None, :]
            predictions = {
                attribute: classify(
                    row,
                    label_sets[attribute],
                    logit_scale=clip.logit_scale,
                    top_k=s.classify_top_k,
                    min_probability=s.classify_min_probability,
                )[0].to_json()
                for attribute in ATTRIBUTES
            }
            results.append(ClassifiedScene(predictions, row[0].tolist()))
        for (index, object_id, _), vector in zip(crops, crop_embeddings, strict=True):
            scene = results[index]
            if isinstance(scene, ClassifiedScene) and not isinstance(vector, BaseException):
                scene.object_embeddings[object_id] = np.asarray(vector, np.float32).tolist()
        return results
