"""A fake Houzz on loopback for the crawler's tests.

Gallery pages are generated in the shape documented in :mod:`modomo.sources.houzz_profile`
(JSON-LD pages, embedded-state pages, markup-only pages, pagination), with images, a
robots.txt, one-shot 429 answers and a log of every request with its arrival time. The server
is pytest-httpserver's (werkzeug, threaded) with one handler that asks the current
:class:`FakeHouzz` (:class:`SiteServer`).
"""

from __future__ import annotations

import html
import json
import random
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import parse_qs

import numpy as np
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from tests.support import encode, noise_image

ROBOTS = """User-agent: *
Disallow: /photos/outdoor
Disallow: /simgs/private/

User-agent: SomeOtherBot
Disallow: /
"""
"""Disallows the outdoor gallery and the images under /simgs/private/ (for everyone)."""


def new_ids(count: int) -> list[str]:
    """``count`` fresh numeric photo ids (unique across the test session's database)."""
    start = random.randrange(10**8, 10**9) * 1000
    return [str(start + n) for n in range(count)]


def image_bytes(seed: str) -> bytes:
    """A small JPEG unique to ``seed``."""
    return encode(noise_image(seed, (40, 56)), "JPEG", quality=90)


BROKEN = encode(np.zeros((64, 64, 3), np.uint8), "JPEG")[:300]
"""A truncated JPEG: its first bytes say JPEG, so only decoding finds it broken."""


@dataclass
class FakePhoto:
    """A photo on the fake site.

    Attributes:
        photo_id: its id (digits, as Houzz's ``~12345`` URLs).
        title, style, project: what its pages state.
        image: the full-size image's bytes; None answers 404.
        private: the image lives under a path robots.txt disallows.
    """

    photo_id: str
    title: str
    style: str | None = "Scandinavian"
    project: str | None = None
    image: bytes | None = None
    private: bool = False

    @property
    def slug(self) -> str:
        return "-".join(self.title.lower().split())

    @property
    def page_path(self) -> str:
        return f"/photos/{self.slug}-phvw-vp~{self.photo_id}"

    @property
    def image_path(self) -> str:
        folder = "private" if self.private else "pictures"
        return f"/simgs/{folder}/{self.slug}-{self.photo_id}-home-design.jpg"

    @property
    def thumb_path(self) -> str:
        """The thumbnail the markup shows; the profile's rewrite gives ``image_path``."""
        folder = "private" if self.private else "pictures"
        return f"/fimgs/{folder}/{self.slug}-{self.photo_id}-w360-h360-b0-p0--.jpg"


@dataclass
class GalleryPageSpec:
    """One page of a gallery: its photos and how it states them (``json-ld``, ``state`` or
    ``markup``: no structured data at all)."""

    photos: list[FakePhoto]
    kind: str = "json-ld"


@dataclass(frozen=True)
class Hit:
    """A request the server received."""

    at: float  # time.monotonic() in the test process
    path: str
    query: str
    user_agent: str
    status: int

    @property
    def target(self) -> str:
        return f"{self.path}?{self.query}" if self.query else self.path


@dataclass
class FakeHouzz:
    """The site's content and its request log.

    Attributes:
        galleries: room type (``living-room``) -> its pages.
        robots: the robots.txt body (None: 404).
        throttle: request targets (``/photos/kitchen?pg=2``) answered 429 with this
            ``Retry-After`` (seconds) on their first hit.
        errors: request targets answered these statuses (no ``Retry-After``), one per hit,
            before their normal answer.
        redirects: request targets answered 301 to another path.
        hits: every request, in arrival order.
    """

    galleries: dict[str, list[GalleryPageSpec]] = field(default_factory=dict)
    robots: str | None = ROBOTS
    throttle: dict[str, int] = field(default_factory=dict)
    errors: dict[str, list[int]] = field(default_factory=dict)
    redirects: dict[str, str] = field(default_factory=dict)
    hits: list[Hit] = field(default_factory=list)
    base: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # --- requests -------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        query = request.query_string.decode()
        response = self._answer(request.path, query)
        with self._lock:
            self.hits.append(
                Hit(
                    time.monotonic(),
                    request.path,
                    query,
                    request.headers.get("User-Agent", ""),
                    response.status_code,
                )
            )
        return response

    def _answer(self, path: str, query: str) -> Response:
        target = f"{path}?{query}" if query else path
        with self._lock:
            delay = self.throttle.pop(target, None)
            queued = self.errors.get(target)
            error = queued.pop(0) if queued else None
        if delay is not None:
            return Response("slow down", 429, headers={"Retry-After": str(delay)})
        if error is not None:
            return Response(f"error {error}", error)
        if target in self.redirects:
            return Response("moved", 301, headers={"Location": self.redirects[target]})
        if path == "/robots.txt":
            if self.robots is None:
                return Response("no robots", 404)
            return Response(self.robots, 200, content_type="text/plain")
        for room, pages in self.galleries.items():
            if path == f"/photos/{room}":
                number = int(parse_qs(query).get("pg", ["1"])[0])
                if not 1 <= number <= len(pages):
                    return Response("no such page", 404)
                return Response(
                    self.page_html(room, number), 200, content_type="text/html; charset=utf-8"
                )
        for photo in self.photos():
            if path == photo.image_path:
                if photo.image is None:
                    return Response("gone", 404)
                return Response(photo.image, 200, content_type="image/jpeg")
        return Response("not found", 404)

    def photos(self) -> Iterator[FakePhoto]:
        for pages in self.galleries.values():
            for page in pages:
                yield from page.photos

    def page_hits(self, room: str) -> list[int]:
        """The page numbers of ``room``'s gallery requested, in order (429s included)."""
        return [
            int(parse_qs(h.query).get("pg", ["1"])[0])
            for h in self.hits
            if h.path == f"/photos/{room}"
        ]

    def image_hits(self, photo: FakePhoto) -> int:
        return sum(1 for h in self.hits if h.path == photo.image_path)

    # --- pages ----------------------------------------------------------------------------

    def page_url(self, room: str, number: int) -> str:
        return f"{self.base}/photos/{room}" + ("" if number == 1 else f"?pg={number}")

    def page_html(self, room: str, number: int) -> str:
        spec = self.galleries[room][number - 1]
        has_next = number < len(self.galleries[room])
        next_url = self.page_url(room, number + 1) if has_next else None
        head = [f"<title>{room} ideas - page {number}</title>"]
        head.append(f'<meta property="og:image" content="{self.base}/static/cover.jpg">')
        head.append(f'<meta property="og:url" content="{self.page_url(room, number)}">')
        if spec.kind == "json-ld":
            head.append(self._jsonld(spec.photos))
            if next_url:
                head.append(f'<link rel="next" href="{html.escape(next_url)}">')
        elif spec.kind == "state":
            head.append(self._state(spec.photos, next_url))
        body = [self._card(p, spec.kind) for p in spec.photos]
        if spec.kind == "markup" and next_url:
            body.append(f'<nav><a rel="next nofollow" href="?pg={number + 1}">Next</a></nav>')
        return (
            "<!doctype html><html><head>"
            + "\n".join(head)
            + '</head><body><div class="hz-gallery">'
            + "\n".join(body)
            + "</div></body></html>"
        )

    def _jsonld(self, photos: list[FakePhoto]) -> str:
        items = []
        for position, photo in enumerate(photos, start=1):
            item: dict[str, object] = {
                "@type": "ImageObject",
                "identifier": photo.photo_id,
                "url": self.base + photo.page_path,
                "contentUrl": self.base + photo.image_path,
                "name": photo.title,
            }
            if photo.project:
                item["isPartOf"] = {"@type": "CreativeWork", "url": self.base + photo.project}
            # style is left to the markup, which the parser uses to fill the gap
            items.append({"@type": "ListItem", "position": position, "item": item})
        data = {
            "@context": "https://schema.org",
            "@type": "CollectionPage",
            "mainEntity": {"@type": "ItemList", "itemListElement": items},
        }
        return f'<script type="application/ld+json">{json.dumps(data)}</script>'

    def _state(self, photos: list[FakePhoto], next_url: str | None) -> str:
        entries = [
            {
                "id": int(photo.photo_id),
                "url": photo.page_path,
                "image": {"full": photo.image_path, "thumb": photo.thumb_path},
                "title": photo.title,
                "style": photo.style,
                "project": {"url": photo.project} if photo.project else None,
            }
            for photo in photos
        ]
        state = {"data": {"photos": entries, "pagination": {"next": next_url}}}
        return (
            '<script id="hz-ctx" type="application/json">'
            + json.dumps(state).replace("</", "<\\/")
            + "</script>"
        )

    def _card(self, photo: FakePhoto, kind: str) -> str:
        style = (
            f'<span class="hz-photo-card__style">{html.escape(photo.style)}</span>'
            if photo.style
            else ""
        )
        project = (
            f'<a class="hz-photo-card__project" href="{photo.project}">Project</a>'
            if photo.project
            else ""
        )
        # lazy-loaded thumbnail: src is a placeholder, data-src the thumbnail
        return (
            f'<div class="hz-photo-card" data-photo-id="{photo.photo_id}">'
            f'<a class="hz-photo-card__link" href="{photo.page_path}">'
            f'<img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=" '
            f'data-src="{photo.thumb_path}" alt="{html.escape(photo.title)}"></a>'
            f'<h3 class="hz-photo-card__title">{html.escape(photo.title)}</h3>'
            f"{style}{project}</div>"
        )


class SiteServer:
    """A running fake site whose content a test can replace (:meth:`use`)."""

    def __init__(self) -> None:
        self.server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
        self.site = FakeHouzz()
        self.server.expect_request(re.compile(".*")).respond_with_handler(self._handle)

    def _handle(self, request: Request) -> Response:
        return self.site.handle(request)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    def use(self, site: FakeHouzz) -> FakeHouzz:
        """Serve ``site`` from now on; returns it (with its ``base`` set)."""
        site.base = self.base
        self.site = site
        return site

    def __enter__(self) -> SiteServer:
        self.server.start()
        self.site.base = self.base
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.clear()
        if self.server.is_running():
            self.server.stop()


def standard_site() -> tuple[FakeHouzz, dict[str, FakePhoto]]:
    """The crawler's test site, with fresh photo ids; returns it and its photos by name.

    - living-room: page 1 JSON-LD (L0 L1 L2), page 2 embedded state (L3, L1 again, L4);
    - kitchen: page 1 markup only (K0, K1 a truncated JPEG), page 2 JSON-LD (K2, K3 whose
      image is 404) answered 429 with ``Retry-After: 1`` on its first hit, page 3 state (K4,
      K5 with the same bytes as K0);
    - bedroom: one JSON-LD page (B0, B1 whose image robots.txt disallows), no next link;
    - outdoor: a gallery robots.txt disallows.
    """
    names = ["L0", "L1", "L2", "L3", "L4", "K0", "K1", "K2", "K3", "K4", "K5", "B0", "B1", "O0"]
    ids = dict(zip(names, new_ids(len(names)), strict=True))
    styles = ["Scandinavian", "Mid-Century Modern", None]
    photos = {
        name: FakePhoto(
            ids[name],
            f"Photo {name}",
            style=styles[index % 3],
            project=f"/projects/project-{name.lower()}" if index % 2 == 0 else None,
            image=image_bytes(ids[name]),
        )
        for index, name in enumerate(names)
    }
    photos["K1"].image = BROKEN
    photos["K3"].image = None
    photos["K5"].image = photos["K0"].image
    photos["B1"].private = True
    p = photos
    site = FakeHouzz(
        galleries={
            "living-room": [
                GalleryPageSpec([p["L0"], p["L1"], p["L2"]], "json-ld"),
                GalleryPageSpec([p["L3"], p["L1"], p["L4"]], "state"),
            ],
            "kitchen": [
                GalleryPageSpec([p["K0"], p["K1"]], "markup"),
                GalleryPageSpec([p["K2"], p["K3"]], "json-ld"),
                GalleryPageSpec([p["K4"], p["K5"]], "state"),
            ],
            "bedroom": [GalleryPageSpec([p["B0"], p["B1"]], "json-ld")],
            "outdoor": [GalleryPageSpec([p["O0"]], "json-ld")],
        },
        throttle={"/photos/kitchen?pg=2": 1},
    )
    return site, photos
