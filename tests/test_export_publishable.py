"""Exports fit to publish (issue 20): upright images that every reader pairs with the same
labels, no absolute local path, compact class ids, and a card that says what is true.

Scenes are ingested from JPEGs stored sideways with each EXIF orientation (1-8), as phones
store them; their objects (a red sofa and a blue lamp) are stored in the upright image's
pixels. Each format is read back by the tool people train with: torchvision's
``CocoDetection`` (which does not apply EXIF) and pycocotools, Ultralytics' dataset loader,
and ``datasets.load_from_disk``.
"""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import ExifTags, Image, ImageOps

from modomo.analysis.masks import encode_rle
from modomo.db.models import DetectedObject
from modomo.db.session import session_scope
from modomo.export import ExportOptions, run_export
from modomo.export.classes import ClassMap
from modomo.export.upright import upright_image
from modomo.jobs import create_job
from modomo.models.licences import KNOWN_LICENCES, UNKNOWN, model_licence
from modomo.sources import ingest
from modomo.sources.inputs import Input
from tests.support import run_cli

pytestmark = pytest.mark.services

HEIGHT, WIDTH = 96, 160  # upright
RED, BLUE = (220, 30, 30), (30, 40, 210)
# Pillow's exif_transpose per orientation, and the inverse that makes the stored image
_TO_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_INVERSE = {
    Image.Transpose.ROTATE_270: Image.Transpose.ROTATE_90,
    Image.Transpose.ROTATE_90: Image.Transpose.ROTATE_270,
}


def _upright(index: int) -> tuple[np.ndarray, list[tuple[str, str, np.ndarray, tuple]]]:
    """An upright (HEIGHT, WIDTH, 3) picture with a red sofa and a blue lamp rectangle."""
    rgb = np.full((HEIGHT, WIDTH, 3), 235, np.uint8)
    objects = []
    for category, group, colour, (x, y, w, h) in (
        ("sofa", "seating", RED, (8 + index, 10, 60, 30)),
        ("lamp", "lighting", BLUE, (100, 40 + index, 24, 44)),
    ):
        mask = np.zeros((HEIGHT, WIDTH), bool)
        mask[y : y + h, x : x + w] = True
        rgb[mask] = colour
        objects.append((category, group, mask, colour))
    return rgb, objects


def _stored_jpeg(rgb: np.ndarray, orientation: int) -> bytes:
    """The JPEG a camera would store: pixels transformed so that applying ``orientation``
    gives ``rgb`` back, and the tag."""
    image = Image.fromarray(rgb)
    if orientation != 1:
        op = _TO_UPRIGHT[orientation]
        image = image.transpose(_INVERSE.get(op, op))
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=95, exif=exif)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def sideways(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A job of 8 scenes, one per EXIF orientation, two objects each; the segmenter's label
    names a local weights folder (a path of this machine)."""
    root = tmp_path_factory.mktemp("publishable")
    folder = root / "photos"
    folder.mkdir()
    weights = root / "models" / "sam2-finetuned"
    inputs, drawn = [], {}
    for orientation in range(1, 9):
        rgb, objects = _upright(orientation)
        rgb[0, :16] = np.frombuffer(uuid.uuid4().bytes, np.uint8)[:, None]  # a new image
        path = folder / f"room-{uuid.uuid4().hex[:6]}-o{orientation}.jpg"
        path.write_bytes(_stored_jpeg(rgb, orientation))
        drawn[str(path)] = objects
        inputs.append(Input("folder", str(path), room_type="living_room"))
    job_id = create_job("detection", {"test": "publishable"})
    scene_ids = ingest(job_id, inputs).scene_ids
    assert len(scene_ids) == 8
    with session_scope() as session:
        for sid, item in zip(scene_ids, inputs, strict=True):
            for category, group, mask, _ in drawn[item.location]:
                ys, xs = np.nonzero(mask)
                session.add(
                    DetectedObject(
                        scene_id=sid,
                        job_id=job_id,
                        bbox=[
                            float(xs.min()),
                            float(ys.min()),
                            float(np.ptp(xs) + 1),
                            float(np.ptp(ys) + 1),
                        ],
                        category=category,
                        taxonomy_group=group,
                        confidence=0.9,
                        mask_rle=encode_rle(mask),
                        mask_area=int(mask.sum()),
                        models={
                            "detector": "yolo11n.pt@ultralytics-8.4.0",
                            "segmenter": f"{weights}@local",
                        },
                    )
                )
    return {"job_id": job_id, "root": root, "weights": weights}


def _mean_colour(rgb: np.ndarray, bbox: list[float]) -> np.ndarray:
    """Mean colour of a box's inner half (away from JPEG ringing at the edges)."""
    x, y, w, h = bbox
    inner = rgb[int(y + h / 4) : int(y + 3 * h / 4), int(x + w / 4) : int(x + 3 * w / 4)]
    return inner.reshape(-1, 3).mean(axis=0)


def _same_colour(rgb: np.ndarray, bbox: list[float], colour: tuple[int, int, int]) -> bool:
    return bool(np.all(np.abs(_mean_colour(rgb, bbox) - np.array(colour)) < 25))


COLOURS = {"sofa": RED, "lamp": BLUE}


def test_upright_image_applies_every_orientation_and_drops_the_tag() -> None:
    rgb, _ = _upright(0)
    for orientation in range(1, 9):
        stored = _stored_jpeg(rgb, orientation)
        written = upright_image(stored)
        if orientation == 1:
            assert written == stored  # nothing to do: the bytes as stored
            continue
        with Image.open(io.BytesIO(written)) as image:
            assert image.getexif().get(ExifTags.Base.Orientation) is None
            assert image.size == (WIDTH, HEIGHT)
            pixels = np.asarray(image.convert("RGB"), dtype=np.int16)
        with Image.open(io.BytesIO(stored)) as original:
            expected = np.asarray(ImageOps.exif_transpose(original).convert("RGB"), np.int16)
        assert np.abs(pixels - expected).mean() < 2  # one JPEG re-encoding at quality 95
    assert upright_image(b"not an image") == b"not an image"


def test_coco_images_are_upright_for_torchvision_and_pycocotools(
    sideways: dict, tmp_path: Path
) -> None:
    from torchvision.datasets import CocoDetection

    out = tmp_path / "coco"
    manifest = run_export(ExportOptions(format="coco", job_id=sideways["job_id"]), out)
    assert manifest["total"] == {"scenes": 8, "objects": 16}
    seen = 0
    for split in ("train", "val", "test"):
        annotations = out / "annotations" / f"instances_{split}.json"
        dataset = CocoDetection(str(out / "images" / split), str(annotations))
        categories = {c["id"]: c["name"] for c in dataset.coco.dataset["categories"]}
        for index in range(len(dataset)):
            image, targets = dataset[index]  # PIL.Image.open: no EXIF applied
            info = dataset.coco.imgs[dataset.ids[index]]
            assert image.size == (info["width"], info["height"]) == (WIDTH, HEIGHT)
            rgb = np.asarray(image.convert("RGB"))
            for target in targets:
                name = categories[target["category_id"]]
                assert _same_colour(rgb, target["bbox"], COLOURS[name]), (info, name)
                mask = dataset.coco.annToMask(target).astype(bool)
                assert mask.shape == rgb.shape[:2]
                assert np.abs(rgb[mask].mean(axis=0) - COLOURS[name]).max() < 25
                seen += 1
            assert info["modomo_source"] == "folder"
            assert info["modomo_source_key"].startswith("file:")
    assert seen == 16


def test_yolo_labels_line_up_in_ultralytics_loader(sideways: dict, tmp_path: Path) -> None:
    from ultralytics.cfg import get_cfg
    from ultralytics.data import YOLODataset

    out = tmp_path / "yolo"
    run_export(ExportOptions(format="yolo", job_id=sideways["job_id"], ratios=(1, 0, 0)), out)
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert "path" not in data and data["names"] == dict(enumerate(["sofa", "lamp"]))
    dataset = YOLODataset(
        img_path=str(out / "images" / "train"), data=data, augment=False, hyp=get_cfg()
    )
    assert len(dataset.labels) == 8
    for label in dataset.labels:
        height, width = label["shape"]
        assert (width, height) == (WIDTH, HEIGHT)
        rgb = np.asarray(Image.open(label["im_file"]).convert("RGB"))  # no EXIF left
        for cls, (cx, cy, w, h) in zip(label["cls"].ravel(), label["bboxes"], strict=True):
            box = [(cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height]
            assert _same_colour(rgb, box, COLOURS[data["names"][int(cls)]])
    provenance = [json.loads(line) for line in (out / "provenance.jsonl").read_text().splitlines()]
    assert len(provenance) == 8
    assert all((out / p["file"]).is_file() and p["source"] == "folder" for p in provenance)


def test_hf_rows_are_upright(sideways: dict, tmp_path: Path) -> None:
    import datasets

    out = tmp_path / "hf"
    run_export(ExportOptions(format="hf", job_id=sideways["job_id"], ratios=(1, 0, 0)), out)
    train = datasets.load_from_disk(str(out / "dataset"))["train"]
    names = train.features["objects"].feature["category"].names
    assert names == ["sofa", "lamp"]  # compact: the two categories that occur
    for row in train:
        assert row["image"].size == (row["width"], row["height"]) == (WIDTH, HEIGHT)
        rgb = np.asarray(row["image"].convert("RGB"))
        for obj in row["objects"]:
            assert _same_colour(rgb, obj["bbox"], COLOURS[names[obj["category"]]])


def _files_text(folder: Path) -> dict[Path, bytes]:
    return {path: path.read_bytes() for path in folder.rglob("*") if path.is_file()}


@pytest.mark.parametrize("fmt", ["coco", "yolo", "hf"])
def test_no_absolute_local_path_unless_asked_for(sideways: dict, tmp_path: Path, fmt: str) -> None:
    root = str(sideways["root"])
    out = tmp_path / fmt
    manifest = run_export(ExportOptions(format=fmt, job_id=sideways["job_id"]), out)  # type: ignore[arg-type]
    for path, data in _files_text(out).items():
        assert root.encode() not in data, f"{path} holds a local path"
        assert str(out).encode() not in data, f"{path} holds the export's own path"
    assert {m["model"] for m in manifest["models"]} == {
        "yolo11n.pt@ultralytics-8.4.0",
        "sam2-finetuned@local",
    }
    card = (out / "README.md").read_text()
    assert "| detector | `yolo11n.pt@ultralytics-8.4.0` | " + KNOWN_LICENCES["yolo11n.pt"] in card
    assert "| segmenter | `sam2-finetuned@local` | unknown |" in card  # never guessed

    kept = tmp_path / f"{fmt}-paths"
    run_export(
        ExportOptions(format=fmt, job_id=sideways["job_id"], include_paths=True),  # type: ignore[arg-type]
        kept,
    )
    assert any(root.encode() in data for data in _files_text(kept).values())


def test_classes_used_taxonomy_and_a_file(sideways: dict, tmp_path: Path) -> None:
    job = sideways["job_id"]
    used = run_export(ExportOptions(format="coco", job_id=job), tmp_path / "used")
    assert used["classes"]["names"] == ["sofa", "lamp"] and not used["left_out_objects"]
    coco = json.loads((tmp_path / "used" / "annotations" / "instances_train.json").read_text())
    assert [c["id"] for c in coco["categories"]] == [1, 2]
    assert json.loads((tmp_path / "used" / "classes.json").read_text())["names"] == [
        "sofa",
        "lamp",
    ]
    assert "| 1 | 2 | lamp |" in (tmp_path / "used" / "README.md").read_text()

    everything = run_export(
        ExportOptions(format="yolo", job_id=job, classes="taxonomy"), tmp_path / "all"
    )
    assert everything["classes"]["names"] == list(ClassMap.taxonomy().names)

    listing = tmp_path / "classes.txt"
    listing.write_text("# lamps first\nlamp\nchair\n")
    only = run_export(
        ExportOptions(format="yolo", job_id=job, classes=str(listing), ratios=(1, 0, 0)),
        tmp_path / "file",
    )
    assert only["classes"]["names"] == ["lamp", "chair"]
    assert only["left_out_objects"] == {"sofa": 8} and only["total"]["objects"] == 8
    assert only["options"]["classes"] == "classes.txt"  # the file by its name, no path
    labels = (tmp_path / "file" / "labels" / "train").glob("*.txt")
    assert {line.split()[0] for p in labels for line in p.read_text().splitlines()} == {"0"}

    listing.write_text("lamp\ncouch\n")
    with pytest.raises(ValueError, match="couch"):
        run_export(ExportOptions(format="yolo", job_id=job, classes=str(listing)), tmp_path / "x")


def test_model_licences_come_from_metadata(tmp_path: Path) -> None:
    assert (
        model_licence("facebook/sam2.1-hiera-tiny@abc")
        == KNOWN_LICENCES["facebook/sam2.1-hiera-tiny"]
    )
    assert model_licence("yolo11n.pt@ultralytics-8.4.0").startswith("AGPL-3.0")
    # a local folder: its model card's front matter, else unknown (never its path's words)
    folder = tmp_path / "sam2"
    folder.mkdir()
    assert model_licence(f"{folder}@local") == UNKNOWN
    (folder / "README.md").write_text("---\nlicense: cc-by-4.0\n---\n# fine-tuned\n")
    assert model_licence(f"{folder}@local") == "cc-by-4.0"
    # a hub snapshot pulled into the model directory
    snapshot = tmp_path / "models" / "huggingface" / "models--acme--room-seg" / "snapshots"
    (snapshot / "0123456789abcdef").mkdir(parents=True)
    (snapshot / "0123456789abcdef" / "README.md").write_text(
        "---\nlicense: other\nlicense_name: acme-research\n---\n"
    )
    assert model_licence("acme/room-seg@0123456789ab", tmp_path / "models") == (
        "other (acme-research)"
    )
    assert model_licence("acme/room-seg@0123456789ab") == UNKNOWN
    assert model_licence("depth_anything@local") == UNKNOWN


def test_cli_classes_and_an_empty_export_with_a_sheet(sideways: dict, tmp_path: Path) -> None:
    job = str(sideways["job_id"])
    bad = run_cli("export", "--format", "coco", "--out", str(tmp_path / "a"), "--classes", "x")
    assert bad.returncode == 2 and "--classes 'x'" in bad.stdout
    assert "Traceback" not in bad.stdout + bad.stderr
    listing = tmp_path / "classes.txt"
    listing.write_text("sofa\n")
    done = run_cli(
        "export", "--format", "hf", "--out", str(tmp_path / "b"), "--job", job, "--classes",
        str(listing),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "left out: 8 objects" in done.stdout
    empty = run_cli(
        "export", "--format", "hf", "--out", str(tmp_path / "c"), "--job", job, "--filter",
        "room_type=kitchen", "--sheet",
    )  # fmt: skip
    assert empty.returncode == 0, empty.stdout + empty.stderr
    assert "no scene matched" in empty.stdout and "Traceback" not in empty.stderr
