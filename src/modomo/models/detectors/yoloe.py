"""The open-vocabulary YOLO backend: Ultralytics YOLOE with the taxonomy's text prompts
(``MODOMO_DETECTOR=yoloe``).

YOLOE (Wang et al. 2025, "YOLOE: Real-Time Seeing Anything"; ultralytics, AGPL-3.0; default
``yoloe-11s-seg.pt``) detects the classes whose text embeddings it is given. Computing those
embeddings needs its text encoder (MobileCLIP, a TorchScript file of its own), so it is done
once, by ``modomo models pull detector``, and cached beside the weights as an NPZ file named
after the prompts' hash (:func:`embeddings_path`, written by ultralytics'
``save_prompt_embeddings``). Workers load that file and never need the text model; a worker
whose prompts have no cached embeddings (new prompts in ``MODOMO_DETECTOR_PROMPTS``) fails
with the command that computes them.

Each prompt is one YOLOE class, so a box's class id is its prompt's index in the
:class:`~modomo.analysis.taxonomy.PromptTable`, which names its category. YOLOE's own masks
are not used (SAM segments every backend's boxes); ultralytics drops a segmentation
checkpoint's boxes whose YOLOE mask is empty.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import supervision as sv

from modomo.analysis.taxonomy import PromptTable
from modomo.models.detectors.selection import Selection, empty_detections, labelled
from modomo.models.weights import MissingWeightsError, Weights

__all__ = [
    "TEXT_ENCODERS",
    "YoloeDetector",
    "cached_embeddings",
    "embed_prompts",
    "embeddings_path",
]

TEXT_ENCODERS = {"mobileclip": "mobileclip_blt.ts", "mobileclip2": "mobileclip2_b.ts"}
"""A YOLOE model's ``text_model`` family -> the ultralytics asset of its text encoder."""


def embeddings_path(weights: Path, prompts: PromptTable) -> Path:
    """Where the prompt embeddings of ``weights`` for these prompts are cached: beside the
    weights, named by a sha256 of the prompts in order."""
    digest = hashlib.sha256("\n".join(prompts.prompts).encode()).hexdigest()[:16]
    return weights.with_name(f"{weights.stem}.prompts-{digest}.npz")


def cached_embeddings(weights: Weights, prompts: PromptTable) -> Path:
    """The cached prompt embeddings of ``weights`` for ``prompts``.

    Raises:
        MissingWeightsError: not computed yet; the message gives the command that does.
    """
    cached = embeddings_path(weights.path, prompts)
    if not cached.is_file():
        raise MissingWeightsError(
            f"detector prompt embeddings for {weights.name} and these {len(prompts)} prompts "
            f"are not computed ({cached} is missing). Compute them with "
            "`MODOMO_DETECTOR=yoloe modomo models pull detector` (with the same "
            "MODOMO_DETECTOR_PROMPTS; it needs internet once for the text encoder), or copy "
            "MODOMO_MODEL_DIR over from where it ran"
        )
    return cached


def _load(path: Path) -> Any:
    # Workers never use ultralytics' online features (see the yolo backend).
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics import YOLOE

    from modomo.models.detectors.yolo import restore_pillow_open

    restore_pillow_open()
    return YOLOE(str(path))


def embed_prompts(weights: Weights, prompts: PromptTable, cache: Path, device: str = "cpu") -> Path:
    """Compute the prompts' YOLOE embeddings with its text encoder and cache them.

    The text encoder is fetched into ``cache/ultralytics`` (ultralytics' asset release) unless
    it is already there. Run where there is internet (``modomo models pull detector``).

    Args:
        weights: the YOLOE weights.
        prompts: the prompts to embed.
        cache: the local weight cache (``MODOMO_MODEL_DIR``).
        device: torch device for the text encoder.

    Returns:
        The NPZ file (:func:`embeddings_path`).

    Raises:
        RuntimeError: the text encoder could not be fetched, or the model's text encoder is
            not one of :data:`TEXT_ENCODERS`.
    """
    import warnings

    import torch

    model = _load(weights.path)
    with warnings.catch_warnings():  # CLIP's tokenizer package imports pkg_resources
        warnings.filterwarnings("ignore", "pkg_resources is deprecated", UserWarning)
        from ultralytics.nn.text_model import MobileCLIPTS
    from ultralytics.utils.downloads import attempt_download_asset

    family = str(getattr(model.model, "text_model", "mobileclip:blt")).split(":")[0]
    if family not in TEXT_ENCODERS:
        raise RuntimeError(f"YOLOE text encoder {family!r} is not supported; use a MobileCLIP one")
    encoder = cache / "ultralytics" / TEXT_ENCODERS[family]
    if not encoder.is_file():
        encoder.parent.mkdir(parents=True, exist_ok=True)
        try:
            attempt_download_asset(str(encoder))
        except Exception as exc:
            raise RuntimeError(f"could not download {encoder.name}: {exc}") from exc
        if not encoder.is_file():
            raise RuntimeError(f"could not download {encoder.name}")
    model.to(device)
    with warnings.catch_warnings():  # MobileCLIP's text encoder is a TorchScript file
        warnings.filterwarnings("ignore", "`torch.jit.load` is deprecated", FutureWarning)
        model.model.clip_model = MobileCLIPTS(torch.device(device), weight=str(encoder))
    embeddings = model.model.get_text_pe(prompts.prompts, cache_clip_model=True)
    model.set_classes(prompts.prompts, embeddings)
    return Path(model.save_prompt_embeddings(embeddings_path(weights.path, prompts)))


class YoloeDetector:
    """YOLOE on a list of images, every prompted category as one class per prompt.

    Args:
        weights: resolved YOLOE ``.pt`` weights.
        device: torch device string.
        half: float16 inference (CUDA only).
        selection: thresholds, class-agnostic NMS and the cap per image.
        prompts: the prompts and their categories.
        image_size: inference size in pixels (longest side, letterboxed).

    Raises:
        MissingWeightsError: no cached embeddings for these prompts (the message says how to
            compute them).
        ValueError: the weights are not a YOLOE model, or the cached file does not match them.
    """

    backend = "yoloe"

    def __init__(
        self,
        weights: Weights,
        device: str,
        *,
        half: bool,
        selection: Selection,
        prompts: PromptTable,
        image_size: int,
    ) -> None:
        from ultralytics.nn.tasks import YOLOEModel

        self.weights = weights
        self.model = _load(weights.path)
        if not isinstance(self.model.model, YOLOEModel):
            raise ValueError(f"{weights.name} is not a YOLOE model")
        cached = cached_embeddings(weights, prompts)
        self.model.load_prompt_embeddings(cached)
        if list(self.model.names.values()) != prompts.prompts:
            raise ValueError(f"{cached} holds other prompts than the configured ones")
        self.prompts = prompts
        self.device = device
        self.half = half and device.startswith("cuda")
        self.selection = selection
        self.image_size = image_size

    def detect(self, images: list[np.ndarray]) -> list[sv.Detections]:
        """Detect every prompted category in a batch of images.

        Args:
            images: (H, W, 3) uint8 RGB arrays (sizes may differ).

        Returns:
            One ``supervision.Detections`` per image: ``xyxy`` (N, 4) float32 pixels of that
            image, ``confidence`` (N,), ``data["category"]``, ``data["taxonomy_group"]`` and
            ``data["prompt"]``.
        """
        if not images:
            return []
        bgr = [np.ascontiguousarray(image[..., ::-1]) for image in images]  # ultralytics: BGR
        results = self.model.predict(
            bgr,
            conf=self.selection.floor,
            imgsz=self.image_size,
            device=self.device,
            quantize=16 if self.half else None,
            max_det=4 * self.selection.max_detections,
            verbose=False,
        )
        return [self._to_detections(result) for result in results]

    def _to_detections(self, result: Any) -> sv.Detections:
        boxes = result.boxes
        if boxes is None or len(boxes) == 0:
            return empty_detections()
        ids = boxes.cls.cpu().numpy().astype(int)
        detections = labelled(
            boxes.xyxy.cpu().numpy(),
            boxes.conf.cpu().numpy(),
            [self.prompts.category(i) for i in ids],
            [self.prompts.prompts[i] for i in ids],
        )
        return self.selection.apply(detections)
