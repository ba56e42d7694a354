"""The Hugging Face source without services: opening local datasets in every format, finding
the image column, rows to inputs, JSON-safe metadata. Datasets are built here, no network."""

from __future__ import annotations

import datetime
import decimal
import hashlib
import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from modomo.sources.huggingface import (
    BUILDER_NAMES,
    DatasetError,
    DatasetSlice,
    ImageColumn,
    check_dataset,
    chunks,
    find_image_column,
    json_safe,
    open_dataset,
    row_input,
    scene_key,
)
from tests.support import encode, noise_image

datasets = pytest.importorskip("datasets")

ROWS = 10


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Streaming a local dataset leaves lock files in the datasets cache: keep them in the
    # test's folder (the library read HF_HOME when it was imported, so patch its config).
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")


@pytest.fixture(autouse=True)
def _import_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # local datasets are opened only under MODOMO_IMPORT_ROOTS: the test's folder
    from modomo.config import get_settings

    monkeypatch.setenv("MODOMO_IMPORT_ROOTS", str(tmp_path))
    get_settings.cache_clear()
    yield
    monkeypatch.delenv("MODOMO_IMPORT_ROOTS")
    get_settings.cache_clear()


def image_bytes(index: int) -> bytes:
    fmt = "JPEG" if index % 2 else "PNG"
    return encode(noise_image(f"hf-unit-{index}"), fmt)


def build(tmp_path: Path) -> dict[str, Path]:
    """One dataset (an ``Image`` column named ``photo``, a class label, a caption, a float
    with a NaN) saved as a DatasetDict, a single Dataset, a Parquet file and a Parquet folder."""
    features = datasets.Features(
        {
            "photo": datasets.Image(),
            "caption": datasets.Value("string"),
            "room": datasets.ClassLabel(names=["bedroom", "kitchen"]),
            "score": datasets.Value("float64"),
        }
    )
    table = datasets.Dataset.from_dict(
        {
            "photo": [{"bytes": image_bytes(i), "path": f"img{i}.jpg"} for i in range(ROWS)],
            "caption": [f"room {i}" for i in range(ROWS)],
            "room": [i % 2 for i in range(ROWS)],
            "score": [float("nan") if i == 4 else i / 10 for i in range(ROWS)],
        },
        features=features,
    )
    paths = {
        "dict": tmp_path / "dict",
        "single": tmp_path / "single",
        "parquet_file": tmp_path / "file.parquet",
        "parquet_folder": tmp_path / "pq",
    }
    datasets.DatasetDict({"train": table}).save_to_disk(str(paths["dict"]))
    table.save_to_disk(str(paths["single"]))
    table.to_parquet(str(paths["parquet_file"]))
    paths["parquet_folder"].mkdir()
    table.to_parquet(str(paths["parquet_folder"] / "train-00000.parquet"))
    return paths


def rows_of(source: DatasetSlice, size: int = 3) -> Iterator:
    for chunk in chunks(source, size):
        yield from chunk


@pytest.mark.parametrize("kind", ["dict", "single", "parquet_file", "parquet_folder"])
def test_each_local_format_streams_the_same_slice_with_original_bytes(
    tmp_path: Path, kind: str
) -> None:
    path = build(tmp_path)[kind]
    source = open_dataset(str(path), "train", offset=3, limit=4)
    assert source.column == ImageColumn("photo", "image")
    assert source.columns == ["photo", "caption", "room", "score"]
    rows = list(rows_of(source))
    assert [r.index for r in rows] == [3, 4, 5, 6]
    assert [r.input.key for r in rows] == [scene_key(str(path), "train", i) for i in range(3, 7)]
    # the cell's own bytes, not a decoded and re-encoded image
    assert [r.input.data for r in rows] == [image_bytes(i) for i in range(3, 7)]
    meta = rows[1].input.metadata
    assert meta == {
        "dataset": str(path),
        "split": "train",
        "index": 4,
        "image_column": "photo",
        "image_path": "img4.jpg",
        "fields": {"caption": "room 4", "room": "bedroom", "score": None},
    }
    json.dumps(meta, allow_nan=False)


def test_slice_past_the_end_is_short_or_empty(tmp_path: Path) -> None:
    paths = build(tmp_path)
    for kind in ("dict", "parquet_file"):
        assert [r.index for r in rows_of(open_dataset(str(paths[kind]), offset=8))] == [8, 9]
        assert list(rows_of(open_dataset(str(paths[kind]), offset=50))) == []


def test_missing_split_and_path_fail_with_the_reason(tmp_path: Path) -> None:
    paths = build(tmp_path)
    with pytest.raises(DatasetError, match="no split 'test'; splits: train"):
        open_dataset(str(paths["dict"]), "test")
    with pytest.raises(DatasetError, match="Bad split: test"):
        open_dataset(str(paths["parquet_folder"]), "test")
    with pytest.raises(DatasetError, match="not a data file"):
        (tmp_path / "notes.txt").write_text("hello")
        open_dataset(str(tmp_path / "notes.txt"))


def test_a_hub_id_never_reads_a_local_folder_of_that_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "owner").mkdir()
    build(tmp_path / "owner")  # tmp_path/owner/dict is a readable dataset …
    monkeypatch.chdir(tmp_path)  # … and "owner/dict" names it relative to the working folder
    with pytest.raises(DatasetError, match="relative to the worker's folder"):
        open_dataset("owner/dict")
    with pytest.raises(DatasetError, match="no such file or folder"):
        open_dataset(str(tmp_path / "nowhere"))


def test_builder_names_cover_the_packaged_builders_of_datasets() -> None:
    from datasets.packaged_modules import _PACKAGED_DATASETS_MODULES

    assert set(_PACKAGED_DATASETS_MODULES) <= BUILDER_NAMES


@pytest.mark.parametrize(
    ("dataset", "reason"),
    [
        ("parquet", "'parquet' is a datasets builder name"),
        ("csv", "'csv' is a datasets builder name"),
        ("Imagefolder", "is a datasets builder name"),
        ("text", "is a datasets builder name"),
        ("dict", "not a Hugging Face dataset id"),
        ("./dict", "not a Hugging Face dataset id"),
        ("../x/y", "not a Hugging Face dataset id"),
        ("owner/na..me", "not a Hugging Face dataset id"),
        ("/etc", "not under an import root"),
        ("{tmp}/../outside", "not under an import root"),
        ("{tmp}/link", "leads out of the import roots"),
    ],
)
def test_builder_names_and_paths_outside_the_roots_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dataset: str, reason: str
) -> None:
    build(tmp_path)
    (tmp_path / "link").symlink_to(tmp_path.parent)  # a link inside the root leading out
    monkeypatch.chdir(tmp_path)  # where "load_dataset('parquet')" would find file.parquet
    with pytest.raises(DatasetError, match=reason) as refused:
        open_dataset(dataset.format(tmp=tmp_path))
    assert "\n" not in str(refused.value)


def test_check_dataset_alone_needs_no_file_system(tmp_path: Path) -> None:
    assert check_dataset("owner/name", []) is None
    assert check_dataset(f"{tmp_path}/a/../b", [tmp_path]) == tmp_path / "b"
    with pytest.raises(DatasetError, match="no MODOMO_IMPORT_ROOTS"):
        check_dataset(str(tmp_path / "b"), [])


def test_rows_of_a_local_dataset_read_files_only_in_its_folder_and_the_roots(
    tmp_path: Path,
) -> None:
    column = ImageColumn("image_path", "reference")
    local = DatasetSlice(
        str(tmp_path / "ds"),
        "train",
        0,
        10,
        column,
        [column.name],
        rows=[],
        root=tmp_path / "ds",
        roots=(tmp_path,),
    )
    inside = row_input(local, 0, {"image_path": str(tmp_path / "other" / "a.jpg")})
    assert inside.input.location == str(tmp_path / "other" / "a.jpg")
    for location in ("/etc/hosts", "../../../etc/hosts"):
        row = row_input(local, 1, {"image_path": location})
        assert "etc" not in row.input.location and "is not read" in (row.input.error or "")


def test_no_image_column_names_the_columns(tmp_path: Path) -> None:
    table = datasets.Dataset.from_dict({"caption": ["a", "b"], "score": [1.0, 2.0]})
    table.save_to_disk(str(tmp_path / "plain"))
    with pytest.raises(DatasetError, match=r"no image column .*; columns: caption, score$"):
        open_dataset(str(tmp_path / "plain"))


def test_image_column_by_feature_type_then_by_name() -> None:
    string = datasets.Value("string")
    both = datasets.Features({"url": string, "picture": datasets.Image()})
    assert find_image_column(both) == ImageColumn("picture", "image")
    two = datasets.Features({"mask": datasets.Image(), "image": datasets.Image()})
    assert find_image_column(two) == ImageColumn("image", "image")
    refs = datasets.Features({"File_Name": string, "Image_URL": string, "n": string})
    assert find_image_column(refs) == ImageColumn("Image_URL", "reference")
    assert find_image_column(datasets.Features({"url": datasets.Value("int64")})) is None
    # no schema: the first row's values decide
    pil = PILImage.new("RGB", (4, 4))
    assert find_image_column(None, {"x": 1, "pic": pil}) == ImageColumn("pic", "image")
    assert find_image_column(None, {"path": "a.jpg"}) == ImageColumn("path", "reference")


def hub_slice(column: ImageColumn, root: Path | None = None) -> DatasetSlice:
    return DatasetSlice("owner/name", "train", 0, 10, column, [column.name], rows=[], root=root)


def test_pil_image_cell_is_stored_as_png() -> None:
    pixels = noise_image("pil-cell", (20, 30))
    row = row_input(
        hub_slice(ImageColumn("image", "image")), 7, {"image": PILImage.fromarray(pixels)}
    )
    assert row.input.error is None and row.input.data is not None
    with PILImage.open(io.BytesIO(row.input.data)) as stored:
        assert stored.format == "PNG"
        assert np.array_equal(np.asarray(stored.convert("RGB")), pixels)
    assert row.input.key == "hf:owner/name:train:7"
    cmyk = PILImage.fromarray(pixels).convert("CMYK")
    assert (
        row_input(hub_slice(ImageColumn("image", "image")), 8, {"image": cmyk}).input.error is None
    )


def test_reference_cells_become_urls_or_absolute_paths(tmp_path: Path) -> None:
    column = ImageColumn("image_path", "reference")
    local = hub_slice(column, root=tmp_path)
    row = row_input(local, 0, {"image_path": "sub/a.jpg"})
    assert row.input.location == str(tmp_path / "sub" / "a.jpg") and row.input.error is None
    url = "http://127.0.0.1:9/a.jpg"
    assert row_input(local, 1, {"image_path": url}).input.is_url
    # a dataset from the hub cannot make the worker read its own files
    hub = hub_slice(column)
    assert "local path is not read" in (
        row_input(hub, 2, {"image_path": "/etc/hosts"}).input.error or ""
    )
    assert "unsupported image location" in (
        row_input(hub, 3, {"image_path": "ftp://example.org/a.jpg"}).input.error or ""
    )
    assert "has no image" in (row_input(hub, 4, {"image_path": None}).input.error or "")
    assert row_input(hub, 5, {"image_path": "hf://datasets/o/n/a.jpg"}).hub_path


def test_metadata_is_json_safe() -> None:
    label = datasets.ClassLabel(names=["bedroom", "kitchen"])
    values = {
        "n": np.int64(3),
        "vec": np.array([0.5, np.nan], dtype=np.float32),
        "when": datetime.datetime(2024, 5, 1, 12, 30),
        "day": datetime.date(2024, 5, 1),
        "span": datetime.timedelta(seconds=90),
        "price": decimal.Decimal("12.30"),
        "text": "a\x00b",
        "raw": b"\x89PNG",
        "inf": float("inf"),
        "nested": {"k\x00": [1, (2, 3)], "blob": b"x"},
        "cell": {"bytes": b"...", "path": "a.png"},
    }
    safe = {k: json_safe(v) for k, v in values.items()}
    assert safe["n"] == 3 and safe["vec"] == [0.5, None]
    assert safe["when"] == "2024-05-01T12:30:00" and safe["day"] == "2024-05-01"
    assert safe["span"] == 90.0 and safe["price"] == "12.30" and safe["text"] == "ab"
    assert safe["inf"] is None and safe["nested"] == {"k": [1, [2, 3]]}
    assert safe["cell"] == {"path": "a.png"}
    assert json_safe(1, label) == "kitchen" and json_safe(-1, label) is None
    assert json_safe([0, 1], datasets.List(label)) == ["bedroom", "kitchen"]
    # bytes are left out of a row's fields altogether
    row = row_input(
        hub_slice(ImageColumn("image", "image")),
        0,
        {"image": {"bytes": b"x", "path": None}, **values, "style": " Modern "},
    )
    fields = (row.input.metadata or {})["fields"]
    assert "raw" not in fields and fields["n"] == 3
    assert row.input.style == "Modern"
    json.dumps(row.input.metadata, allow_nan=False)
    assert hashlib.sha256(row.input.data or b"").hexdigest() == hashlib.sha256(b"x").hexdigest()


def test_saved_dataset_rows_cross_read_batches_once_each(tmp_path: Path) -> None:
    table = datasets.Dataset.from_dict(
        {"image": [{"bytes": bytes([i]), "path": None} for i in range(70)]},
        features=datasets.Features({"image": datasets.Image()}),
    )
    table.save_to_disk(str(tmp_path / "many"))
    rows = list(rows_of(open_dataset(str(tmp_path / "many"), offset=5, limit=60), size=7))
    assert [r.index for r in rows] == list(range(5, 65))
    assert [r.input.data for r in rows] == [bytes([i]) for i in range(5, 65)]
