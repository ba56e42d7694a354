"""Turn the CLI's SOURCE arguments into a list of inputs (files and URLs).

- a folder: every image file below it (by extension), sorted;
- a ``.txt`` / ``.urls`` / ``.lst`` file: one image URL (or path) per line, ``#`` comments;
- an ``http(s)://`` URL: that image;
- any other path: that file, whatever it contains (a bad one fails as its own scene).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["IMAGE_SUFFIXES", "Input", "SourceError", "expand_sources"]

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff", ".mpo"}
)
LIST_SUFFIXES = frozenset({".txt", ".urls", ".lst"})


class SourceError(ValueError):
    """A SOURCE argument that names nothing usable (missing path, empty folder)."""


@dataclass(frozen=True)
class Input:
    """One image to ingest.

    Attributes:
        source: where it comes from: ``folder`` (local files), ``url``, ``houzz``, ``hf``.
        location: an absolute file path or an http(s) URL to read the image from; for an
            image handed over as bytes, a description of where they came from.
        key: the scene's unique key when the source has one (``houzz:{photo id}``,
            ``hf:{dataset}:{split}:{index}``); default ``file:/abs/path`` or the URL.
        data: the encoded image itself (e.g. a dataset's ``Image`` cell); nothing is read.
        metadata: JSON-safe facts from the source, stored in ``scenes.metadata``.
        room_type: the room type the source states (``scenes.room_type``), if any.
        style: the style the source states (``scenes.style``), if any.
        error: why the image could not be had, when the source already knows (a fetch it
            made failed): ingest records the failed scene with this reason.
    """

    source: str
    location: str
    key: str | None = None
    data: bytes | None = field(default=None, repr=False, compare=False)
    metadata: Mapping[str, Any] | None = field(default=None, compare=False)
    room_type: str | None = field(default=None, compare=False)
    style: str | None = field(default=None, compare=False)
    error: str | None = field(default=None, compare=False)

    @property
    def source_key(self) -> str:
        """The scene's unique key: ``key``, else ``file:/abs/path`` or the URL."""
        if self.key:
            return self.key
        return self.location if _is_url(self.location) else f"file:{self.location}"

    @property
    def is_url(self) -> bool:
        """True when ``location`` is an http(s) URL (the image's, fetched here or by the
        source)."""
        return _is_url(self.location)


def _is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def _from_line(line: str, base: Path) -> Input:
    if _is_url(line):
        return Input("url", line)
    path = Path(line).expanduser()
    return Input("folder", str((base / path).resolve() if not path.is_absolute() else path))


def expand_sources(sources: list[str]) -> list[Input]:
    """Expand SOURCE arguments into inputs, in order, without duplicates.

    Raises:
        SourceError: a path does not exist, or a folder holds no image files.
    """
    inputs: list[Input] = []
    for source in sources:
        if _is_url(source):
            inputs.append(Input("url", source))
            continue
        path = Path(source).expanduser().resolve()
        if path.is_dir():
            files = sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
            if not files:
                raise SourceError(f"{source}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
            inputs.extend(Input("folder", str(p)) for p in files)
        elif path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
            inputs.extend(
                _from_line(line.strip(), path.parent)
                for line in lines
                if line.strip() and not line.lstrip().startswith("#")
            )
        elif path.is_file():
            inputs.append(Input("folder", str(path)))
        else:
            raise SourceError(f"{source}: no such file or folder")
    return list(dict.fromkeys(inputs))
