"""COCO instance segmentation export, written as a stream.

The format is COCO's "object detection" data format (https://cocodataset.org/#format-data):
one JSON file per split with ``info``, ``licenses``, ``images``, ``annotations`` and
``categories``. Layout written by :class:`CocoWriter`::

    out_dir/annotations/instances_train.json   (and _val, _test)
    out_dir/images/train/<file_name>           (and val/, test/; unless copy_images=False)

Conventions:

* ``images[].id`` and ``annotations[].id`` are integers counted from 1 within each split
  file; ``images[]`` also carries Modomo's ``modomo_scene_id``, ``room_type`` and ``style``,
  and ``license`` (an id into ``licenses``) where the source stated a licence.
* ``annotations[].bbox`` is ``[x, y, width, height]`` in pixels (floats, top-left origin).
* ``annotations[].segmentation`` is the stored mask as COCO compressed RLE,
  ``{"size": [height, width], "counts": "<str>"}``: pycocotools reads the string counts
  directly (``COCO.annToMask``, ``COCOeval``). ``area`` is the mask's pixel count
  (``pycocotools.mask.area``).
* An object without a mask gets its box as a one-polygon segmentation
  (``[[x, y, x+w, y, x+w, y+h, x, y+h]]``) and ``area = w * h``. Omitting ``segmentation``
  would be valid for detection but breaks segmentation consumers (``COCO.annToRLE`` and
  ``COCOeval(iouType="segm")`` index it unconditionally), so a box-shaped mask is the
  lossless-for-detection choice. ``modomo_has_mask`` (bool) says which it is.
* ``iscrowd`` is always 0; no ``score`` (these are labels, not detections); Modomo's object id
  and detector confidence travel as ``modomo_object_id`` and ``modomo_confidence``.
* ``categories`` lists the export's classes (:class:`modomo.export.classes.ClassMap`: by
  default those that occur, in the taxonomy's order) with ids 1..N and ``supercategory`` =
  the category's group.
* ``images[]`` carry provenance: ``modomo_source``, ``modomo_source_key`` and
  ``modomo_image_url`` (with ``license``, an id into ``licenses``, where the source stated one).

Streaming: :meth:`CocoWriter.add` appends each image entry to one temporary file and each
annotation to another (per split, next to the final JSON); :meth:`CocoWriter.close` writes
the final JSON by copying those files into it, so memory does not grow with the number of
scenes.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from pycocotools import mask as mask_utils

from modomo.export.classes import ClassMap
from modomo.export.records import SPLITS, ExportObject, ExportScene

__all__ = [
    "CocoWriter",
    "normalise_rle",
    "prepare_dirs",
    "write_image",
]


def normalise_rle(rle: dict[str, Any], height: int, width: int) -> dict[str, Any]:
    """A stored mask as COCO compressed RLE ``{"size": [h, w], "counts": str}``.

    Accepts compressed counts as ``str`` or ``bytes`` and uncompressed counts (a list of
    ints), as pycocotools does.

    Args:
        rle: the mask's RLE.
        height / width: the image's size in pixels; the mask must have exactly this size.

    Raises:
        ValueError: the RLE's size differs from the image's, or it is malformed.
    """
    try:
        size = [int(rle["size"][0]), int(rle["size"][1])]
        counts = rle["counts"]
    except (KeyError, TypeError, IndexError, ValueError) as exc:
        raise ValueError(f"malformed RLE (need size [h, w] and counts): {rle!r:.200}") from exc
    if size != [height, width]:
        raise ValueError(f"mask size {size} differs from the image size [{height}, {width}]")
    if isinstance(counts, list):
        counts = mask_utils.frPyObjects({"size": size, "counts": counts}, *size)["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    if not isinstance(counts, str):
        raise ValueError(f"RLE counts must be str, bytes or a list, got {type(counts).__name__}")
    return {"size": size, "counts": counts}


def _rle_area(rle: dict[str, Any]) -> int:
    """Pixel count of a compressed RLE with str counts."""
    return int(mask_utils.area({"size": rle["size"], "counts": rle["counts"].encode("ascii")}))


def _dumps(value: Any) -> str:
    # allow_nan=False: NaN/Infinity are not JSON and most COCO readers reject them
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"scene split must be one of {SPLITS}, got {split!r}")


def _check_file_name(file_name: str) -> None:
    """Refuse names that would leave the split's image folder."""
    if not file_name or Path(file_name).name != file_name or file_name in (".", ".."):
        raise ValueError(f"scene file_name must be a plain file name, got {file_name!r}")


def write_image(directory: Path, file_name: str, data: bytes) -> None:
    """Write an image file that must not exist yet (mode ``xb``).

    Raises:
        FileExistsError: ``directory/file_name`` exists (two scenes with one file name, or an
            output folder that already holds an export).
        ValueError: empty image bytes.
    """
    if not data:
        raise ValueError(f"scene image {file_name!r} is empty (read_image returned no bytes)")
    with open(directory / file_name, "xb") as handle:
        handle.write(data)


def prepare_dirs(paths: list[Path], *, overwrite: bool) -> None:
    """Make sure a writer's output folders hold nothing from an earlier export.

    Args:
        paths: the folders the writer fills (e.g. ``out_dir/images``).
        overwrite: remove a non-empty folder (True) or refuse it (False).

    Raises:
        FileExistsError: a folder is not empty and ``overwrite`` is False (stale images or
            shards next to the new ones would end up in the dataset).
    """
    for path in paths:
        if path.is_dir() and any(path.iterdir()):
            if not overwrite:
                raise FileExistsError(
                    f"{path} is not empty: export into a fresh folder or pass overwrite=True"
                )
            shutil.rmtree(path)
        elif path.exists() and not path.is_dir():
            raise FileExistsError(f"{path} exists and is not a folder")


class _SplitFiles:
    """One split's temporary ``images`` and ``annotations`` streams and its counters."""

    def __init__(self, annotations_dir: Path, split: str) -> None:
        self.images_path = annotations_dir / f".instances_{split}.images.part"
        self.annotations_path = annotations_dir / f".instances_{split}.annotations.part"
        self.images: IO[str] = open(self.images_path, "w", encoding="utf-8")  # noqa: SIM115
        self.annotations: IO[str] = open(self.annotations_path, "w", encoding="utf-8")  # noqa: SIM115
        self.image_count = 0
        self.annotation_count = 0
        self.licences: dict[str, int] = {}

    def close(self) -> None:
        self.images.close()
        self.annotations.close()

    def remove(self) -> None:
        self.close()
        self.images_path.unlink(missing_ok=True)
        self.annotations_path.unlink(missing_ok=True)


class CocoWriter:
    """Stream scenes into a COCO instance-segmentation export (see the module docstring).

    Call :meth:`add` once per scene, then :meth:`close`. Usable as a context manager: leaving
    the ``with`` block normally closes the writer; leaving it with an exception removes the
    temporary files and writes no JSON.

    Args:
        out_dir: the export's folder (created if missing).
        copy_images: write each scene's image bytes (``scene.read_image()``) under
            ``out_dir/images/{split}/``; with False, only the JSON is written and the images'
            ``file_name`` refers to files placed there by someone else.
        info: extra keys for the JSON's ``info`` object (``description``, ``version``,
            ``url``, ``contributor``...), overriding the defaults.
        overwrite: remove ``out_dir/annotations`` and ``out_dir/images`` (the latter only with
            ``copy_images``) when they hold an earlier export; by default such folders are
            refused.
        classes: the category ids (default: every taxonomy category).

    Raises:
        FileExistsError: ``out_dir/annotations`` or ``out_dir/images`` is not empty and
            ``overwrite`` is False.
    """

    def __init__(
        self,
        out_dir: Path,
        *,
        copy_images: bool = True,
        info: dict[str, Any] | None = None,
        overwrite: bool = False,
        classes: ClassMap | None = None,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.copy_images = copy_images
        self.classes = classes or ClassMap.taxonomy()
        prepare_dirs(
            [self.out_dir / "annotations"] + ([self.out_dir / "images"] if copy_images else []),
            overwrite=overwrite,
        )
        now = dt.datetime.now(dt.UTC)
        self.info: dict[str, Any] = {
            "description": "Modomo interior scenes: instance segmentation",
            "version": "1.0",
            "year": now.year,
            "contributor": "Modomo",
            "url": "",
            "date_created": now.isoformat(timespec="seconds"),
        }
        self.info.update(info or {})
        self.annotations_dir = self.out_dir / "annotations"
        self.annotations_dir.mkdir(parents=True, exist_ok=True)
        self._splits: dict[str, _SplitFiles] = {}
        self._counts: dict[str, dict[str, int]] | None = None
        self._aborted = False
        try:
            for split in SPLITS:
                if copy_images:
                    (self.out_dir / "images" / split).mkdir(parents=True, exist_ok=True)
                self._splits[split] = _SplitFiles(self.annotations_dir, split)
        except BaseException:
            self.abort()
            raise

    def add(self, scene: ExportScene) -> None:
        """Append one scene: its image entry, its annotations and (if copying) its image file.

        Reads the image with ``scene.read_image()`` once, only when ``copy_images``.

        Raises:
            RuntimeError: after :meth:`close`.
            ValueError: unknown split or category, a mask whose size is not the image's, an
                unsafe ``file_name``, empty image bytes, NaN/infinite numbers.
            FileExistsError: the image file already exists in the split's folder.
        """
        if self._counts is not None or self._aborted:
            raise RuntimeError("CocoWriter.add() after close() or abort()")
        _check_split(scene.split)
        _check_file_name(scene.file_name)
        files = self._splits[scene.split]
        # build every entry before writing anything, so a bad object leaves no half scene
        image_id = files.image_count + 1
        image: dict[str, Any] = {
            "id": image_id,
            "file_name": scene.file_name,
            "width": int(scene.width),
            "height": int(scene.height),
        }
        image.update(
            {
                "modomo_scene_id": scene.id,
                "room_type": scene.room_type,
                "style": scene.style,
                "modomo_source": scene.source,
                "modomo_source_key": scene.source_key,
                "modomo_image_url": scene.image_url,
            }
        )
        annotations = [
            _dumps(
                self._annotation(
                    obj, files.annotation_count + 1 + i, image_id, scene.height, scene.width
                )
            )
            for i, obj in enumerate(scene.objects)
        ]
        if scene.licence:
            image["license"] = files.licences.get(scene.licence, len(files.licences) + 1)
        image_line = _dumps(image)
        if self.copy_images:
            write_image(self.out_dir / "images" / scene.split, scene.file_name, scene.read_image())
        if scene.licence:
            files.licences[scene.licence] = image["license"]
        files.images.write(("," if files.image_count else "") + "\n" + image_line)
        for line in annotations:
            files.annotations.write(("," if files.annotation_count else "") + "\n" + line)
            files.annotation_count += 1
        files.image_count += 1

    def _annotation(
        self, obj: ExportObject, annotation_id: int, image_id: int, height: int, width: int
    ) -> dict[str, Any]:
        try:
            category_id = self.classes.index(obj.category) + 1
        except ValueError as exc:
            raise ValueError(f"object {obj.id}: {exc}") from None
        if len(obj.bbox) != 4:
            raise ValueError(f"object {obj.id}: bbox must be [x, y, w, h], got {obj.bbox!r}")
        x, y, w, h = (float(v) for v in obj.bbox)
        annotation: dict[str, Any] = {
            "id": annotation_id,
            "image_id": image_id,
            "category_id": category_id,
            "bbox": [x, y, w, h],
        }
        if obj.mask_rle is not None:
            rle = normalise_rle(obj.mask_rle, int(height), int(width))
            annotation["segmentation"] = rle
            annotation["area"] = float(_rle_area(rle))
        else:
            annotation["segmentation"] = [[x, y, x + w, y, x + w, y + h, x, y + h]]
            annotation["area"] = w * h
        annotation.update(
            {
                "iscrowd": 0,
                "modomo_object_id": obj.id,
                "modomo_confidence": float(obj.confidence),
                "modomo_has_mask": obj.mask_rle is not None,
                "modomo_labelled_by": obj.labelled_by,
            }
        )
        return annotation

    def close(self) -> dict[str, dict[str, int]]:
        """Write ``annotations/instances_{split}.json`` for every split and remove the temp files.

        Every split in :data:`~modomo.export.records.SPLITS` gets a file, an empty one
        (``images: []``) where no scene went to it. Each file is written to a ``.tmp`` name and
        renamed into place. Calling it again returns the same counts.

        Returns:
            ``{split: {"images": n, "annotations": m}}`` for every split.

        Raises:
            RuntimeError: after :meth:`abort`.
        """
        if self._counts is not None:
            return self._counts
        if self._aborted:
            raise RuntimeError("CocoWriter.close() after abort()")
        counts: dict[str, dict[str, int]] = {}
        try:
            for split, files in self._splits.items():
                files.close()
                self._assemble(split, files)
                counts[split] = {"images": files.image_count, "annotations": files.annotation_count}
        finally:
            for files in self._splits.values():
                files.remove()
        self._counts = counts
        return counts

    def _assemble(self, split: str, files: _SplitFiles) -> None:
        final = self.annotations_dir / f"instances_{split}.json"
        partial = final.with_name(final.name + ".tmp")
        licences = [
            {"id": licence_id, "name": name, "url": ""}
            for name, licence_id in sorted(files.licences.items(), key=lambda item: item[1])
        ]
        with open(partial, "w", encoding="utf-8") as out:
            out.write("{\n" + _dumps("info") + ":" + _dumps(self.info) + ",\n")
            out.write(_dumps("licenses") + ":" + _dumps(licences) + ",\n")
            out.write(_dumps("categories") + ":" + _dumps(self.classes.coco_categories()) + ",\n")
            out.write(_dumps("images") + ":[")
            with open(files.images_path, encoding="utf-8") as part:
                shutil.copyfileobj(part, out, 1 << 20)
            out.write("\n],\n" + _dumps("annotations") + ":[")
            with open(files.annotations_path, encoding="utf-8") as part:
                shutil.copyfileobj(part, out, 1 << 20)
            out.write("\n]\n}\n")
        os.replace(partial, final)

    def abort(self) -> None:
        """Remove the temporary files without writing the JSON (after a failed export)."""
        for files in self._splits.values():
            files.remove()
        if self._counts is None:
            self._aborted = True

    def __enter__(self) -> CocoWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
