"""Exports from the database (PostgreSQL): the chosen scenes, their splits, duplicates and
failures left out, the manifest, and the CLI (`modomo export`, `modomo preview`). The
formats' round trips through pycocotools, ultralytics and datasets are in tests/export/."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO
from sqlalchemy import update

from modomo.analysis.masks import decode_rle, encode_rle
from modomo.db.models import DetectedObject, DuplicateGroup, Scene, SceneStatus
from modomo.db.session import session_scope
from modomo.export import ExportOptions, run_export
from modomo.export.classes import ClassMap
from modomo.jobs import create_job
from modomo.models.licences import KNOWN_LICENCES
from modomo.sources import ingest
from modomo.sources.inputs import Input
from tests.support import encode, run_cli

pytestmark = pytest.mark.services

ROOMS = ("kitchen", "bedroom")


def _scene_image(seed: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """A 96x64 picture with a rectangle and an ellipse on a noisy background, and their
    masks ((H, W) bool)."""
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 60, size=(64, 96, 3), dtype=np.uint8)
    rect = np.zeros((64, 96), bool)
    x, y = int(rng.integers(2, 40)), int(rng.integers(2, 20))
    rect[y : y + 20, x : x + 30] = True
    yy, xx = np.mgrid[:64, :96]
    ellipse = ((xx - 70) / 14.0) ** 2 + ((yy - 45) / 10.0) ** 2 <= 1
    rgb[rect] = (200, 30, 30)
    rgb[ellipse] = (30, 30, 200)
    return rgb, [rect, ellipse]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A job of 12 scenes with two objects each; one failed scene, one duplicate pair."""
    folder = tmp_path_factory.mktemp("export-scenes")
    masks: dict[str, list[np.ndarray]] = {}
    inputs = []
    tag = uuid.uuid4().hex[:8]
    for index in range(12):
        rgb, shapes = _scene_image(index + 1000)
        path = folder / f"{tag}-{index:02d}.png"
        path.write_bytes(encode(rgb))
        masks[str(path)] = shapes
        inputs.append(Input("folder", str(path), room_type=ROOMS[index % 2]))
    job_id = create_job("detection", {"test": "export"})
    scene_ids = ingest(job_id, inputs).scene_ids
    by_scene = {}
    with session_scope() as session:
        for sid, item in zip(scene_ids, inputs, strict=True):
            by_scene[str(sid)] = masks[item.location]
            for mask, (category, group) in zip(
                masks[item.location], (("sofa", "seating"), ("bed", "bedroom")), strict=True
            ):
                ys, xs = np.nonzero(mask)
                session.add(
                    DetectedObject(
                        scene_id=sid,
                        job_id=job_id,
                        bbox=[
                            float(xs.min()),
                            float(ys.min()),
                            float(xs.max() - xs.min() + 1),
                            float(ys.max() - ys.min() + 1),
                        ],
                        category=category,
                        taxonomy_group=group,
                        confidence=0.9,
                        mask_rle=encode_rle(mask),
                        mask_area=int(mask.sum()),
                        models={"detector": "yolo11n.pt@test"},
                    )
                )
        failed, duplicate, canonical = scene_ids[0], scene_ids[1], scene_ids[2]
        session.execute(update(Scene).where(Scene.id == failed).values(status=SceneStatus.FAILED))
        group = DuplicateGroup(canonical_scene_id=canonical, method="phash", size=2)
        session.add(group)
        session.flush()
        session.execute(
            update(Scene)
            .where(Scene.id.in_([duplicate, canonical]))
            .values(duplicate_group_id=group.id)
        )
    return {
        "job_id": job_id,
        "scene_ids": scene_ids,
        "masks": by_scene,
        "failed": str(failed),
        "duplicate": str(duplicate),
    }


def _coco_images(out: Path) -> dict[str, dict]:
    images = {}
    for split in ("train", "val", "test"):
        path = out / "annotations" / f"instances_{split}.json"
        coco = COCO(str(path))
        for image in coco.dataset["images"]:
            images[image["modomo_scene_id"]] = {
                "split": split,
                "masks": [coco.annToMask(a) for a in coco.imgToAnns[image["id"]]],
                "file": out / "images" / split / image["file_name"],
            }
    return images


def test_coco_export_of_a_job_leaves_out_failed_and_duplicate_scenes(
    dataset: dict, tmp_path: Path
) -> None:
    options = ExportOptions(format="coco", job_id=dataset["job_id"])
    manifest = run_export(options, tmp_path / "coco")
    images = _coco_images(tmp_path / "coco")
    expected = {str(s) for s in dataset["scene_ids"]} - {dataset["failed"], dataset["duplicate"]}
    assert set(images) == expected
    assert manifest["total"] == {"scenes": 10, "objects": 20}
    for scene_id, image in images.items():
        assert image["file"].is_file()
        stored = sorted(dataset["masks"][scene_id], key=lambda m: int(m.sum()))
        exported = sorted(image["masks"], key=lambda m: int(m.sum()))
        assert all(np.array_equal(a, b.astype(bool)) for a, b in zip(stored, exported, strict=True))
    assert manifest["models"] == [
        {"role": "detector", "model": "yolo11n.pt@test", "licence": KNOWN_LICENCES["yolo11n.pt"]}
    ]
    assert manifest["class_histogram"] == {"sofa": 10, "bed": 10}
    # compact ids: only the two categories that occur, in the taxonomy's order
    assert manifest["classes"] == {
        "classes": "used",
        "names": list(ClassMap.used({"sofa", "bed"}).names),
    }
    # the manifest's checksum covers every file; a second export of the same data matches it
    again = run_export(options, tmp_path / "again")
    assert again["checksum"] == manifest["checksum"] and manifest["files"] == 10 + 3 + 2
    listing = (tmp_path / "coco" / "checksums.sha256").read_text()
    assert listing == (tmp_path / "again" / "checksums.sha256").read_text()
    assert hashlib.sha256(listing.encode()).hexdigest() == manifest["checksum"]
    assert (
        json.loads((tmp_path / "coco" / "manifest.json").read_text())["checksum"]
        == (manifest["checksum"])
    )
    assert {s: _coco_images(tmp_path / "again")[s]["split"] for s in images} == {
        s: image["split"] for s, image in images.items()
    }

    everything = run_export(
        ExportOptions(
            format="coco", job_id=dataset["job_id"], include_failed=True, include_duplicates=True
        ),
        tmp_path / "all",
    )
    assert everything["total"]["scenes"] == 12


def test_filters_and_ratios(dataset: dict, tmp_path: Path) -> None:
    kitchens = run_export(
        ExportOptions(
            format="yolo", job_id=dataset["job_id"], room_types=("kitchen",), ratios=(1, 0, 0)
        ),
        tmp_path / "yolo",
    )
    assert kitchens["counts"]["train"]["scenes"] == kitchens["total"]["scenes"] == 5
    assert kitchens["room_types"] == {"kitchen": 5}
    labels = sorted((tmp_path / "yolo" / "labels" / "train").glob("*.txt"))
    assert len(labels) == 5 and all(len(p.read_text().splitlines()) == 2 for p in labels)
    with pytest.raises(ValueError, match="format"):
        run_export(ExportOptions(format="csv"), tmp_path / "bad")  # type: ignore[arg-type]


def test_cli_export_with_a_contact_sheet_and_preview(dataset: dict, tmp_path: Path) -> None:
    out = tmp_path / "hf"
    done = run_cli(
        "export", "--format", "hf", "--out", str(out), "--job", str(dataset["job_id"]), "--sheet"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "hf export" in done.stdout and (out / "manifest.json").is_file()
    assert (out / "README.md").read_text().startswith("---")
    with Image.open(out / "contact_sheet.png") as sheet:
        assert sheet.width > 256 and np.asarray(sheet).std() > 5

    scene_id = str(dataset["scene_ids"][3])
    png = tmp_path / "preview.png"
    shown = run_cli("preview", scene_id, "--out", str(png), "--max-size", "0")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    with Image.open(png) as image:
        assert image.size == (96, 64)
        pixels = np.asarray(image.convert("RGB")).astype(int)
    rgb, _ = _scene_image(1003)
    assert np.abs(pixels - rgb).sum() > 0 and pixels.std() > 10  # objects drawn, not blank

    bad = run_cli("export", "--format", "csv", "--out", str(tmp_path / "x"))
    assert bad.returncode == 2 and "unknown --format" in bad.stdout
    ratios = run_cli(
        "export", "--format", "coco", "--out", str(tmp_path / "x"), "--splits", "1,1,1"
    )
    assert ratios.returncode == 2 and "--splits" in ratios.stdout
    missing = run_cli("preview", str(uuid.uuid4()), "--out", str(png))
    assert missing.returncode == 1 and "no scene" in missing.stdout


def test_decoded_masks_helper_matches() -> None:
    # the fixture's masks survive encode/decode (guards the test's own expectations)
    _, shapes = _scene_image(1)
    assert all(np.array_equal(decode_rle(encode_rle(m)), m) for m in shapes)
