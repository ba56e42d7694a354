"""The Houzz site profile: where the galleries are and where a page states each photo's facts.

Everything the crawler knows about Houzz's markup is in :data:`HOUZZ`, one declarative value:
when the site changes its pages, this is the one place to edit. The parser
(:mod:`modomo.sources.gallery`) and the crawl (:mod:`modomo.sources.houzz`) are generic.

The real site cannot be reached from the machines this was built on, so the shape below is a
plausible, documented one, and the tests generate pages in exactly this shape:

- A room type's gallery is ``{base}{path}`` (``MODOMO_HOUZZ_BASE_URL`` + ``galleries[room]``,
  e.g. ``https://www.houzz.com/photos/living-room``); page N > 1 adds ``?pg=N``. The page
  may name its next page (``<link rel="next">``, ``<a rel="next">`` or the state's
  ``pagination.next``); an empty page ends the gallery.
- Structured data, read first:
  JSON-LD ``<script type="application/ld+json">`` holding schema.org ``ImageObject`` items
  (anywhere: an ``ItemList``, a ``CollectionPage``, an ``@graph``) with ``identifier``,
  ``url`` (the photo page), ``contentUrl`` (the full-size image), ``name``, ``genre``
  (style) and ``isPartOf.url`` (the project);
  the embedded state ``<script id="hz-ctx" type="application/json">`` whose
  ``data.photos`` list holds ``{id, url, image: {full, thumb}, title, style, project: {url}}``
  and ``data.pagination.next``;
  Open Graph tags (``og:image``, ``og:title``, ``og:url``) on a single photo's page.
- Markup, for what structured data leaves out: photo cards
  ``<div class="hz-photo-card" data-photo-id="…">`` holding ``<a class="hz-photo-card__link">``
  (the photo page), ``<img data-src|srcset|src alt>``, ``.hz-photo-card__title``,
  ``.hz-photo-card__style`` and ``<a class="hz-photo-card__project">``.
- A photo's stable id: its stated id, else the number after ``~`` in its page URL
  (``/photos/bright-scandinavian-living-room-phvw-vp~12345``).
- Thumbnails (``/fimgs/…-w360-h360-b0-p0--.jpg``) name their full-size image by a rewrite
  (``/simgs/…-home-design.jpg``).

Selectors are small CSS: ``tag``, ``.class``, ``#id``, ``[attr]``, ``[attr=v]``,
``[attr~=v]``, ``[attr^=v]``, ``[attr*=v]``, descendants (``a b``) and alternatives
(``a, b``). JSON paths are dotted keys (``image.full``; a list step takes its first item).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from urllib.parse import urlencode

__all__ = ["HOUZZ", "CardMarkup", "PhotoFields", "SiteProfile"]


@dataclass(frozen=True)
class PhotoFields:
    """Where a JSON object (a JSON-LD item, a state entry) states a photo's facts: for each
    fact, dotted paths tried in order; the first non-empty string wins."""

    id: tuple[str, ...]
    """The photo's stable id, or a URL holding it (matched by ``photo_id_pattern``)."""
    image: tuple[str, ...]
    """The full-size image URL (relative URLs are resolved against the page)."""
    title: tuple[str, ...] = ()
    style: tuple[str, ...] = ()
    project: tuple[str, ...] = ()
    """The project (portfolio) page the photo belongs to."""
    link: tuple[str, ...] = ()
    """The photo's own page."""


@dataclass(frozen=True)
class CardMarkup:
    """The markup fallback: one element per photo and selectors inside it."""

    card: str
    """Selector of a photo card."""
    id_attrs: tuple[str, ...]
    """Attributes of the card stating the photo id."""
    image: str
    """Selector of the card's image element."""
    image_attrs: tuple[str, ...]
    """Attributes of the image element holding its URL, in order (lazy-loading ones first,
    as ``src`` is often a placeholder); ``…srcset`` attributes give their largest candidate."""
    title: str = ""
    """Selector of the title's element (its text); the image's ``alt`` otherwise."""
    style: str = ""
    project: str = ""
    """Selector of the link (``href``) to the photo's project."""
    link: str = ""
    """Selector of the link (``href``) to the photo's own page."""


@dataclass(frozen=True)
class SiteProfile:
    """A photo site's galleries and where its pages state each photo (see the module text).

    Attributes:
        name: the site's name, also the scenes' ``source``.
        galleries: our room type (API spelling: ``living-room``) -> the gallery's path.
        page_param: the query parameter of a gallery page's number.
        first_page: the number of a gallery's first page (which has no ``page_param``).
        max_pages: pages read per gallery at most (a guard against endless pagination).
        jsonld_types: schema.org ``@type``s of photo items in JSON-LD.
        jsonld: where a JSON-LD photo item states each fact.
        state_scripts: selectors of ``<script>`` elements holding the page's JSON state.
        state_variables: JavaScript globals assigned the state in a script
            (``window.__STATE__ = {…}``), for pages that embed it that way.
        state_photos: dotted paths of the photo list in the state.
        state: where a state photo entry states each fact.
        state_next: dotted paths of the next page's URL in the state.
        next_link: selector of the next page's link (``href``).
        cards: the markup fallback.
        og_image, og_title, og_url: Open Graph properties of a single photo's page.
        photo_id_pattern: regular expression whose first group is the photo id in a photo
            page URL.
        image_rewrites: ``(pattern, replacement)`` regular-expression substitutions that turn
            a thumbnail URL into the full-size image URL (applied to every image URL).
    """

    name: str
    galleries: Mapping[str, str]
    page_param: str
    first_page: int
    max_pages: int
    jsonld_types: tuple[str, ...]
    jsonld: PhotoFields
    state_scripts: tuple[str, ...]
    state_variables: tuple[str, ...]
    state_photos: tuple[str, ...]
    state: PhotoFields
    state_next: tuple[str, ...]
    next_link: str
    cards: CardMarkup
    og_image: str
    og_title: str
    og_url: str
    photo_id_pattern: str
    image_rewrites: tuple[tuple[str, str], ...]

    def page_url(self, base_url: str, room_type: str, page: int) -> str:
        """The URL of page ``page`` of a room type's gallery on the site at ``base_url``.

        Raises:
            KeyError: the profile has no gallery for ``room_type``.
        """
        url = base_url.rstrip("/") + self.galleries[room_type]
        if page == self.first_page:
            return url
        return f"{url}?{urlencode({self.page_param: page})}"


HOUZZ = SiteProfile(
    name="houzz",
    galleries=MappingProxyType(
        {
            "living-room": "/photos/living-room",
            "bedroom": "/photos/bedroom",
            "kitchen": "/photos/kitchen",
            "bathroom": "/photos/bathroom",
            "dining-room": "/photos/dining-room",
            "home-office": "/photos/home-office",
            "kids-room": "/photos/kids-room",
            "outdoor": "/photos/outdoor",
        }
    ),
    page_param="pg",
    first_page=1,
    max_pages=2000,
    jsonld_types=("ImageObject", "Photograph"),
    jsonld=PhotoFields(
        id=("identifier.value", "identifier", "url", "@id", "mainEntityOfPage"),
        image=("contentUrl", "image.contentUrl", "image.url", "image"),
        title=("name", "caption", "headline"),
        style=("genre",),
        project=("isPartOf.url", "isPartOf.@id", "isPartOf"),
        link=("url", "mainEntityOfPage", "@id"),
    ),
    state_scripts=("script#hz-ctx", "script[data-hz-state]"),
    state_variables=("window.__HZ_STATE__",),
    state_photos=("data.photos", "photos", "data.gallery.photos"),
    state=PhotoFields(
        id=("id", "photoId", "url"),
        image=("image.full", "images.full", "imageUrl", "image.url", "image"),
        title=("title", "name"),
        style=("style", "styleName"),
        project=("project.url", "projectUrl"),
        link=("url", "photoUrl"),
    ),
    state_next=("data.pagination.next", "pagination.next", "data.nextPageUrl"),
    next_link="link[rel~=next], a[rel~=next]",
    cards=CardMarkup(
        card=".hz-photo-card, [data-photo-id]",
        id_attrs=("data-photo-id", "data-id"),
        image="img",
        image_attrs=("data-src", "data-original", "data-srcset", "srcset", "src"),
        title=".hz-photo-card__title",
        style=".hz-photo-card__style",
        project="a.hz-photo-card__project",
        link="a.hz-photo-card__link",
    ),
    og_image="og:image",
    og_title="og:title",
    og_url="og:url",
    photo_id_pattern=r"~(\d+)(?:$|[/?#])",
    image_rewrites=(
        (r"/fimgs/", "/simgs/"),
        (r"-w\d+-h\d+-b\d+-p\d+--(?=\.\w+$)", "-home-design"),
    ),
)
"""The Houzz profile (the shape is documented in this module's text)."""
