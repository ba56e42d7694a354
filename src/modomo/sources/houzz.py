"""Crawl Houzz photo galleries into scenes, politely and resumably.

:func:`crawl_galleries` walks the galleries of the requested room types (the site profile
:data:`~modomo.sources.houzz_profile.HOUZZ`, under ``MODOMO_HOUZZ_BASE_URL``) page by page
through :class:`~modomo.sources.crawl.PoliteClient` (robots.txt, per-host rate limit,
backoff), reads each page with :func:`~modomo.sources.gallery.parse_gallery`, downloads each
new photo's image through the guarded fetch and hands the bytes to
:func:`~modomo.sources.ingest.ingest` (content hash, size and pixel limits, one scene per
image).

- Scenes: ``room_type`` is the product's name of the gallery's room type (``living_room``),
  ``style`` the stated style as a value (``Mid-Century Modern`` -> ``mid_century_modern``);
  ``metadata`` keeps what the page stated: photo id, title, style, project and photo page
  URLs, the image and gallery page URLs, and which part of the page stated it.
- Keys: a photo's scene is ``houzz:{photo id}``. Photos that already have a usable scene
  (from an earlier job) are skipped without fetching anything; so are photos listed twice.
  A photo whose bytes are another photo's is that photo's scene (one scene per image), so it
  has no scene under its own key and a later job fetches it again to find that out.
- Pagination: a page's stated next page (``rel=next``, the state's ``pagination.next``) is
  followed, else page + 1; a gallery ends at an empty page, a 404 past its first page, the
  first page naming no next one when earlier pages did, or a page read before.
- ``limit``: the job takes in at most ``limit`` photos (stored or failed: its ``total``);
  skipped photos do not count. The limit is shared out between the room types in order:
  each gets an equal share of what is left when its turn comes, so a gallery that runs out
  early leaves its share to the ones after it.
- Resumable: after each page the cursor ``{"room_type", "page", "url", "until",
  "paginated"}`` (the next page to read, the job's photo count at which this room type's
  share is full, whether the gallery names its next pages) is saved in the job's
  ``params["cursor"]`` with running totals in ``params["crawl"]``; a retried or
  restarted task continues from it. A page interrupted half-way is read again; its photos
  already in the job are neither fetched nor counted again (the job's ledger says which).
- Failures: an image that cannot be fetched (the fetch's reason, e.g. ``HTTP 404 from …``)
  or decoded (ingest's reason) becomes a failed scene with its reason in the job record, and
  the crawl goes on. A gallery page that cannot be read (robots.txt disallows it, HTTP errors
  after the retries) ends that room type, with the reason in ``params["crawl"]["errors"]``.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

from sqlalchemy import Table, and_, func, select

from modomo.config import Settings, get_settings
from modomo.db.models import JobScene, Scene, SceneStatus
from modomo.db.session import session_scope
from modomo.images import FetchError
from modomo.jobs import describe_job, job_is_active, update_params
from modomo.sources.crawl import CrawlError, PoliteClient, Politeness
from modomo.sources.gallery import GalleryPage, Photo, parse_gallery
from modomo.sources.houzz_profile import HOUZZ, SiteProfile
from modomo.sources.ingest import ingest
from modomo.sources.inputs import Input

__all__ = [
    "CURSOR",
    "ROOM_TYPES",
    "TALLY",
    "CrawlReport",
    "check_room_types",
    "crawl_galleries",
    "scene_room_type",
    "source_key",
]

log = logging.getLogger(__name__)

ROOM_TYPES: tuple[str, ...] = tuple(HOUZZ.galleries)
"""Room types as the API spells them: ``living-room``, ``bedroom`` …"""
CURSOR = "cursor"
"""Job param: where the crawl goes on (see the module text)."""
TALLY = "crawl"
"""Job param: the crawl's running totals (pages, skipped, repeats, errors)."""
STAGE = "ingest"
"""The stage of the failures the crawl records (the same as ingest's)."""
MAX_ERRORS = 20
"""Page errors kept in the job's params."""

SCENES = cast(Table, Scene.__table__)


def scene_room_type(room_type: str) -> str:
    """The product's name of an API room type: ``living-room`` -> ``living_room``."""
    return room_type.replace("-", "_")


def source_key(photo_id: str, profile: SiteProfile = HOUZZ) -> str:
    """A photo's scene key: ``houzz:{photo id}``."""
    return f"{profile.name}:{photo_id}"


def _style(stated: str | None) -> str | None:
    """A stated style as a product value: ``Mid-Century Modern`` -> ``mid_century_modern``."""
    if not stated:
        return None
    words = "".join(c if c.isalnum() else " " for c in stated.lower()).split()
    return "_".join(words)[:64] or None


def check_room_types(room_types: Sequence[str] | None, profile: SiteProfile = HOUZZ) -> list[str]:
    """The room types to crawl, in order, each once (None or empty: all of the profile's).

    Raises:
        ValueError: a room type the profile has no gallery for.
    """
    if not room_types:
        return list(profile.galleries)
    unknown = [r for r in room_types if r not in profile.galleries]
    if unknown:
        raise ValueError(f"unknown room type {unknown[0]!r}; known: {', '.join(profile.galleries)}")
    return list(dict.fromkeys(room_types))


@dataclass
class CrawlReport:
    """What one run of :func:`crawl_galleries` did (a resumed job has several runs).

    Attributes:
        stored: usable scenes the job gained (``duplicates`` of them were already stored
            under another photo id: same bytes).
        failed: photos whose image could not be fetched or decoded.
        skipped: photos not fetched because an earlier job stored them.
        repeats: photos listed again on a later page of this run.
        duplicates: see ``stored``.
        pages: gallery pages read.
        requests: HTTP requests sent (pages, robots.txt files, images; retries included).
        finished: the crawl is over (every gallery read, or the limit reached); False when it
            stopped early (``deadline``, or the job was cancelled).
        cancelled: the job was cancelled.
        errors: gallery pages that could not be read this run, with reasons.
        total_pages: gallery pages read by every run of the job.
        total_skipped: photos skipped by every run of the job.
    """

    stored: int = 0
    failed: int = 0
    skipped: int = 0
    repeats: int = 0
    duplicates: int = 0
    pages: int = 0
    requests: int = 0
    finished: bool = False
    cancelled: bool = False
    errors: list[str] = field(default_factory=list)
    total_pages: int = 0
    total_skipped: int = 0

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-able values."""
        return asdict(self)

    @property
    def error(self) -> str | None:
        """Why the crawl failed as a whole: no gallery page could be read at all."""
        if self.total_pages or not self.errors:
            return None
        return "no gallery page could be read: " + "; ".join(self.errors[:3])


def crawl_galleries(
    job_id: uuid.UUID | str,
    limit: int,
    room_types: Sequence[str] | None = None,
    *,
    settings: Settings | None = None,
    profile: SiteProfile = HOUZZ,
    client: PoliteClient | None = None,
    deadline: float | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> CrawlReport:
    """Crawl the galleries of ``room_types`` into the job's scenes, from its saved cursor.

    The job must be held open by the caller (:func:`modomo.jobs.open_source`) and released
    afterwards (:func:`modomo.jobs.close_source`); this adds and counts its scenes.

    Args:
        job_id: the job.
        limit: photos the job takes in at most (stored or failed; see the module text).
        room_types: API room types (``living-room`` …); None: all of the profile's.
        settings: crawl settings (default: the process's).
        profile: the site.
        client: the HTTP client (default: a new :class:`PoliteClient` from ``settings``).
        deadline: a ``time.monotonic()`` value; the crawl stops (unfinished, cursor saved)
            before the first page it would start after it.
        on_progress: called with (photos the job has taken in, ``limit``) after each chunk.

    Raises:
        ValueError: ``limit`` below 1 or an unknown room type.
        JobNotFound: no such job.
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    rooms = check_room_types(room_types, profile)
    settings = settings or get_settings()
    jid = uuid.UUID(str(job_id))
    params = describe_job(jid, max_failures=0)["params"] or {}
    cursor = dict(params.get(CURSOR) or {})
    tally = dict(params.get(TALLY) or {})
    report = CrawlReport(
        total_pages=int(tally.get("pages", 0)), total_skipped=int(tally.get("skipped", 0))
    )
    if cursor.get("done"):
        report.finished = True
        return report
    own_client = client is None
    client = client or PoliteClient(Politeness.from_settings(settings))
    try:
        _Crawl(
            jid,
            limit,
            rooms,
            settings,
            profile,
            client,
            report,
            _Tally.from_params(tally),
            deadline,
            on_progress,
            taken=_taken(jid),
        ).run(cursor)
    finally:
        report.requests = client.requests
        if own_client:
            client.close()
    return report


@dataclass
class _Tally:
    """The crawl's running totals over every run of a job (``params["crawl"]``)."""

    pages: int = 0
    skipped: int = 0
    repeats: int = 0
    errors: list[str] = field(default_factory=list)

    @classmethod
    def from_params(cls, saved: dict[str, Any]) -> _Tally:
        return cls(
            pages=int(saved.get("pages", 0)),
            skipped=int(saved.get("skipped", 0)),
            repeats=int(saved.get("repeats", 0)),
            errors=[str(e) for e in saved.get("errors", [])],
        )


class _Stop(Exception):
    """The crawl stops early (deadline or cancel); the cursor is already saved."""


@dataclass
class _Crawl:
    """One run of a job's crawl: where it is, what it has done."""

    job_id: uuid.UUID
    limit: int
    rooms: list[str]
    settings: Settings
    profile: SiteProfile
    client: PoliteClient
    report: CrawlReport
    tally: _Tally
    deadline: float | None = None
    on_progress: Callable[[int, int], None] | None = None
    taken: int = 0
    """Photos the job has taken in (its ledger's scenes), refreshed after each chunk."""
    seen: set[str] = field(default_factory=set)
    """Photo ids met in this run."""

    @property
    def base(self) -> str:
        return self.settings.houzz_base_url

    # --- the walk -------------------------------------------------------------------------

    def run(self, cursor: dict[str, Any]) -> None:
        start = (
            self.rooms.index(cursor["room_type"]) if cursor.get("room_type") in self.rooms else 0
        )
        try:
            for index in range(start, len(self.rooms)):
                if self.taken >= self.limit:
                    break
                room = self.rooms[index]
                resume = cursor if cursor.get("room_type") == room else None
                self.gallery(index, room, resume)
        except _Stop:
            return
        self.save({"done": True})
        self.report.finished = True

    def gallery(self, index: int, room: str, resume: dict[str, Any] | None) -> None:
        first = self.profile.first_page
        url: str | None
        paginated = False  # the gallery names its next pages (so a page naming none is last)
        if resume is not None and resume.get("until") is not None:
            page, url, until = int(resume["page"]), resume.get("url"), int(resume["until"])
            paginated = bool(resume.get("paginated"))
        else:
            share = math.ceil((self.limit - self.taken) / (len(self.rooms) - index))
            page, url, until = (
                first,
                self.profile.page_url(self.base, room, first),
                self.taken + share,
            )
            self.save_position(room, page, url, until, paginated)
        previous: tuple[str, ...] | None = None
        visited: set[str] = set()
        while url is not None and self.taken < until:
            self.check_active()
            self.check_time()
            visited.add(url)
            try:
                fetched = self.client.get_page(url)
            except CrawlError as exc:
                if not (exc.status in (404, 410) and page != first):  # else: past the last page
                    self.page_error(room, str(exc))
                return
            parsed = parse_gallery(fetched.text, fetched.url, self.profile)
            self.report.pages += 1
            self.report.total_pages += 1
            self.tally.pages += 1
            if parsed.dropped:
                log.info("%s: %d photo entries without an id or image", url, parsed.dropped)
            self.take(room, parsed, until)
            ids = tuple(p.photo_id for p in parsed.photos)
            paginated = paginated or parsed.next_url is not None
            # The gallery ends at an empty page, at the first page naming no next one when
            # earlier pages did, at a page repeating the previous one (a site ignoring the page
            # number) or at a page read before (a loop); pages naming nothing are followed by
            # page + 1.
            last = paginated and parsed.next_url is None
            if not ids or last or ids == previous or page - first + 1 >= self.profile.max_pages:
                url = None
            else:
                page, url = self.next_page(room, page, parsed)
                if url in visited:
                    url = None
            previous = ids
            self.save_position(room, page, url, until, paginated)

    def next_page(self, room: str, page: int, parsed: GalleryPage) -> tuple[int, str]:
        """The next page's number and URL: the one the page names when it is on the site,
        else the profile's URL of page + 1."""
        stated = parsed.next_url
        if stated and _origin(stated) == _origin(parsed.url) and stated != parsed.url:
            numbers = parse_qs(urlsplit(stated).query).get(self.profile.page_param, [])
            number = int(numbers[0]) if numbers and numbers[0].isdigit() else page + 1
            return number, stated
        return page + 1, self.profile.page_url(self.base, room, page + 1)

    def take(self, room: str, parsed: GalleryPage, until: int) -> None:
        photos: list[Photo] = []
        for photo in parsed.photos:
            if photo.photo_id in self.seen:
                self.report.repeats += 1
                self.tally.repeats += 1
                continue
            self.seen.add(photo.photo_id)
            photos.append(photo)
        in_job, elsewhere = _known(
            self.job_id, [source_key(p.photo_id, self.profile) for p in photos]
        )
        self.report.skipped += len(elsewhere)
        self.report.total_skipped += len(elsewhere)
        self.tally.skipped += len(elsewhere)
        todo = [p for p in photos if source_key(p.photo_id, self.profile) not in in_job | elsewhere]
        while todo and self.taken < until:
            self.check_active()
            size = min(self.settings.crawl_chunk_size, until - self.taken)
            chunk, todo = todo[:size], todo[size:]
            self.chunk(room, chunk, parsed.url)

    def chunk(self, room: str, photos: list[Photo], page_url: str) -> None:
        """Fetch the photos' images and ingest them; a failed fetch becomes a failed scene
        with its reason."""
        items: list[Input] = []
        for photo in photos:
            item = self.input(room, photo, page_url)
            try:
                items.append(replace(item, data=self.client.fetch_image(photo.image_url)))
            except (CrawlError, FetchError) as exc:
                items.append(replace(item, error=str(exc)))
        if items:
            result = ingest(self.job_id, items, complete=True)
            self.report.stored += len(result.scene_ids)
            self.report.duplicates += result.duplicates
            self.report.failed += len(result.failed)
        self.taken = _taken(self.job_id)
        if self.on_progress is not None:
            self.on_progress(self.taken, self.limit)

    def input(self, room: str, photo: Photo, page_url: str) -> Input:
        metadata = {
            "photo_id": photo.photo_id,
            "title": photo.title,
            "style": photo.style,
            "project_url": photo.project_url,
            "photo_url": photo.photo_url,
            "image_url": photo.image_url,
            "page_url": page_url,
            "gallery": room,
            "room_type": scene_room_type(room),
            "parsed_from": photo.found_in,
        }
        return Input(
            self.profile.name,
            photo.image_url,
            key=source_key(photo.photo_id, self.profile),
            metadata={k: v for k, v in metadata.items() if v is not None},
            room_type=scene_room_type(room),
            style=_style(photo.style),
        )

    # --- bookkeeping ----------------------------------------------------------------------

    def check_active(self) -> None:
        if not job_is_active(self.job_id):
            self.report.cancelled = True
            raise _Stop

    def check_time(self) -> None:
        # Checked between pages only: stopping inside a page would read it again next run.
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise _Stop

    def page_error(self, room: str, reason: str) -> None:
        log.warning("job %s: %s gallery: %s", self.job_id, room, reason)
        message = f"{room}: {reason}"
        self.report.errors.append(message)
        self.tally.errors = [*self.tally.errors, message][-MAX_ERRORS:]

    def save_position(
        self, room: str, page: int, url: str | None, until: int, paginated: bool
    ) -> None:
        self.save(
            {"room_type": room, "page": page, "url": url, "until": until, "paginated": paginated}
        )

    def save(self, cursor: dict[str, Any]) -> None:
        update_params(self.job_id, **{CURSOR: cursor, TALLY: asdict(self.tally)})


# --------------------------------------------------------------------------------------
# database helpers


def _taken(job_id: uuid.UUID) -> int:
    """Photos the job has taken in so far: the scenes in its ledger."""
    with session_scope() as session:
        return int(
            session.scalar(
                select(func.count()).select_from(JobScene).where(JobScene.job_id == job_id)
            )
            or 0
        )


def _known(job_id: uuid.UUID, keys: Sequence[str]) -> tuple[set[str], set[str]]:
    """(keys whose scene is already in this job, keys with a usable scene outside it).

    A failed scene outside the job is not known: the photo is tried again.
    """
    if not keys:
        return set(), set()
    with session_scope() as session:
        rows = session.execute(
            select(Scene.source_key, Scene.status, JobScene.scene_id)
            .outerjoin(JobScene, and_(JobScene.scene_id == Scene.id, JobScene.job_id == job_id))
            .where(Scene.source_key.in_(list(keys)))
        ).all()
    in_job = {row[0] for row in rows if row[2] is not None}
    elsewhere = {row[0] for row in rows if row[2] is None and row[1] != SceneStatus.FAILED}
    return in_job, elsewhere


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()
