"""Turn the CLI's SOURCE arguments into a list of inputs (files and URLs).

- a folder: every image file below it (by extension), sorted;
- a ``.txt`` / ``.urls`` / ``.lst`` file: one image URL (or path) per line, ``#`` comments;
- an ``http(s)://`` URL: that image;
- any other path: that file, whatever it contains (a bad one fails as its own scene).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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
        source: ``folder`` for local files, ``url`` for fetched images.
        location: an absolute file path or an http(s) URL.
    """

    source: str
    location: str

    @property
    def source_key(self) -> str:
        """The scene's unique key: ``file:/abs/path`` or the URL."""
        return self.location if self.source == "url" else f"file:{self.location}"


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
