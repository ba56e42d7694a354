"""COCO, YOLO and Hugging Face exports and the dataset card, read back with each format's own
tools (pycocotools, Ultralytics' dataset loader, 🤗 Datasets)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from PIL import Image

from modomo.analysis.masks import decode_rle
from modomo.analysis.taxonomy import CATEGORIES, GROUPS
from modomo.export.card import dataset_card
from modomo.export.classes import ClassMap
from modomo.export.coco import CocoWriter
from modomo.export.hf import HfWriter, features, write_hf
from modomo.export.records import SPLITS
from modomo.export.yolo import YoloWriter, join_parts, mask_polygon
from tests.export.conftest import Built, ellipse, rectangle

os.environ.setdefault("YOLO_OFFLINE", "1")

TAXONOMY = ClassMap.taxonomy()


def _expected_counts(built: list[Built]) -> dict[str, dict[str, int]]:
    counts = {split: {"images": 0, "annotations": 0} for split in SPLITS}
    for item in built:
        counts[item.scene.split]["images"] += 1
        counts[item.scene.split]["annotations"] += len(item.scene.objects)
    return counts


def _raster(polygon_xy: np.ndarray, height: int, width: int) -> np.ndarray:
    """A polygon in pixel-index coordinates rasterised the way Ultralytics does (fillPoly)."""
    canvas = np.zeros((height, width), dtype=np.uint8)
    cv2.fillPoly(canvas, [np.round(polygon_xy).astype(np.int32)], 1)
    return canvas.astype(bool)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


# --- taxonomy order shared by the formats ---------------------------------------------------


def test_category_order_is_the_taxonomy_order() -> None:
    assert TAXONOMY.names == tuple(name for names in GROUPS.values() for name in names)
    assert len(TAXONOMY.names) == len(CATEGORIES)


# --- COCO -------------------------------------------------------------------------------------


def _write_coco(tmp_path: Path, built: list[Built], **kwargs: object) -> dict[str, dict[str, int]]:
    writer = CocoWriter(tmp_path / "coco", **kwargs)  # type: ignore[arg-type]
    for item in built:
        writer.add(item.scene)
    return writer.close()


def test_coco_round_trips_through_pycocotools(tmp_path: Path, scenes: list[Built]) -> None:
    from pycocotools.coco import COCO

    counts = _write_coco(tmp_path, scenes)
    assert counts == _expected_counts(scenes)
    root = tmp_path / "coco"
    assert sorted(p.name for p in (root / "annotations").iterdir()) == [
        f"instances_{split}.json" for split in sorted(SPLITS)
    ]  # the temporary part files are gone
    for split in SPLITS:
        coco = COCO(str(root / "annotations" / f"instances_{split}.json"))
        built = [item for item in scenes if item.scene.split == split]
        assert len(coco.imgs) == len(built)
        assert [c["supercategory"] for c in coco.loadCats(coco.getCatIds())] == [
            CATEGORIES[name].group for name in TAXONOMY.names
        ]
        assert coco.getCatIds() == list(range(1, len(CATEGORIES) + 1))
        for image_id, item in enumerate(built, start=1):
            image = coco.imgs[image_id]
            scene = item.scene
            assert (image["file_name"], image["width"], image["height"]) == (
                scene.file_name,
                scene.width,
                scene.height,
            )
            assert image["modomo_scene_id"] == scene.id
            assert image["room_type"] == scene.room_type
            assert (root / "images" / split / scene.file_name).read_bytes() == scene.read_image()
            anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
            assert len(anns) == len(scene.objects)
            for ann, obj, mask in zip(anns, scene.objects, item.masks, strict=True):
                assert coco.cats[ann["category_id"]]["name"] == obj.category
                assert ann["bbox"] == obj.bbox
                assert ann["iscrowd"] == 0 and "score" not in ann
                if mask is None:
                    assert ann["area"] == obj.bbox[2] * obj.bbox[3]
                    assert not ann["modomo_has_mask"]
                    assert len(ann["segmentation"]) == 1  # the box as a polygon
                else:
                    assert ann["segmentation"] == obj.mask_rle
                    assert ann["area"] == mask.sum()
                    np.testing.assert_array_equal(coco.annToMask(ann).astype(bool), mask)


def test_coco_licences_are_listed_once_and_referenced(tmp_path: Path, scenes: list[Built]) -> None:
    _write_coco(tmp_path, scenes)
    data = json.loads((tmp_path / "coco/annotations/instances_train.json").read_text())
    names = {entry["id"]: entry["name"] for entry in data["licenses"]}
    assert sorted(names.values()) == ["CC-BY-4.0", "CC0-1.0"]
    by_scene = {image["modomo_scene_id"]: image.get("license") for image in data["images"]}
    assert names[by_scene["scene-a"]] == "CC-BY-4.0"
    assert names[by_scene["scene-b"]] == "CC0-1.0"
    assert by_scene["scene-c"] is None  # no licence stated
    assert data["info"]["description"]


@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
def test_coco_eval_of_the_export_against_itself_is_perfect(
    tmp_path: Path, scenes: list[Built], iou_type: str
) -> None:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    _write_coco(tmp_path, scenes)
    gt = COCO(str(tmp_path / "coco/annotations/instances_train.json"))
    detections = [
        {
            "image_id": ann["image_id"],
            "category_id": ann["category_id"],
            "bbox": ann["bbox"],
            "segmentation": ann["segmentation"],
            "score": 1.0,
        }
        for ann in gt.dataset["annotations"]
    ]
    evaluation = COCOeval(gt, gt.loadRes(detections), iouType=iou_type)
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    assert evaluation.stats[0] == pytest.approx(1.0, abs=1e-12)  # a mean of 1.0s


def test_coco_without_copying_images(tmp_path: Path, scenes: list[Built]) -> None:
    calls: list[str] = []
    scene = scenes[0].scene

    def read() -> bytes:
        calls.append(scene.id)
        return b""

    from dataclasses import replace

    writer = CocoWriter(tmp_path, copy_images=False)
    writer.add(replace(scene, read_image=read))
    assert writer.close()["train"] == {"images": 1, "annotations": 2}
    assert calls == [] and not (tmp_path / "images").exists()


def test_coco_rejects_bad_scenes_without_writing_half_of_them(
    tmp_path: Path, scenes: list[Built], make_scene: Callable[..., Built]
) -> None:
    from dataclasses import replace

    writer = CocoWriter(tmp_path)
    good = scenes[0].scene
    with pytest.raises(ValueError, match="split"):
        writer.add(replace(good, split="holdout"))
    wrong_size = make_scene(
        "s1", "train", [("sofa", rectangle(10, 12, 1, 1, 3, 3), None)], height=10, width=12
    ).scene
    with pytest.raises(ValueError, match="mask size"):
        writer.add(replace(wrong_size, height=20))
    with pytest.raises(ValueError, match="taxonomy"):
        writer.add(replace(good, objects=[replace(good.objects[0], category="couch")]))
    with pytest.raises(ValueError, match="file name"):
        writer.add(replace(good, file_name="../escape.png"))
    writer.add(good)
    with pytest.raises(FileExistsError):
        writer.add(good)
    counts = writer.close()
    assert counts["train"] == {"images": 1, "annotations": 2}
    data = json.loads((tmp_path / "annotations/instances_train.json").read_text())
    assert [image["id"] for image in data["images"]] == [1]
    assert [ann["id"] for ann in data["annotations"]] == [1, 2]
    with pytest.raises(RuntimeError):
        writer.add(good)
    assert writer.close() == counts


def test_coco_context_manager_cleans_up_after_an_error(tmp_path: Path, scenes: list[Built]) -> None:
    with pytest.raises(KeyError), CocoWriter(tmp_path) as writer:
        writer.add(scenes[0].scene)
        raise KeyError("boom")
    assert list((tmp_path / "annotations").iterdir()) == []


# --- YOLO -------------------------------------------------------------------------------------


def _yolo_labels(root: Path, split: str, task: str) -> dict[str, dict[str, object]]:
    """Labels as Ultralytics' own dataset class parses them, keyed by image file name."""
    from ultralytics.cfg import get_cfg
    from ultralytics.data import YOLODataset

    data = yaml.safe_load((root / "data.yaml").read_text())
    dataset = YOLODataset(
        img_path=str(root / "images" / split), data=data, task=task, augment=False, hyp=get_cfg()
    )
    return {Path(str(label["im_file"])).name: label for label in dataset.labels}


def test_yolo_detect_boxes_round_trip_through_ultralytics(
    tmp_path: Path, scenes: list[Built]
) -> None:
    writer = YoloWriter(tmp_path, task="detect")
    for item in scenes:
        writer.add(item.scene)
    assert writer.close() == _expected_counts(scenes)
    data = yaml.safe_load((tmp_path / "data.yaml").read_text())
    assert "path" not in data  # ultralytics takes data.yaml's folder as the root
    assert [data[split] for split in SPLITS] == [f"images/{split}" for split in SPLITS]
    assert data["names"] == dict(enumerate(TAXONOMY.names))
    for split in SPLITS:
        labels = _yolo_labels(tmp_path, split, "detect")
        for item in (i for i in scenes if i.scene.split == split):
            scene = item.scene
            label = labels[scene.file_name]
            assert (
                tmp_path / "images" / split / scene.file_name
            ).read_bytes() == scene.read_image()
            assert (tmp_path / "labels" / split / f"{scene.id}.txt").is_file()
            classes = np.asarray(label["cls"]).ravel().astype(int).tolist()
            assert [TAXONOMY.names[c] for c in classes] == [o.category for o in scene.objects]
            expected = np.array(
                [
                    [(x + w / 2) / scene.width, (y + h / 2) / scene.height]
                    + [w / scene.width, h / scene.height]
                    for x, y, w, h in (o.bbox for o in scene.objects)
                ]
            ).reshape(-1, 4)
            # normalised 0-1 and written with 6 decimals: equal within 1e-5
            np.testing.assert_allclose(np.asarray(label["bboxes"]), expected, atol=1e-5)


def test_yolo_detect_clips_boxes_to_the_image(
    tmp_path: Path, make_scene: Callable[..., Built]
) -> None:
    scene = make_scene(
        "clip", "val", [("lamp", None, [-10.0, 50.0, 40.0, 80.0])], height=64, width=64
    )
    writer = YoloWriter(tmp_path)
    writer.add(scene.scene)
    writer.close()
    line = (tmp_path / "labels/val/clip.txt").read_text().split()
    class_id, cx, cy, w, h = int(line[0]), *map(float, line[1:])
    assert TAXONOMY.names[class_id] == "lamp"
    assert (cx, cy, w, h) == pytest.approx((15 / 64, 57 / 64, 30 / 64, 14 / 64), abs=1e-6)


def test_yolo_segment_polygons_cover_the_masks(tmp_path: Path, scenes: list[Built]) -> None:
    writer = YoloWriter(tmp_path, task="segment")
    for item in scenes:
        writer.add(item.scene)
    writer.close()
    for split in SPLITS:
        labels = _yolo_labels(tmp_path, split, "segment")
        for item in (i for i in scenes if i.scene.split == split):
            scene = item.scene
            label = labels[scene.file_name]
            segments = label["segments"]
            assert isinstance(segments, list)
            assert len(segments) == len(scene.objects)  # one line per object, parts joined
            scale = np.array([scene.width, scene.height])
            for segment, obj, mask in zip(segments, scene.objects, item.masks, strict=True):
                polygon = np.asarray(segment) * scale
                if mask is None:  # the box as a 4-point polygon
                    x, y, w, h = obj.bbox
                    assert polygon.shape == (4, 2)
                    np.testing.assert_allclose(
                        polygon, [[x, y], [x + w, y], [x + w, y + h], [x, y + h]], atol=1e-3
                    )
                    continue
                assert _iou(_raster(polygon, scene.height, scene.width), mask) > 0.9


def test_yolo_segment_two_part_mask_is_one_line_covering_both_parts(
    tmp_path: Path, make_scene: Callable[..., Built]
) -> None:
    h, w = 80, 120
    left, right = rectangle(h, w, 5, 5, 30, 40), ellipse(h, w, 90, 55, 20, 15)
    item = make_scene("two", "train", [("sofa", left | right, None)], height=h, width=w)
    writer = YoloWriter(tmp_path, task="segment")
    writer.add(item.scene)
    writer.close()
    lines = (tmp_path / "labels/train/two.txt").read_text().splitlines()
    assert len(lines) == 1
    values = np.array(lines[0].split()[1:], dtype=np.float64).reshape(-1, 2) * [w, h]
    raster = _raster(values, h, w)
    assert _iou(raster, left | right) > 0.9
    assert (raster & left).sum() / left.sum() > 0.95
    assert (raster & right).sum() / right.sum() > 0.95


def test_join_parts_matches_ultralytics_merge_multi_segment() -> None:
    from ultralytics.data.converter import merge_multi_segment

    h, w = 100, 160
    mask = (
        rectangle(h, w, 5, 5, 30, 20)
        | ellipse(h, w, 80, 70, 20, 15)
        | rectangle(h, w, 130, 10, 20, 60)
    )
    contours, _ = cv2.findContours(
        mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
    )
    parts = [c.reshape(-1, 2) for c in contours]
    assert len(parts) == 3
    ours = join_parts(parts)
    theirs = np.concatenate(merge_multi_segment([p.ravel().tolist() for p in parts]))
    assert _iou(_raster(ours, h, w), _raster(theirs, h, w)) > 0.99
    assert _iou(_raster(ours, h, w), mask) > 0.9
    polygon = mask_polygon(mask)
    assert polygon is not None
    np.testing.assert_array_equal(polygon, ours)


def test_mask_polygon_drops_parts_under_three_points() -> None:
    mask = rectangle(20, 20, 2, 2, 8, 8)
    mask[15, 15] = True  # a single pixel: one contour point
    polygon = mask_polygon(mask)
    assert polygon is not None and len(polygon) == 4
    speck = np.zeros((20, 20), dtype=bool)
    speck[3, 3:9] = True  # a one-pixel line: two contour points
    assert mask_polygon(speck) is None
    with pytest.raises(ValueError):
        join_parts([])


def test_yolo_background_scene_gets_an_empty_label_file(
    tmp_path: Path, scenes: list[Built]
) -> None:
    writer = YoloWriter(tmp_path)
    background = next(item.scene for item in scenes if not item.scene.objects)
    writer.add(background)
    writer.close()
    assert (tmp_path / "labels/train" / f"{background.id}.txt").read_text() == ""
    labels = _yolo_labels(tmp_path, "train", "detect")
    assert len(np.asarray(labels[background.file_name]["cls"])) == 0


def test_yolo_rejects_unknown_task(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="task"):
        YoloWriter(tmp_path, task="pose")  # type: ignore[arg-type]


# --- Hugging Face ----------------------------------------------------------------------------


def test_hf_round_trips_through_load_from_disk(tmp_path: Path, scenes: list[Built]) -> None:
    import datasets

    counts = write_hf([item.scene for item in scenes], tmp_path)
    assert counts == _expected_counts(scenes)
    assert not (tmp_path / ".hf-tmp").exists()
    loaded = datasets.load_from_disk(str(tmp_path / "dataset"))
    assert isinstance(loaded, datasets.DatasetDict)
    assert list(loaded) == list(SPLITS)
    category = features(TAXONOMY)["objects"].feature["category"]
    for split in SPLITS:
        dataset = loaded[split]
        assert dataset.features == features(TAXONOMY)
        built = [item for item in scenes if item.scene.split == split]
        assert len(dataset) == len(built)
        for row, item in zip(dataset, built, strict=True):
            scene = item.scene
            assert row["scene_id"] == scene.id
            assert row["image"].size == (scene.width, scene.height)
            assert row["room_type"] == scene.room_type
            assert row["licence"] == scene.licence
            assert json.loads(row["models"]) == scene.models
            assert json.loads(row["colors"]) == scene.colors
            assert (row["depth_unit"], row["depth_min"], row["depth_max"]) == ("m", 0.5, 6.25)
            assert len(row["objects"]) == len(scene.objects)
            for got, obj, mask in zip(row["objects"], scene.objects, item.masks, strict=True):
                assert got["id"] == obj.id
                np.testing.assert_allclose(got["bbox"], obj.bbox, rtol=1e-6)
                assert category.int2str(got["category"]) == obj.category
                assert got["taxonomy_group"] == obj.taxonomy_group
                assert got["confidence"] == pytest.approx(obj.confidence)
                assert got["depth_median"] == pytest.approx(obj.depth_median)
                if mask is None:
                    assert got["mask_rle"] is None and got["mask_size"] is None
                    assert got["area"] is None
                else:
                    rle = {"size": got["mask_size"], "counts": got["mask_rle"]}
                    np.testing.assert_array_equal(decode_rle(rle), mask)
                    assert got["area"] == mask.sum()


def test_hf_saved_metadata_equals_save_to_disk(tmp_path: Path, scenes: list[Built]) -> None:
    import datasets

    write_hf([item.scene for item in scenes], tmp_path / "ours")
    loaded = datasets.load_from_disk(str(tmp_path / "ours" / "dataset"))
    loaded.save_to_disk(str(tmp_path / "theirs"))
    for name in ("dataset_dict.json", "train/dataset_info.json", "val/dataset_info.json"):
        ours = json.loads((tmp_path / "ours/dataset" / name).read_text())
        theirs = json.loads((tmp_path / "theirs" / name).read_text())
        assert ours == theirs, name
    ours = json.loads((tmp_path / "ours/dataset/train/state.json").read_text())
    theirs = json.loads((tmp_path / "theirs/train/state.json").read_text())
    ours.pop("_fingerprint"), theirs.pop("_fingerprint")
    assert ours == theirs


def test_hf_parquet_shards_load_with_load_dataset(tmp_path: Path, scenes: list[Built]) -> None:
    import datasets

    # a tiny shard size: every split rolls over into several shards
    counts = write_hf(lambda: iter([item.scene for item in scenes]), tmp_path, max_shard_size="3KB")
    train_shards = sorted((tmp_path / "data").glob("train-*.parquet"))
    assert len(train_shards) > 1
    n = len(train_shards)
    assert [p.name for p in train_shards] == [f"train-{i:05d}-of-{n:05d}.parquet" for i in range(n)]
    assert len(list((tmp_path / "dataset/train").glob("data-*.arrow"))) > 1
    assert not list((tmp_path / "data").glob(".*"))  # no temporary names left
    loaded = datasets.load_dataset(
        "parquet",
        data_files={split: str(tmp_path / "data" / f"{split}-*.parquet") for split in SPLITS},
        cache_dir=str(tmp_path / "cache"),
    )
    saved = datasets.load_from_disk(str(tmp_path / "dataset"))
    for split in SPLITS:
        assert len(loaded[split]) == counts[split]["images"] == len(saved[split])
        assert loaded[split].features == features(TAXONOMY)
        assert loaded[split]["scene_id"] == saved[split]["scene_id"]  # same order in both
    first = loaded["train"][0]
    assert isinstance(first["image"], Image.Image)
    assert first["image"].size == (scenes[0].scene.width, scenes[0].scene.height)


def test_hf_leaves_out_empty_splits(tmp_path: Path, scenes: list[Built]) -> None:
    import datasets

    train_only = [item.scene for item in scenes if item.scene.split == "train"]
    counts = write_hf(train_only, tmp_path)
    assert counts["val"] == counts["test"] == {"images": 0, "annotations": 0}
    assert list(datasets.load_from_disk(str(tmp_path / "dataset"))) == ["train"]
    assert {p.name.split("-")[0] for p in (tmp_path / "data").glob("*.parquet")} == {"train"}


def test_hf_writer_refuses_an_existing_export_and_cleans_up_after_errors(
    tmp_path: Path, scenes: list[Built]
) -> None:
    with pytest.raises(ValueError, match="max_shard_size"):
        HfWriter(tmp_path, max_shard_size="lots")
    with pytest.raises(KeyError), HfWriter(tmp_path) as writer:
        for item in scenes:
            writer.add(item.scene)
        raise KeyError("boom")
    assert not (tmp_path / "dataset").exists() and not (tmp_path / "data").exists()
    write_hf([scenes[0].scene], tmp_path)
    with pytest.raises(FileExistsError, match="overwrite"):
        HfWriter(tmp_path)
    import datasets

    counts = write_hf([item.scene for item in scenes[4:]], tmp_path, overwrite=True)
    loaded = datasets.load_from_disk(str(tmp_path / "dataset"))
    assert {split: len(ds) for split, ds in loaded.items()} == {"val": 1, "test": 1}
    assert counts["train"]["images"] == 0
    assert not list((tmp_path / "data").glob("train-*"))  # the earlier shards are gone


@pytest.mark.parametrize("fmt", ["coco", "yolo"])
def test_writers_refuse_or_replace_an_earlier_export(
    tmp_path: Path, scenes: list[Built], fmt: str
) -> None:
    def writer(overwrite: bool = False) -> CocoWriter | YoloWriter:
        if fmt == "coco":
            return CocoWriter(tmp_path, overwrite=overwrite)
        return YoloWriter(tmp_path, overwrite=overwrite)

    first = writer()
    for item in scenes[:2]:
        first.add(item.scene)
    first.close()
    with pytest.raises(FileExistsError, match="overwrite"):
        writer()
    second = writer(overwrite=True)
    second.add(scenes[2].scene)
    second.close()
    assert [p.name for p in (tmp_path / "images/train").iterdir()] == [scenes[2].scene.file_name]


# --- dataset card -----------------------------------------------------------------------------


def _front_matter(card: str) -> dict[str, object]:
    assert card.startswith("---\n")
    header, _, _ = card[4:].partition("\n---\n")
    parsed = yaml.safe_load(header)
    assert isinstance(parsed, dict)
    return parsed


def test_dataset_card_parses_and_contains_the_numbers() -> None:
    card = dataset_card(
        name="Modomo interiors",
        counts={
            "train": {"images": 1234, "annotations": 5678},
            "val": {"images": 150, "annotations": 600},
            "test": {"images": 0, "annotations": 0},
        },
        class_histogram={"sofa": 40, "chair": 410, "lamp": 7},
        room_types={"living_room": 900, "bedroom": 484},
        models={"detector": "yolo11x@ultralytics-8.3.0", "segmenter": "sam2.1-large@abc123"},
        licences={"detector": "AGPL-3.0", "segmenter": "Apache-2.0", "images": "per image"},
        options={"ratios": [0.8, 0.1, 0.1], "min_confidence": 0.35},
        formats="coco, yolo-segment, hf",
    )
    meta = _front_matter(card)
    assert meta["license"] == "other"
    assert meta["task_categories"] == ["object-detection", "image-segmentation"]
    assert meta["configs"] == [
        {
            "config_name": "default",
            "data_files": [
                {"split": "train", "path": "data/train-*.parquet"},
                {"split": "val", "path": "data/val-*.parquet"},
            ],  # the empty test split is left out
        }
    ]
    for number in ("1,234", "5,678", "150", "1,384", "6,278", "410", "900", "484"):
        assert number in card
    assert card.index("| chair | 410 |") < card.index("| sofa | 40 |") < card.index("| lamp | 7 |")
    assert "yolo11x@ultralytics-8.3.0" in card and "AGPL-3.0" in card and "Apache-2.0" in card
    assert "load_from_disk" in card and "load_dataset" in card
    assert "pycocotools" in card and "ultralytics" in card
    assert '"min_confidence": 0.35' in card
    for heading in (
        "## Summary",
        "## Counts",
        "## Classes",
        "## Room types",
        "## Models",
        "## How to load",
        "## Provenance",
        "## Export options",
    ):
        assert heading in card


def test_dataset_card_without_hf_has_no_parquet_configs() -> None:
    card = dataset_card(
        name="coco only",
        counts={"train": {"scenes": 3, "objects": 7}, "val": {"scenes": 1, "objects": 2}},
        class_histogram={"sofa": 9},
        room_types={"bedroom": 4},
        models={"detector": "d@1"},
        licences={},
        options={},
        formats="coco",
        format_dirs={"coco": "coco"},
    )
    assert "configs" not in _front_matter(card)
    assert "| train | 3 | 7 |" in card and "**4**" in card and "**9**" in card
    assert 'COCO("coco/annotations/instances_train.json")' in card
    assert "| detector | `d@1` | not stated |" in card


def test_dataset_card_from_writer_counts(tmp_path: Path, scenes: list[Built]) -> None:
    counts = write_hf([item.scene for item in scenes], tmp_path)
    card = dataset_card(
        name="tiny | test",
        counts=counts,
        class_histogram={},
        room_types={},
        models={},
        licences={},
        options={},
        formats="hf",
        license_id="cc-by-4.0",
        sources={"fixture": len(scenes)},
    )
    meta = _front_matter(card)
    assert meta["license"] == "cc-by-4.0" and meta["pretty_name"] == "tiny | test"
    assert [f["split"] for f in meta["configs"][0]["data_files"]] == list(SPLITS)  # type: ignore[index]
    assert "from pycocotools.coco import COCO" not in card  # only the hf snippet was asked for
    assert "ultralytics" not in card
    assert "| fixture | 6 |" in card
