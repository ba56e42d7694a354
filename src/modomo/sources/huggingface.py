"""Hugging Face datasets as a source: open a slice of a dataset as a stream of rows, turn each
row into an :class:`~modomo.sources.inputs.Input`, and ingest the rows chunk by chunk.

Where a dataset comes from (:func:`open_dataset`, checked by :func:`check_dataset`):

- a hub id (``owner/name``), streamed with ``load_dataset(…, streaming=True)``; a name that
  is also a path relative to the worker's folder is refused (``load_dataset`` would read
  it). ``HF_HUB_OFFLINE=1`` is honoured by the libraries themselves: offline, a hub id they
  cannot resolve from their caches fails the import up front with their reason;
- an absolute path on the worker under one of ``MODOMO_IMPORT_ROOTS`` (none by default), the
  symbolic links in it resolved: a ``save_to_disk`` folder (it holds ``dataset_dict.json``
  or ``state.json``), a folder ``datasets.load_dataset`` can read (Parquet, CSV, JSON, an
  image folder …), or one data file (``.parquet``, ``.csv``, ``.json``, ``.jsonl``,
  ``.arrow``).

Anything else is refused before ``datasets`` sees it: a ``datasets`` builder name
(``parquet``, ``csv``, ``imagefolder`` …: ``load_dataset("parquet")`` reads every matching
file under the worker's working folder), a single-word name, a relative path, a path outside
the roots. The API validates the same rule (422), and the worker checks it again, so a task
message naming a builder or a path outside the roots fails its job with the reason. Files
that rows of a local dataset name are read only inside the dataset's folder or the roots.

Rows are streamed end to end (``skip(offset).take(limit)``; a ``save_to_disk`` dataset is
sliced, then read in record batches from its memory-mapped Arrow files): memory does not grow
with the number of rows. ``datasets`` is imported only when an import runs (it takes a second
or two). Its streams (``IterableDataset``) import torch when torch is installed (some 500 MiB
of resident memory in the worker); ``USE_TORCH=0`` in an import worker's environment stops
that, and ``save_to_disk`` datasets never need it.

The image column is found by its feature type (``datasets.Image``; the first one, or the one
named ``image``), else by name among string columns (:data:`REFERENCE_COLUMNS`: a URL or a
path), else the dataset is refused with the columns it has. ``Image`` cells are read undecoded
(``Image(decode=False)``: the original file bytes, stored as they are, never re-encoded); a
cell that holds a PIL image (a dataset with no schema) is encoded as PNG.

Scene keys are ``hf:{name}:{split}:{index}`` (``index``: the row's position in the split).
``name`` is the hub id as given, or for a local dataset its resolved absolute path: stable
across re-imports of the same path, and two local datasets in different folders never share
keys (the folder name alone could). A dataset moved to another folder gets new keys, but its
images are stored by content hash, so re-importing it makes no new scenes.

Every other column goes to ``scenes.metadata`` as JSON-safe values (:func:`json_safe`)::

    {"dataset": name, "split": split, "index": 12, "image_column": "image",
     "image_path": "0012.jpg", "fields": {"caption": "…", "label": "bedroom", …}}

(``fields`` keeps the dataset's own names apart from ours and from ingest's ``format`` and
``bytes``.) Class labels are stored by name; string columns ``room_type`` and ``style`` also
set the scene's room type and style.
"""

from __future__ import annotations

import datetime
import decimal
import io
import itertools
import math
import os
import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from modomo.sources.ingest import existing_keys, ingest
from modomo.sources.inputs import Input

if TYPE_CHECKING:
    from datasets import Dataset, IterableDataset

__all__ = [
    "REFERENCE_COLUMNS",
    "BUILDER_NAMES",
    "HUB_ID",
    "SOURCE",
    "DatasetError",
    "DatasetSlice",
    "ImageColumn",
    "ImportReport",
    "Row",
    "check_dataset",
    "chunks",
    "find_image_column",
    "import_rows",
    "json_safe",
    "open_dataset",
    "row_input",
    "scene_key",
]

SOURCE = "hf"
"""``scenes.source`` of imported rows."""

REFERENCE_COLUMNS = (
    "image_url",
    "img_url",
    "url",
    "image_uri",
    "uri",
    "image_path",
    "img_path",
    "image_file",
    "file_path",
    "filepath",
    "file_name",
    "filename",
    "path",
    "file",
    "image",
    "img",
    "link",
)
"""String columns that may hold an image's URL or path, in the order they are preferred
(names compared case-insensitively)."""

SAVED_MARKERS = ("dataset_dict.json", "state.json")
"""Files ``save_to_disk`` writes at the top of its folder (a DatasetDict, a Dataset)."""

FILE_BUILDERS = {
    ".parquet": "parquet",
    ".csv": "csv",
    ".json": "json",
    ".jsonl": "json",
    ".arrow": "arrow",
}
"""Single data files by suffix -> the ``datasets`` builder that reads them."""

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")
"""A hub dataset id: ``owner/name`` (the hub's own character set)."""

BUILDER_NAMES = frozenset(
    {
        "arrow",
        "audiofolder",
        "cache",
        "conll",
        "csv",
        "eval",
        "fasta",
        "fastq",
        "folder_based_builder",
        "genbank",
        "generator",
        "harbor",
        "hdf5",
        "iceberg",
        "imagefolder",
        "json",
        "lance",
        "meshfolder",
        "mmcif",
        "niftifolder",
        "pandas",
        "parquet",
        "pdb",
        "pdffolder",
        "spark",
        "sql",
        "text",
        "tsfile",
        "videofolder",
        "vortex",
        "webdataset",
        "xml",
    }
)
"""``datasets``' packaged builders (``datasets.packaged_modules``, as of 5.2, and earlier
ones): given as a dataset name, ``load_dataset`` reads local files with them. Never a hub
id (those are ``owner/name``); named so the refusal says what they are."""

HUB_READ_THREADS = 8
"""Hub files (``hf://`` paths of undecoded ``Image`` cells) read at once per chunk."""


class DatasetError(ValueError):
    """A dataset that cannot be imported: it cannot be found or loaded, has no such split, or
    has no image column. The message is the reason, meant for the job record."""


@dataclass(frozen=True)
class ImageColumn:
    """The column the images come from.

    Attributes:
        name: the column's name.
        kind: ``image`` (a ``datasets.Image`` feature, or cells holding images) or
            ``reference`` (strings: an http(s) URL or a file path per row).
    """

    name: str
    kind: str


@dataclass
class DatasetSlice:
    """Rows ``start`` to ``start + limit`` of one split of a dataset, streamed.

    Attributes:
        name: the dataset's name in scene keys (hub id, or resolved local path).
        split: the split's name as asked for.
        start: the index of the first row in ``rows``.
        limit: rows asked for (``rows`` may end sooner, with the split).
        column: where the images are.
        columns: every column of the dataset, in order.
        rows: the rows, as dicts of column -> value.
        root: the folder relative paths resolve against; None for a hub dataset, whose
            local paths are never read (a dataset on the hub cannot name the worker's files).
        features: the dataset's features (column -> ``datasets`` feature), when known.
        roots: the import roots (``MODOMO_IMPORT_ROOTS``): besides ``root``, the folders a
            local dataset's rows may name files in.
    """

    name: str
    split: str
    start: int
    limit: int
    column: ImageColumn
    columns: list[str]
    rows: Any = field(repr=False)
    root: Path | None = None
    features: Mapping[str, Any] | None = field(default=None, repr=False)
    roots: tuple[Path, ...] = ()


@dataclass(frozen=True)
class Row:
    """One dataset row as something to ingest.

    Attributes:
        index: the row's position in the split.
        input: what ingest reads (its ``key`` is the scene key). Its ``error`` says why a
            row has no usable image (an empty cell, a location that is not read): ingest
            then records the row as failed with that reason.
        hub_path: an ``hf://`` file still to be read into ``input.data``
            (see :func:`read_hub_files`).
    """

    index: int
    input: Input
    hub_path: str | None = None


def scene_key(name: str, split: str, index: int) -> str:
    """The scene key of a dataset row: ``hf:{name}:{split}:{index}``."""
    return f"{SOURCE}:{name}:{split}:{index}"


# --- opening a dataset -------------------------------------------------------------------


def _under(path: Path, roots: Sequence[Path]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


def check_dataset(dataset: str, roots: Sequence[Path]) -> Path | None:
    """Check what a dataset name may be, without touching the file system: a hub id
    (``owner/name``; returns None) or an absolute path under one of ``roots`` (returns the
    path, normalised). Both the API and the worker apply it (the worker then resolves the
    path's links and checks again: :func:`open_dataset`).

    Raises:
        DatasetError: a ``datasets`` builder name, a path outside ``roots`` (every path when
            there are none), or anything else that is not ``owner/name``. One line.
    """
    if dataset.lower() in BUILDER_NAMES:
        raise DatasetError(
            f"{dataset!r} is a datasets builder name, not a dataset: give a hub id ('owner/name')"
        )
    if dataset.startswith(("/", "~")):
        path = Path(os.path.normpath(Path(dataset).expanduser()))
        if not roots:
            raise DatasetError(
                "local datasets are not imported here: no MODOMO_IMPORT_ROOTS; "
                "give a hub id ('owner/name')"
            )
        if not _under(path, roots):
            raise DatasetError(f"{dataset}: not under an import root (MODOMO_IMPORT_ROOTS)")
        return path
    if not HUB_ID.match(dataset) or ".." in dataset:
        raise DatasetError(
            f"{dataset!r} is not a Hugging Face dataset id (expected 'owner/name')"
            + (" or an absolute path under an import root" if roots else "")
        )
    return None


def _local_path(dataset: str, roots: Sequence[Path]) -> Path | None:
    """The dataset's folder or file when ``dataset`` is a path under an import root; None
    for a hub id.

    Raises:
        DatasetError: see :func:`check_dataset`; also a path that does not exist or whose
            links lead out of the roots, and a hub id that is a path relative to the
            worker's folder (``load_dataset`` would read that local folder instead of the
            hub, so a request could make the worker import its own files).
    """
    path = check_dataset(dataset, roots)
    if path is not None:
        if not path.exists():
            raise DatasetError(f"{dataset}: no such file or folder on the worker")
        resolved = path.resolve()
        if not _under(resolved, [root.resolve() for root in roots]):
            raise DatasetError(f"{dataset}: leads out of the import roots (MODOMO_IMPORT_ROOTS)")
        return resolved
    if Path(dataset).exists():
        raise DatasetError(
            f"{dataset!r} names a path relative to the worker's folder, not a hub dataset; "
            "give a local dataset as an absolute path under an import root"
        )
    return None


def open_dataset(
    dataset: str,
    split: str = "train",
    offset: int = 0,
    limit: int = 100,
    *,
    roots: Sequence[Path] | None = None,
) -> DatasetSlice:
    """Open rows ``offset`` to ``offset + limit`` of ``split`` of a dataset, streamed.

    Args:
        dataset: a hub id (``owner/name``) or an absolute local path under an import root
            (``save_to_disk`` folder, data folder or file).
        split: the split; a ``save_to_disk`` of a single ``Dataset`` is that split itself.
        offset: index of the first row.
        limit: rows at most.
        roots: the folders local datasets may lie in (default: ``MODOMO_IMPORT_ROOTS``).

    Raises:
        DatasetError: the dataset name is refused (:func:`check_dataset`), or the dataset
            cannot be found or loaded (the library's reason, e.g. a hub id that is not
            cached while ``HF_HUB_OFFLINE=1``), has no such split, or has no image column
            (the message names the columns it has).
    """
    if offset < 0 or limit < 0:
        raise DatasetError(f"offset and limit must not be negative (got {offset}, {limit})")
    if roots is None:
        from modomo.config import get_settings

        roots = get_settings().import_roots
    local = _local_path(dataset, roots)
    name = str(local) if local is not None else dataset
    try:
        if local is not None and local.is_dir() and _is_saved(local):
            rows: _Rows = _SavedRows(_saved_split(local, split), offset, limit)
        else:
            rows = _StreamedRows(_stream(dataset, local, split).skip(offset).take(limit))
        features = rows.features
        first = None if features is not None else next(iter(rows.first()), None)
    except DatasetError:
        raise
    except Exception as exc:  # the library's own reason is the best one for the job record
        raise DatasetError(
            f"cannot load dataset {dataset!r} (split {split!r}): {type(exc).__name__}: {exc}"
        ) from exc
    columns = list(features) if features is not None else list(first or {})
    column = find_image_column(features, first)
    if column is None:
        listed = ", ".join(columns) if columns else "none"
        raise DatasetError(f"no image column in {name} [{split}]; columns: {listed}")
    if column.kind == "image" and features is not None:
        # The original file bytes, not a decoded PIL image: nothing is decoded or re-encoded.
        rows.undecoded(column.name)
    root = None
    if local is not None:
        root = local if local.is_dir() else local.parent
    return DatasetSlice(
        name=name,
        split=split,
        start=offset,
        limit=limit,
        column=column,
        columns=columns,
        rows=rows,
        root=root,
        features=features,
        roots=tuple(root.resolve() for root in roots),
    )


def _is_saved(folder: Path) -> bool:
    return any((folder / marker).is_file() for marker in SAVED_MARKERS)


def _saved_split(folder: Path, split: str) -> Dataset:
    import datasets

    loaded = datasets.load_from_disk(str(folder))
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise DatasetError(
                f"{folder}: no split {split!r}; splits: {', '.join(loaded) or 'none'}"
            )
        return loaded[split]
    return loaded


def _stream(dataset: str, local: Path | None, split: str) -> IterableDataset:
    """``load_dataset(…, streaming=True)`` of a hub id, a local data file or folder."""
    import datasets

    if local is None:
        return datasets.load_dataset(dataset, split=split, streaming=True)
    if local.is_file():
        builder = FILE_BUILDERS.get(local.suffix.lower())
        if builder is None:
            raise DatasetError(
                f"{local}: not a data file datasets can read ({', '.join(sorted(FILE_BUILDERS))})"
            )
        return datasets.load_dataset(
            builder, data_files={split: str(local)}, split=split, streaming=True
        )
    return datasets.load_dataset(str(local), split=split, streaming=True)


class _Rows(Protocol):
    """The rows of a slice, iterated once, as dicts of column -> value."""

    features: Mapping[str, Any] | None

    def __iter__(self) -> Iterator[dict[str, Any]]: ...

    def first(self) -> Iterator[dict[str, Any]]:
        """At most the first row (to inspect a dataset with no schema)."""
        ...

    def undecoded(self, column: str) -> None:
        """Read ``column`` (an ``Image`` feature) as ``{"bytes", "path"}`` cells."""
        ...


class _StreamedRows:
    """A ``load_dataset(…, streaming=True)`` stream: rows come as the files are read."""

    def __init__(self, stream: IterableDataset) -> None:
        self.stream = stream
        self.features = stream.features

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.stream)

    def first(self) -> Iterator[dict[str, Any]]:
        return iter(self.stream.take(1))

    def undecoded(self, column: str) -> None:
        import datasets

        self.stream = self.stream.cast_column(column, datasets.Image(decode=False))


class _SavedRows:
    """A ``save_to_disk`` split, sliced (a contiguous ``select`` costs nothing: the Arrow
    files are memory-mapped) and read in record batches. Iterated directly rather than
    through ``to_iterable_dataset``, whose stream imports torch when it is installed."""

    BATCH = 32
    """Rows read at a time: their image bytes are in memory together (large photographs are
    megabytes each)."""

    def __init__(self, table: Dataset, offset: int, limit: int) -> None:
        end = min(len(table), offset + limit)
        self.features = table.features
        self.table: Dataset | None = table.select(range(offset, end)) if offset < end else None

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if self.table is None:
            return
        for batch in self.table.iter(batch_size=self.BATCH):
            names = list(batch)
            for values in zip(*(batch[n] for n in names), strict=True):
                yield dict(zip(names, values, strict=True))

    def first(self) -> Iterator[dict[str, Any]]:
        return itertools.islice(iter(self), 1)

    def undecoded(self, column: str) -> None:
        import datasets

        if self.table is not None:  # a schema change only: no data is rewritten
            self.table = self.table.cast_column(column, datasets.Image(decode=False))


def find_image_column(
    features: Mapping[str, Any] | None, first_row: Mapping[str, Any] | None = None
) -> ImageColumn | None:
    """The column the images come from, or None.

    By feature type first (``datasets.Image``; the one named ``image`` when there are
    several), else a string column named like a URL or path (:data:`REFERENCE_COLUMNS`).
    Without features (a dataset with no schema) the first row's values decide: an image
    object or an ``{"bytes", "path"}`` cell, else a string in such a column.
    """
    import datasets

    if features is not None:
        images = [n for n, f in features.items() if isinstance(f, datasets.Image)]
        strings = [
            n
            for n, f in features.items()
            if isinstance(f, datasets.Value) and f.dtype in ("string", "large_string")
        ]
    else:
        row = first_row or {}
        images = [n for n, v in row.items() if _is_image_value(v)]
        strings = [n for n, v in row.items() if isinstance(v, str)]
    if images:
        named = [n for n in images if n.lower() == "image"]
        return ImageColumn((named or images)[0], "image")
    by_name = {n.lower(): n for n in reversed(strings)}
    for wanted in REFERENCE_COLUMNS:
        if wanted in by_name:
            return ImageColumn(by_name[wanted], "reference")
    return None


def _is_image_value(value: Any) -> bool:
    from PIL import Image as PILImage

    return isinstance(value, PILImage.Image) or (
        isinstance(value, Mapping) and "bytes" in value and "path" in value
    )


# --- rows to inputs -----------------------------------------------------------------------


def chunks(source: DatasetSlice, size: int) -> Iterator[list[Row]]:
    """The slice's rows as inputs, ``size`` at a time, in order (``hf://`` files read)."""
    chunk: list[Row] = []
    for index, row in enumerate(source.rows, start=source.start):
        chunk.append(row_input(source, index, row))
        if len(chunk) >= size:
            yield read_hub_files(chunk)
            chunk = []
    if chunk:
        yield read_hub_files(chunk)


def row_input(source: DatasetSlice, index: int, row: Mapping[str, Any]) -> Row:
    """Turn one row into a :class:`Row`: the image (bytes, URL or absolute path) plus the
    other columns as metadata. Never raises for a bad cell: the row carries the reason."""
    key = scene_key(source.name, source.split, index)
    fields = {
        name: safe
        for name, value in row.items()
        if name != source.column.name
        and (safe := json_safe(value, (source.features or {}).get(name))) is not _OMIT
    }
    metadata: dict[str, Any] = {
        "dataset": source.name,
        "split": source.split,
        "index": index,
        "image_column": source.column.name,
        "fields": fields,
    }
    base = Input(
        SOURCE,
        key,
        key=key,
        metadata=metadata,
        room_type=_label(fields.get("room_type")),
        style=_label(fields.get("style")),
    )
    cell = row.get(source.column.name)
    try:
        return _image_row(source, index, base, cell)
    except Exception as exc:  # one odd cell (an unsavable PIL mode …) fails its row only
        reason = f"cannot read the image cell: {type(exc).__name__}: {exc}"
        return Row(index, replace(base, error=reason))


def _label(value: Any) -> str | None:
    return (value.strip()[:64] or None) if isinstance(value, str) else None


def _image_row(source: DatasetSlice, index: int, base: Input, cell: Any) -> Row:
    from PIL import Image as PILImage

    if isinstance(cell, PILImage.Image):
        return Row(index, replace(base, data=_png(cell)))
    if isinstance(cell, bytes | bytearray | memoryview):
        return Row(index, replace(base, data=bytes(cell)))
    if isinstance(cell, Mapping):
        data, path = cell.get("bytes"), cell.get("path")
        if isinstance(path, str) and path:
            base = replace(base, metadata={**(base.metadata or {}), "image_path": path})
        if data:
            return Row(index, replace(base, data=bytes(data)))
        cell = path
    if isinstance(cell, str) and cell.strip():
        return _location_row(source, index, base, cell.strip())
    reason = f"row {index} has no image in column {source.column.name!r}"
    return Row(index, replace(base, error=reason))


def _location_row(source: DatasetSlice, index: int, base: Input, location: str) -> Row:
    """A row whose image is elsewhere: an http(s) URL (fetched by ingest with the SSRF
    guard), an ``hf://`` file on the hub, or a file of a local dataset."""
    if location.startswith(("http://", "https://")):
        return Row(index, replace(base, location=location))
    if location.split("::")[-1].startswith("hf://"):  # chained paths: zip://x::hf://…
        return Row(index, replace(base, location=location), hub_path=location)
    if "://" in location:
        return Row(index, replace(base, error=f"unsupported image location: {location}"))
    if source.root is None:
        reason = f"a hub dataset's local path is not read: {location}"
        return Row(index, replace(base, error=reason))
    path = Path(location).expanduser()
    path = (path if path.is_absolute() else source.root / path).resolve()
    if not _under(path, (source.root.resolve(), *source.roots)):
        reason = f"a file outside the dataset's folder and the import roots is not read: {location}"
        return Row(index, replace(base, error=reason))
    return Row(index, replace(base, location=str(path)))


def _png(image: Any) -> bytes:
    """A PIL image as PNG (lossless); modes PNG cannot hold are converted to RGB(A)."""
    if image.mode not in {"1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA"}:
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def read_hub_files(rows: list[Row]) -> list[Row]:
    """Read the ``hf://`` files of ``rows`` (in a small thread pool) into their inputs; a file
    that cannot be read fails its row with the reason."""
    wanted = [row for row in rows if row.hub_path]
    if not wanted:
        return rows

    def read(row: Row) -> Row:
        from datasets.utils.file_utils import xopen

        try:
            with xopen(row.hub_path, "rb") as file:
                return replace(row, input=replace(row.input, data=file.read()), hub_path=None)
        except Exception as exc:
            reason = f"cannot read {row.hub_path}: {type(exc).__name__}: {exc}"
            return replace(row, input=replace(row.input, error=reason), hub_path=None)

    with ThreadPoolExecutor(max_workers=HUB_READ_THREADS, thread_name_prefix="hf") as pool:
        done = dict(zip((id(r) for r in wanted), pool.map(read, wanted), strict=True))
    return [done.get(id(row), row) for row in rows]


# --- JSON-safe metadata -------------------------------------------------------------------

_OMIT: Any = object()
"""A value with no JSON form worth storing (image bytes, a decoded image)."""


def json_safe(value: Any, feature: Any = None) -> Any:
    """A value as something PostgreSQL's ``jsonb`` takes, or :data:`_OMIT`.

    - class labels (``feature`` a ``ClassLabel``, or a list of them) become their names;
    - NaN and infinities become None (JSON has neither); NUL characters are removed
      (``jsonb`` refuses them);
    - numpy scalars and arrays, tuples and sets become numbers and lists; dates and times
      ISO 8601 strings; durations seconds; decimals strings (exact);
    - bytes and images are left out (an ``{"bytes", "path"}`` cell keeps its path);
    - anything else becomes its ``str``.
    """
    labels = _class_label(feature)
    if labels is not None:
        if isinstance(value, int) and not isinstance(value, bool):
            return labels.int2str(value) if 0 <= value < labels.num_classes else None
        if isinstance(value, list):
            return [json_safe(v, labels) for v in value]
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, bytes | bytearray | memoryview):
        return _OMIT
    if isinstance(value, Mapping):
        if "bytes" in value and "path" in value:  # an undecoded Image/Audio cell
            return {"path": value["path"]} if isinstance(value["path"], str) else _OMIT
        out = {}
        for key, item in value.items():
            safe = json_safe(item, _subfeature(feature, key))
            if safe is not _OMIT:
                out[str(key).replace("\x00", "")] = safe
        return out
    if isinstance(value, list | tuple | set | frozenset):
        inner = getattr(feature, "feature", None)
        return [None if (s := json_safe(v, inner)) is _OMIT else s for v in value]
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if _is_image_value(value):
        return _OMIT
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return json_safe(value.tolist())
    return str(value).replace("\x00", "")


def _class_label(feature: Any) -> Any:
    import datasets

    if isinstance(feature, datasets.ClassLabel):
        return feature
    inner = getattr(feature, "feature", None)
    return inner if isinstance(inner, datasets.ClassLabel) else None


def _subfeature(feature: Any, key: Any) -> Any:
    return feature.get(key) if isinstance(feature, Mapping) else None


# --- ingesting rows -----------------------------------------------------------------------


@dataclass
class ImportReport:
    """What :func:`import_rows` did with a chunk of rows.

    Attributes:
        scene_ids: usable scenes the rows gave (new, or the same image already stored).
        failed: ``(row index, reason)`` of rows that gave no usable scene.
        skipped: keys of rows skipped because their scene already exists.
    """

    scene_ids: list[uuid.UUID] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def import_rows(
    job_id: uuid.UUID, rows: Sequence[Row], *, skip_existing: bool = True
) -> ImportReport:
    """Ingest a chunk of rows into the job, counting each as done or failed (with reasons in
    ``scene_failures``, stage ``ingest``).

    Args:
        job_id: the import job (held open by :func:`modomo.jobs.open_source`).
        rows: the chunk, from :func:`chunks`.
        skip_existing: leave out rows whose key already has a usable scene (a re-import adds
            nothing). False re-ingests them: a resumed task's first chunk, which the task
            that died may have stored without counting (ingest finds the same bytes and
            counts them once).
    """
    keys = [row.input.source_key for row in rows]
    existing = existing_keys(keys) if skip_existing else set()
    report = ImportReport(skipped=[k for k in keys if k in existing])
    todo = [row for row in rows if row.input.source_key not in existing]
    if todo:
        ingested = ingest(job_id, [row.input for row in todo], complete=True)
        index = {row.input.source_key: row.index for row in todo}
        report.scene_ids = ingested.scene_ids
        report.failed = [(index[i.source_key], reason) for i, reason in ingested.failed]
    return report
