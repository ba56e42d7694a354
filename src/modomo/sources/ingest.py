"""Ingest: read or fetch each input, check it is an image, store it once, make scene rows.

Each image is stored under its content sha256, and ``scenes.sha256`` is unique, so the same
bytes twice (two paths, or a URL and a file) make one scene. Inputs are read in a small thread
pool (downloads overlap); database writes stay in the calling thread.

An input that cannot be read, fetched or identified as an image, or whose image cannot be
stored (a full disk), still gets a scene row (status ``failed``) so that its failure, with the
reason, is part of the job record.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from modomo.artifacts import artifact_store
from modomo.config import Settings, get_settings
from modomo.db.models import Scene, SceneStatus, utcnow
from modomo.db.session import session_scope
from modomo.images import ImageError, fetch_image, image_key, probe_image
from modomo.images.loading import ImageInfo, pillow_open
from modomo.images.phash import phash_hex
from modomo.jobs.accounting import add_scenes, apply_outcomes, record_failures
from modomo.sources.inputs import Input

__all__ = ["IngestReport", "existing_keys", "ingest"]

log = logging.getLogger(__name__)

STAGE = "ingest"
READ_THREADS = 8


@dataclass
class IngestReport:
    """What ingest did with a job's inputs.

    Attributes:
        scene_ids: usable scenes, in input order, each once.
        failed: ``(input, reason)`` for inputs that could not be used.
        duplicates: inputs whose bytes were already a scene (in this job or before).
    """

    scene_ids: list[uuid.UUID] = field(default_factory=list)
    failed: list[tuple[Input, str]] = field(default_factory=list)
    duplicates: int = 0


@dataclass(frozen=True)
class _Read:
    input: Input
    data: bytes | None = None
    info: ImageInfo | None = None
    error: str | None = None
    phash: str | None = None


def _read(item: Input, settings: Settings) -> _Read:
    if item.error is not None:
        return _Read(item, error=item.error)
    try:
        if item.data is not None:
            data = item.data
        elif item.is_url:
            data = fetch_image(
                item.location,
                allow_private=settings.allow_private_urls,
                max_bytes=settings.max_download_bytes,
                timeout_s=settings.fetch_timeout,
                user_agent=settings.user_agent,
            ).data
        else:
            data = Path(item.location).read_bytes()
        info = _upright(data, probe_image(data, max_pixels=settings.max_image_pixels))
        return _Read(item, data, info, phash=_phash(item, data, settings))
    except ImageError as exc:
        return _Read(item, error=str(exc))
    except OSError as exc:
        return _Read(item, error=f"cannot read {item.location}: {exc.strerror or exc}")


_EXIF_ORIENTATION = 0x0112
_TRANSPOSING_ORIENTATIONS = frozenset({5, 6, 7, 8})  # a quarter turn: width and height swap
_OPENER = {"MPO": "JPEG"}  # Pillow's JPEG plugin opens MPO files


def _upright(data: bytes, info: ImageInfo) -> ImageInfo:
    """``info`` with the width and height of the image upright, as every stage decodes it
    (``load_image`` applies the EXIF orientation; ``probe_image`` reports the stored size),
    so that object boxes, masks and exports agree with ``scenes.width``/``height``."""
    orientation = None
    opened = io.BytesIO(data)
    # corrupt EXIF: decoding keeps the stored orientation, and so does this
    with (
        contextlib.suppress(Exception),
        pillow_open(opened, formats=[_OPENER.get(info.format, info.format)]) as im,
    ):
        orientation = im.getexif().get(_EXIF_ORIENTATION)
    if orientation in _TRANSPOSING_ORIENTATIONS:
        return replace(info, width=info.height, height=info.width)
    return info


def _phash(item: Input, data: bytes, settings: Settings) -> str | None:
    # An image that probes but cannot be decoded in full is still ingested: the stage that
    # decodes it fails that scene with the reason, and de-duplication skips it.
    try:
        return phash_hex(data, max_pixels=settings.max_image_pixels)
    except ImageError as exc:
        log.info("no pHash for %s: %s", item.location, exc)
        return None


def _scene_for_image(
    session: Session, read: _Read, sha256: str, key: str
) -> tuple[uuid.UUID, bool]:
    """Find or create the scene of an image; returns (id, already existed)."""
    assert read.info is not None
    existing = session.scalar(select(Scene).where(Scene.sha256 == sha256))
    if existing is not None:
        return existing.id, True
    scene = session.scalar(select(Scene).where(Scene.source_key == read.input.source_key))
    if scene is None:
        scene = Scene(source=read.input.source, source_key=read.input.source_key)
        session.add(scene)
    # New scene, or the file at this key changed (or failed before): its old results go.
    scene.image_url = read.input.location if read.input.is_url else None
    scene.image_key, scene.sha256, scene.phash = key, sha256, read.phash
    scene.width, scene.height = read.info.width, read.info.height
    scene.status, scene.colors = SceneStatus.INGESTED, None
    scene.classification = scene.clip_embedding = scene.embedding_model = None
    scene.scene_type = scene.duplicate_group_id = None
    scene.room_type, scene.style = read.input.room_type, read.input.style
    scene.meta = {
        **(read.input.metadata or {}),
        "format": read.info.format,
        "bytes": len(read.data or b""),
    }
    scene.updated_at = utcnow()
    session.flush()
    return scene.id, False


def _scene_for_failure(session: Session, item: Input) -> uuid.UUID:
    """The scene that records a failed input: its existing row, or a new ``failed`` one."""
    scene = session.scalar(select(Scene).where(Scene.source_key == item.source_key))
    if scene is None:
        scene = Scene(
            source=item.source,
            source_key=item.source_key,
            image_url=item.location if item.is_url else None,
            status=SceneStatus.FAILED,
            room_type=item.room_type,
            style=item.style,
            meta=dict(item.metadata or {}),
        )
        session.add(scene)
        session.flush()
    return scene.id


def _reads(inputs: Sequence[Input], settings: Settings) -> Iterator[_Read]:
    # fetch_image makes its own guarded client per URL: it connects only to the addresses it
    # checked (no DNS-rebinding window), which a shared client could not promise.
    with ThreadPoolExecutor(max_workers=READ_THREADS, thread_name_prefix="ingest") as pool:
        yield from pool.map(lambda item: _read(item, settings), inputs)


def ingest(
    job_id: uuid.UUID,
    inputs: Sequence[Input],
    on_progress: Callable[[int, int], None] | None = None,
    *,
    complete: bool = False,
) -> IngestReport:
    """Store every input once, create its scene, and put all of them in the job.

    Failed inputs are counted as the job's failures at once, with their reasons in
    ``scene_failures`` (stage ``ingest``); usable scenes are added to the job as pending, to be
    sent to a stage with :func:`modomo.jobs.dispatch_batches` — or, with ``complete``, counted
    as done (for a job whose work is the ingest itself: a crawl, an import).

    Args:
        job_id: a pending job.
        inputs: what to ingest, from :func:`modomo.sources.expand_sources` or a source.
        on_progress: called with (inputs done, inputs total) after each input.
        complete: count usable scenes as done in the job.
    """
    settings = get_settings()
    store = artifact_store()
    report = IngestReport()
    seen: set[uuid.UUID] = set()
    given: dict[uuid.UUID, str] = {}  # each scene's input as this job names it
    failures: list[tuple[uuid.UUID, str, str]] = []
    for count, read in enumerate(_reads(inputs, settings), start=1):
        if read.error is None and read.data is not None and read.info is not None:
            sha256 = hashlib.sha256(read.data).hexdigest()
            key = image_key(sha256, read.info.format)
            try:
                if not store.exists(key):
                    store.put_bytes(key, read.data)
            except OSError as exc:  # a full disk, a read-only or vanished store
                read = replace(read, error=f"cannot store the image: {_os_reason(exc)}")
        if read.error is None and read.data is not None and read.info is not None:
            try:
                with session_scope() as session:
                    scene_id, existed = _scene_for_image(session, read, sha256, key)
            except IntegrityError:  # another ingest stored the same bytes a moment ago
                with session_scope() as session:
                    scene_id = session.execute(
                        select(Scene.id).where(Scene.sha256 == sha256)
                    ).scalar_one()
                existed = True
            if scene_id in seen or existed:
                report.duplicates += 1
            if scene_id not in seen:
                seen.add(scene_id)
                given[scene_id] = read.input.source_key
                report.scene_ids.append(scene_id)
        else:
            reason = read.error or "unknown error"
            with session_scope() as session:
                scene_id = _scene_for_failure(session, read.input)
            if scene_id not in seen:
                seen.add(scene_id)
                given[scene_id] = read.input.source_key
                report.failed.append((read.input, reason))
                failures.append((scene_id, STAGE, reason))
        if on_progress is not None:
            on_progress(count, len(inputs))
    failed_ids = [f[0] for f in failures]
    with session_scope() as session:
        add_scenes(session, job_id, [*report.scene_ids, *failed_ids], given)
        record_failures(session, job_id, failures)
        done_ids = report.scene_ids if complete else []
        if failed_ids or done_ids:
            apply_outcomes(session, job_id, done=done_ids, failed=failed_ids, stage=STAGE)
    return report


def _os_reason(exc: OSError) -> str:
    """One line for a failed write: ``No space left on device (ENOSPC)``."""
    import errno

    name = errno.errorcode.get(exc.errno or 0)
    return f"{exc.strerror or exc}" + (f" ({name})" if name else "")


def existing_keys(keys: Sequence[str]) -> set[str]:
    """The source keys among ``keys`` that already have a usable scene (a source skips them
    instead of fetching again)."""
    if not keys:
        return set()
    with session_scope() as session:
        return set(
            session.scalars(
                select(Scene.source_key).where(
                    Scene.source_key.in_(list(keys)), Scene.status != SceneStatus.FAILED
                )
            )
        )
