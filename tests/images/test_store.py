"""Tests for modomo.images.store."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest

from modomo.images.store import ArtifactStore, image_key, validate_key

SHA = hashlib.sha256(b"hello").hexdigest()  # 2cf24dba...


@pytest.fixture(params=["plain", "file-url"])
def local_store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    base = tmp_path / "artifacts"
    if request.param == "plain":
        return ArtifactStore(str(base))  # a plain path
    return ArtifactStore(base.as_uri())  # file:///abs/path


@pytest.fixture
def memory_store() -> Iterator[ArtifactStore]:
    name = f"modomo-test-{uuid.uuid4().hex}"
    store = ArtifactStore(f"memory://{name}")
    yield store
    fs = fsspec.filesystem("memory")
    if fs.exists(f"/{name}"):
        fs.rm(f"/{name}", recursive=True)


def all_files(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())


def test_local_put_get_exists_delete(local_store: ArtifactStore, tmp_path: Path) -> None:
    key = image_key(SHA, "JPEG")
    assert not local_store.exists(key)

    assert local_store.put_bytes(key, b"jpeg bytes") == key

    assert local_store.exists(key)
    assert local_store.get_bytes(key) == b"jpeg bytes"
    path = tmp_path / "artifacts" / key
    assert path.read_bytes() == b"jpeg bytes"
    assert local_store.url(key) == str(path)

    local_store.delete(key)
    assert not local_store.exists(key)
    assert not path.exists()
    local_store.delete(key)  # deleting a missing key is a no-op


def test_put_is_idempotent_and_overwrites(local_store: ArtifactStore, tmp_path: Path) -> None:
    local_store.put_bytes("exports/run-1/data.json", b"{}")
    local_store.put_bytes("exports/run-1/data.json", b"{}")
    assert local_store.get_bytes("exports/run-1/data.json") == b"{}"
    local_store.put_bytes("exports/run-1/data.json", b'{"v": 2}')
    assert local_store.get_bytes("exports/run-1/data.json") == b'{"v": 2}'
    assert all_files(tmp_path / "artifacts") == ["exports/run-1/data.json"]


def test_atomic_write_leaves_no_temporary_files(local_store: ArtifactStore, tmp_path: Path) -> None:
    for index in range(5):
        local_store.put_bytes(f"masks/{index:02d}/m.png", bytes([index]) * 1000)
    local_store.put_bytes("masks/00/m.png", b"replaced")

    files = all_files(tmp_path / "artifacts")
    assert files == [f"masks/{index:02d}/m.png" for index in range(5)]
    assert not any(name.endswith(".tmp") for name in files)


def test_failed_write_keeps_old_content_and_removes_temp(
    local_store: ArtifactStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local_store.put_bytes("depth/a.npy", b"old")

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk on fire"):
        local_store.put_bytes("depth/a.npy", b"new")
    monkeypatch.undo()

    assert local_store.get_bytes("depth/a.npy") == b"old"
    assert all_files(tmp_path / "artifacts") == ["depth/a.npy"]


def test_written_files_follow_the_umask(local_store: ArtifactStore, tmp_path: Path) -> None:
    local_store.put_bytes("a/b.bin", b"x")
    umask = os.umask(0)
    os.umask(umask)
    mode = (tmp_path / "artifacts" / "a" / "b.bin").stat().st_mode & 0o777
    assert mode == 0o666 & ~umask  # not the 0o600 of a raw temp file


def test_get_missing_names_the_key(local_store: ArtifactStore) -> None:
    with pytest.raises(FileNotFoundError, match=r"artifact not found: 'images/zz/missing\.png'"):
        local_store.get_bytes("images/zz/missing.png")


def test_directory_is_not_an_artifact(local_store: ArtifactStore) -> None:
    local_store.put_bytes("images/ab/x.png", b"x")
    assert not local_store.exists("images/ab")


def test_relative_base_path_is_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = ArtifactStore("relative-store")
    store.put_bytes("k/v.txt", b"v")
    assert store.url("k/v.txt") == str(tmp_path / "relative-store" / "k" / "v.txt")
    assert (tmp_path / "relative-store" / "k" / "v.txt").read_bytes() == b"v"


@pytest.mark.parametrize(
    "key",
    [
        "",  # empty
        "/etc/passwd",  # absolute
        "../outside.txt",  # escapes the base
        "images/../../outside.txt",  # escapes via the middle
        "images/..",  # trailing parent segment
        "./images/a.png",  # '.' segment
        "images//a.png",  # empty segment
        "images/",  # trailing slash (directory)
        "images\\a.png",  # backslash separator
        "images/a\x00.png",  # NUL byte
        "images/a\n.png",  # control character
    ],
)
def test_bad_keys_are_rejected(local_store: ArtifactStore, key: str) -> None:
    with pytest.raises(ValueError):
        validate_key(key)
    with pytest.raises(ValueError):
        local_store.put_bytes(key, b"x")
    with pytest.raises(ValueError):
        local_store.get_bytes(key)
    with pytest.raises(ValueError):
        local_store.exists(key)
    with pytest.raises(ValueError):
        local_store.delete(key)
    with pytest.raises(ValueError):
        local_store.url(key)


def test_non_bytes_data_is_rejected(local_store: ArtifactStore) -> None:
    with pytest.raises(TypeError):
        local_store.put_bytes("a.txt", "text")  # type: ignore[arg-type]
    assert local_store.put_bytes("b.bin", bytearray(b"ok")) == "b.bin"
    assert local_store.get_bytes("b.bin") == b"ok"


def test_memory_store(memory_store: ArtifactStore) -> None:
    key = image_key(SHA, "PNG")
    assert not memory_store.exists(key)
    memory_store.put_bytes(key, b"png bytes")
    memory_store.put_bytes(key, b"png bytes")  # idempotent
    assert memory_store.exists(key)
    assert memory_store.get_bytes(key) == b"png bytes"
    assert memory_store.url(key).startswith("memory://")
    assert memory_store.url(key).endswith(f"/{key}")
    memory_store.delete(key)
    assert not memory_store.exists(key)
    memory_store.delete(key)  # no-op
    with pytest.raises(FileNotFoundError, match="artifact not found"):
        memory_store.get_bytes(key)


def test_empty_base_url_is_rejected() -> None:
    with pytest.raises(ValueError):
        ArtifactStore("")


@pytest.mark.parametrize(
    ("fmt", "extension"),
    [
        ("JPEG", "jpg"),  # JPEG
        ("MPO", "jpg"),  # multi-picture JPEG is still a .jpg
        ("PNG", "png"),  # PNG
        ("GIF", "gif"),  # GIF
        ("WEBP", "webp"),  # WebP
        ("BMP", "bmp"),  # BMP
        ("TIFF", "tif"),  # TIFF uses the short extension
        ("jpeg", "jpg"),  # format names are case-insensitive
    ],
)
def test_image_key(fmt: str, extension: str) -> None:
    assert image_key(SHA, fmt) == f"images/2c/{SHA}.{extension}"
    assert image_key(SHA.upper(), fmt) == f"images/2c/{SHA}.{extension}"  # normalised
    validate_key(image_key(SHA, fmt))


@pytest.mark.parametrize(
    ("digest", "fmt"),
    [
        (SHA[:-1], "PNG"),  # 63 hex digits
        (SHA + "0", "PNG"),  # 65 hex digits
        ("g" * 64, "PNG"),  # not hex
        ("../" + SHA[3:], "PNG"),  # path trickery
        (SHA, "HEIC"),  # unsupported format
        (SHA, ""),  # empty format
    ],
)
def test_image_key_rejects_bad_input(digest: str, fmt: str) -> None:
    with pytest.raises(ValueError):
        image_key(digest, fmt)


@pytest.mark.parametrize("kind", ["local", "memory"])
def test_put_file_and_open_stream_large_artifacts(
    kind: str, local_store: ArtifactStore, memory_store: ArtifactStore, tmp_path: Path
) -> None:
    store = local_store if kind == "local" else memory_store
    data = os.urandom(3 << 20)
    source = tmp_path / "archive.zip"
    source.write_bytes(data)
    assert store.put_file("exports/a/archive.zip", source) == "exports/a/archive.zip"
    with store.open("exports/a/archive.zip") as handle:
        assert handle.read(10) == data[:10]
        assert handle.read() == data[10:]
    if kind == "local":  # atomic: no temporary file left beside it
        assert [p.name for p in (tmp_path / "artifacts" / "exports" / "a").iterdir()] == [
            "archive.zip"
        ]
    with pytest.raises(FileNotFoundError, match="exports/missing.zip"):
        store.open("exports/missing.zip")
