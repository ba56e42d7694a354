"""Label Studio export: tasks with the models' predictions, for people to review.

Format: Label Studio's task JSON with pre-annotations
(https://labelstud.io/guide/predictions): one task per scene, ``data`` holding the image URL
and the scene's id, ``predictions`` holding one prediction (``model_version``: the detector,
``score``: the mean confidence) whose ``result`` has one region per object:

* an object with a mask: a ``polygonlabels`` region (``from_name`` ``mask``), the mask's
  outline traced as for YOLO segmentation (:func:`modomo.export.yolo.mask_polygon`, parts
  joined into one polygon);
* an object without one: a ``rectanglelabels`` region (``from_name`` ``box``).

Coordinates are percentages of the upright image (``x / original_width * 100``), as Label
Studio stores them; every region carries ``original_width`` / ``original_height`` and the
detector's ``score``. Layout written by :class:`LabelStudioWriter`::

    out_dir/tasks.json          the tasks (import them in a project: Data Import, or the API)
    out_dir/label_config.xml    the labelling config: an image, box and polygon labels
    out_dir/images/{file_name}  the images, upright

``labeling_config`` offers every taxonomy category as a label (a reviewer may correct a label
to a category the model never predicted). Image URLs are ``image_url_prefix + file_name``;
the default prefix, ``/data/local-files/?d=images/``, is Label Studio's local file serving
(``LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true`` and
``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT`` = the export folder). The review comes back with
``modomo annotations import`` (:mod:`modomo.annotations`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

import numpy as np

from modomo.analysis.masks import decode_rle
from modomo.analysis.taxonomy import CATEGORIES
from modomo.export.coco import _check_file_name, _check_split, normalise_rle, write_image
from modomo.export.records import SPLITS, ExportObject, ExportScene
from modomo.export.yolo import mask_polygon

__all__ = [
    "BOX",
    "DEFAULT_IMAGE_URL_PREFIX",
    "IMAGE",
    "MASK",
    "LabelStudioWriter",
    "labeling_config",
    "object_region",
]

IMAGE, BOX, MASK = "image", "box", "mask"
"""Names of the config's image, rectangle-labels and polygon-labels tags."""

DEFAULT_IMAGE_URL_PREFIX = "/data/local-files/?d=images/"


def labeling_config(names: tuple[str, ...] = tuple(CATEGORIES)) -> str:
    """Label Studio's labelling config: the image, rectangle labels and polygon labels, one
    label per category (with its taxonomy group as a hint)."""
    labels = "\n".join(
        f"    <Label value={quoteattr(name)} hint={quoteattr(CATEGORIES[name].group)}/>"
        for name in names
    )
    return (
        "<View>\n"
        f'  <Image name="{IMAGE}" value="$image" zoom="true" zoomControl="true"/>\n'
        f'  <RectangleLabels name="{BOX}" toName="{IMAGE}" strokeWidth="2">\n{labels}\n'
        "  </RectangleLabels>\n"
        f'  <PolygonLabels name="{MASK}" toName="{IMAGE}" strokeWidth="2" opacity="0.4">\n'
        f"{labels}\n"
        "  </PolygonLabels>\n"
        "</View>\n"
    )


def object_region(obj: ExportObject, width: int, height: int) -> dict[str, Any]:
    """One object as a Label Studio region (see the module docstring).

    Raises:
        ValueError: a category outside the taxonomy, a bad box, a mask of another size.
    """
    if obj.category not in CATEGORIES:
        raise ValueError(f"object {obj.id}: category {obj.category!r} is not in the taxonomy")
    if len(obj.bbox) != 4 or not np.all(np.isfinite(obj.bbox)):
        raise ValueError(f"object {obj.id}: bbox must be four finite numbers, got {obj.bbox!r}")
    region: dict[str, Any] = {
        "id": obj.id.replace("-", "")[:10],
        "to_name": IMAGE,
        "original_width": width,
        "original_height": height,
        "image_rotation": 0,
        "score": float(obj.confidence),
    }
    polygon = None
    if obj.mask_rle is not None:
        polygon = mask_polygon(decode_rle(normalise_rle(obj.mask_rle, height, width)))
    if polygon is not None:
        points = np.clip(polygon / np.array([width, height]) * 100, 0, 100)
        region |= {
            "from_name": MASK,
            "type": "polygonlabels",
            "value": {
                "points": np.round(points, 4).tolist(),
                "closed": True,
                "polygonlabels": [obj.category],
            },
        }
        return region
    x, y, w, h = (float(v) for v in obj.bbox)
    region |= {
        "from_name": BOX,
        "type": "rectanglelabels",
        "value": {
            "x": 100 * max(x, 0.0) / width,
            "y": 100 * max(y, 0.0) / height,
            "width": 100 * min(w, width - max(x, 0.0)) / width,
            "height": 100 * min(h, height - max(y, 0.0)) / height,
            "rotation": 0,
            "rectanglelabels": [obj.category],
        },
    }
    return region


class LabelStudioWriter:
    """Stream scenes into Label Studio tasks (see the module docstring).

    Args:
        out_dir: the export's folder (created if missing).
        image_url_prefix: put before each image's file name to make the task's image URL.
        overwrite: replace ``out_dir/images`` when it holds an earlier export.

    Raises:
        FileExistsError: ``out_dir/images`` is not empty and ``overwrite`` is False.
    """

    def __init__(
        self,
        out_dir: Path,
        *,
        image_url_prefix: str = DEFAULT_IMAGE_URL_PREFIX,
        overwrite: bool = False,
    ) -> None:
        from modomo.export.coco import prepare_dirs

        self.out_dir = Path(out_dir)
        self.prefix = image_url_prefix
        prepare_dirs([self.out_dir / "images"], overwrite=overwrite)
        (self.out_dir / "images").mkdir(parents=True, exist_ok=True)
        (self.out_dir / "label_config.xml").write_text(labeling_config(), encoding="utf-8")
        self._partial = self.out_dir / "tasks.json.tmp"
        self._tasks: IO[str] = open(self._partial, "w", encoding="utf-8")  # noqa: SIM115
        self._tasks.write("[")
        self._counts = {split: {"images": 0, "annotations": 0} for split in SPLITS}
        self._closed = False

    def add(self, scene: ExportScene) -> None:
        """Write one scene's image (upright, as read) and its task.

        Raises:
            RuntimeError: after :meth:`close`.
            ValueError: see :func:`object_region`; an unsafe file name or split.
            FileExistsError: two scenes with one file name.
        """
        if self._closed:
            raise RuntimeError("LabelStudioWriter.add() after close()")
        _check_split(scene.split)
        _check_file_name(scene.file_name)
        width, height = int(scene.width), int(scene.height)
        regions = [object_region(obj, width, height) for obj in scene.objects]
        write_image(self.out_dir / "images", scene.file_name, scene.read_image())
        task: dict[str, Any] = {
            "data": {
                IMAGE: self.prefix + quote(scene.file_name),
                "scene_id": scene.id,
                "file_name": scene.file_name,
                "split": scene.split,
                "source": scene.source,
                "source_key": scene.source_key,
                "image_url": scene.image_url,
                "licence": scene.licence,
                "room_type": scene.room_type,
            }
        }
        if regions:
            scores = [obj.confidence for obj in scene.objects]
            task["predictions"] = [
                {
                    "model_version": scene.models.get("detector", "modomo"),
                    "score": float(np.mean(scores)),
                    "result": regions,
                }
            ]
        first = not any(c["images"] for c in self._counts.values())
        self._tasks.write(("\n" if first else ",\n") + json.dumps(task, ensure_ascii=False))
        self._counts[scene.split]["images"] += 1
        self._counts[scene.split]["annotations"] += len(regions)

    def close(self) -> dict[str, dict[str, int]]:
        """Finish ``tasks.json``; returns ``{split: {"images", "annotations"}}``."""
        if not self._closed:
            self._tasks.write("\n]\n")
            self._tasks.close()
            self._partial.replace(self.out_dir / "tasks.json")
            self._closed = True
        return {split: dict(counts) for split, counts in self._counts.items()}

    def abort(self) -> None:
        """Remove the unfinished task file (after a failed export)."""
        self._tasks.close()
        self._partial.unlink(missing_ok=True)
        self._closed = True
