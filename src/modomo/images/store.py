"""Artifact store: bytes addressed by relative keys, over any fsspec filesystem.

Images (and later masks, depth maps, exports) are stored under keys such as
``images/ab/abcdef....jpg`` below a base URL: a local directory (``/data/artifacts`` or
``file:///data/artifacts``), an object store (``s3://bucket/prefix``, needs the matching
fsspec backend installed) or ``memory://...`` for tests.

Keys are relative, ``/``-separated paths; absolute keys and ``.``/``..``/empty segments are
rejected with :class:`ValueError` so that a key can never escape the base directory.

Local writes are atomic: data goes to a temporary file in the destination directory, is
fsynced, and is moved into place with :func:`os.replace`, so readers see either the old or
the new complete file, never a partial one. Object stores write whole objects atomically
themselves; other fsspec filesystems get a plain ``pipe_file``.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import uuid
from collections.abc import Iterator
from contextlib import suppress
from datetime import datetime
from typing import Any, BinaryIO, cast

import fsspec
from fsspec.implementations.local import LocalFileSystem

__all__ = ["IMAGE_EXTENSIONS", "ArtifactStore", "image_key", "validate_key"]

#: File extension used for each Pillow format name (see ``modomo.images.loading``).
IMAGE_EXTENSIONS: dict[str, str] = {
    "JPEG": "jpg",
    "PNG": "png",
    "GIF": "gif",
    "WEBP": "webp",
    "BMP": "bmp",
    "TIFF": "tif",
    "MPO": "jpg",
}

_SHA256_RE = re.compile(r"[0-9a-f]{64}")


def image_key(sha256_hex: str, fmt: str) -> str:
    """Content-addressed key for an image file.

    Args:
        sha256_hex: SHA-256 of the file's bytes, 64 hex digits (upper case is accepted and
            lower-cased).
        fmt: Pillow format name (case-insensitive): JPEG, PNG, GIF, WEBP, BMP, TIFF or MPO.

    Returns:
        ``"images/<first two hex digits>/<sha256>.<ext>"``, e.g. ``"images/ab/ab12....jpg"``;
        the extension is ``jpg`` for JPEG and MPO, ``tif`` for TIFF, else the lower-case
        format name.

    Raises:
        ValueError: ``sha256_hex`` is not 64 hex digits, or ``fmt`` is not a supported format.
    """
    digest = sha256_hex.lower() if isinstance(sha256_hex, str) else ""
    if not _SHA256_RE.fullmatch(digest):
        raise ValueError(f"not a SHA-256 hex digest: {sha256_hex!r}")
    ext = IMAGE_EXTENSIONS.get(fmt.upper() if isinstance(fmt, str) else "")
    if ext is None:
        raise ValueError(
            f"unsupported image format {fmt!r} (expected one of {', '.join(IMAGE_EXTENSIONS)})"
        )
    return f"images/{digest[:2]}/{digest}.{ext}"


def validate_key(key: str) -> str:
    """Return ``key`` if it is a safe relative ``/``-separated path, else raise ValueError.

    Rejected: non-strings, empty keys, absolute keys (leading ``/``), backslashes, control
    characters, and empty, ``.`` or ``..`` segments (so also trailing ``/`` and ``a//b``).
    """
    if not isinstance(key, str) or not key:
        raise ValueError(f"artifact key must be a non-empty string, got {key!r}")
    if key.startswith("/"):
        raise ValueError(f"artifact key must be relative, got {key!r}")
    if "\\" in key or any(ord(ch) < 32 or ord(ch) == 127 for ch in key):
        raise ValueError(f"artifact key contains a backslash or control character: {key!r}")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise ValueError(f"artifact key has an empty, '.' or '..' segment: {key!r}")
    return key


class ArtifactStore:
    """Bytes stored under relative keys below an fsspec base URL.

    Args:
        base_url: A local directory (plain path, relative paths are made absolute, or
            ``file:///abs/path``) or any fsspec URL (``s3://bucket/prefix``,
            ``memory://name``). Nothing is created until the first write.

    Attributes:
        base_url: The URL as given.
        fs: The fsspec filesystem.
        root: The base path within ``fs`` (no trailing ``/``).
    """

    def __init__(self, base_url: str) -> None:
        if not isinstance(base_url, str) or not base_url.strip():
            raise ValueError(f"base_url must be a non-empty string, got {base_url!r}")
        self.base_url = base_url
        fs, root = fsspec.core.url_to_fs(base_url)
        self.fs: fsspec.AbstractFileSystem = fs
        self.root: str = root.rstrip("/")
        self._local = isinstance(fs, LocalFileSystem)

    def __repr__(self) -> str:
        return f"ArtifactStore({self.base_url!r})"

    def _path(self, key: str) -> str:
        return f"{self.root}/{validate_key(key)}"

    def put_bytes(self, key: str, data: bytes | bytearray | memoryview) -> str:
        """Store ``data`` under ``key``, replacing any previous content.

        Idempotent: storing the same bytes again leaves the same state. Atomic on local
        filesystems (temporary file + fsync + :func:`os.replace`).

        Args:
            key: Relative ``/``-separated key, e.g. from :func:`image_key`.
            data: The bytes to store.

        Returns:
            ``key``.

        Raises:
            ValueError: ``key`` is not a safe relative key.
            TypeError: ``data`` is not bytes-like.
            OSError: The filesystem failed.
        """
        path = self._path(key)
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"data must be bytes, not {type(data).__name__}")
        if self._local:
            _atomic_write_local(path, bytes(data))
        else:
            try:
                self.fs.pipe_file(path, bytes(data))
            except FileNotFoundError:  # filesystems with real directories
                self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
                self.fs.pipe_file(path, bytes(data))
        return key

    def put_file(self, key: str, local_path: str | os.PathLike[str]) -> str:
        """Store a local file under ``key`` without reading it into memory (large exports).

        Atomic on local filesystems (copy to a temporary file, then :func:`os.replace`).

        Returns:
            ``key``.

        Raises:
            ValueError: ``key`` is not a safe relative key.
            OSError: reading the file or the filesystem failed.
        """
        path = self._path(key)
        if self._local:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            temporary = f"{path}.{uuid.uuid4().hex}.tmp"
            try:
                shutil.copyfile(local_path, temporary)
                os.replace(temporary, path)
            finally:
                with suppress(FileNotFoundError):
                    os.unlink(temporary)
        else:
            self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            self.fs.put_file(os.fspath(local_path), path)
        return key

    def open(self, key: str) -> BinaryIO:
        """A binary file object reading what is stored under ``key`` (close it after use).

        Raises:
            ValueError: ``key`` is not a safe relative key.
            FileNotFoundError: Nothing is stored under ``key``.
        """
        path = self._path(key)
        if not self.fs.isfile(path):
            raise FileNotFoundError(f"artifact not found: {key!r} (looked in {self.url(key)})")
        return cast(BinaryIO, self.fs.open(path, "rb"))

    def get_bytes(self, key: str) -> bytes:
        """Return the bytes stored under ``key``.

        Raises:
            ValueError: ``key`` is not a safe relative key.
            FileNotFoundError: Nothing is stored under ``key`` (the message names the key).
        """
        path = self._path(key)
        try:
            return bytes(self.fs.cat_file(path))
        except FileNotFoundError as exc:
            message = f"artifact not found: {key!r} (looked in {self.url(key)})"
            raise FileNotFoundError(message) from exc

    def iter_keys(self, prefix: str) -> Iterator[tuple[str, float]]:
        """Every artifact under ``prefix`` (a top-level folder such as ``images``), as
        ``(key, last modified in seconds since the epoch)``; 0.0 where the filesystem does
        not say. Temporary files of writes in progress are not listed.

        Raises:
            ValueError: ``prefix`` is not a safe relative key.
        """
        base = self._path(prefix)
        if not self.fs.isdir(base):
            return
        for path, info in self.fs.find(base, detail=True).items():
            key = path[len(self.root) + 1 :] if path.startswith(self.root + "/") else path
            if key.endswith(".tmp") or info.get("type") != "file":
                continue
            yield key, _modified(info)

    def exists(self, key: str) -> bool:
        """Whether a file is stored under ``key`` (directories do not count).

        Raises:
            ValueError: ``key`` is not a safe relative key.
        """
        return bool(self.fs.isfile(self._path(key)))

    def delete(self, key: str) -> None:
        """Delete the file stored under ``key``; deleting a missing key is a no-op.

        Raises:
            ValueError: ``key`` is not a safe relative key.
        """
        path = self._path(key)
        with suppress(FileNotFoundError):
            self.fs.rm_file(path)

    def url(self, key: str) -> str:
        """Where ``key`` lives, for users: a local filesystem path or a full fsspec URL.

        Raises:
            ValueError: ``key`` is not a safe relative key.
        """
        path = self._path(key)
        if self._local:
            return os.path.normpath(path)
        return str(self.fs.unstrip_protocol(path))


def _modified(info: dict[str, Any]) -> float:
    """Last-modified time of an fsspec ``info`` entry (local ``mtime``, memory ``created``,
    S3 ``LastModified``), in seconds since the epoch; 0.0 when absent."""
    for name in ("mtime", "LastModified", "last_modified", "created"):
        value = info.get(name)
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, datetime):
            return value.timestamp()
    return 0.0


def _atomic_write_local(path: str, data: bytes) -> None:
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(8)}.tmp")
    # 0o666 filtered by the umask, like a normally created file (mkstemp would give 0o600).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: str) -> None:
    """Persist the rename itself (best effort; not possible on every platform)."""
    if not hasattr(os, "O_DIRECTORY"):  # pragma: no cover - Windows
        return
    with suppress(OSError):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
