"""Reading a photo gallery page with a site profile: the photos it lists and its next page.

Structured data is read first, in this order: JSON-LD items, the page's embedded JSON state,
then the markup's photo cards; a photo stated by several of them is one photo, each fact
taken from the first that states it (so markup fills only what structured data leaves out).
A page that lists no photo but is a single photo's page gives that photo from its Open Graph
tags. Photos with no id or no image URL are left out (and counted).

No network and no database here: text in, :class:`GalleryPage` out. The HTML is read with the
standard library's lenient :class:`html.parser.HTMLParser` into a small element tree, and the
profile's selectors are a small CSS subset (see :mod:`modomo.sources.houzz_profile`).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, fields, replace
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin, urlsplit

from modomo.sources.houzz_profile import PhotoFields, SiteProfile

__all__ = ["Element", "GalleryPage", "Photo", "parse_gallery", "parse_html", "select"]

MAX_TEXT = 500
"""Characters kept of a stated title or style."""
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class Photo:
    """A photo as a gallery page states it.

    Attributes:
        photo_id: the site's stable id of the photo.
        image_url: the absolute URL of its full-size image.
        title, style: as stated (whitespace collapsed), if stated.
        project_url: the absolute URL of its project page, if stated.
        photo_url: the absolute URL of its own page, if stated.
        found_in: which part of the page listed it: ``json-ld``, ``state``, ``markup``, ``og``.
    """

    photo_id: str
    image_url: str
    title: str | None = None
    style: str | None = None
    project_url: str | None = None
    photo_url: str | None = None
    found_in: str = "markup"


@dataclass(frozen=True)
class GalleryPage:
    """What one gallery page holds.

    Attributes:
        url: the page's URL.
        photos: the photos in page order, each once.
        next_url: the next page's absolute URL when the page names one.
        dropped: photo entries left out for lack of an id or an image URL.
    """

    url: str
    photos: tuple[Photo, ...]
    next_url: str | None = None
    dropped: int = 0


def parse_gallery(text: str, url: str, profile: SiteProfile) -> GalleryPage:
    """Read the photos and the next page's URL from a gallery page.

    Args:
        text: the page's HTML.
        url: the page's URL (relative links are resolved against it).
        profile: where the site states what (e.g. :data:`~modomo.sources.houzz_profile.HOUZZ`).
    """
    root = parse_html(text)
    reader = _Reader(url, profile)
    found: dict[str, Photo] = {}
    for partial in (
        *reader.from_jsonld(root),
        *reader.from_state(root),
        *reader.from_cards(root),
    ):
        if partial is None:
            continue
        earlier = found.get(partial.photo_id)
        found[partial.photo_id] = partial if earlier is None else _fill(earlier, partial)
    if not found and (single := reader.from_og(root)) is not None:
        found[single.photo_id] = single
    photos = tuple(p for p in found.values() if p.image_url)
    return GalleryPage(
        url=url,
        photos=photos,
        next_url=reader.next_url(root),
        dropped=reader.dropped + len(found) - len(photos),
    )


def _fill(photo: Photo, other: Photo) -> Photo:
    """``photo`` with the facts it lacks taken from ``other``."""
    gaps = {
        f.name: getattr(other, f.name)
        for f in fields(Photo)
        if not getattr(photo, f.name) and getattr(other, f.name)
    }
    return replace(photo, **gaps) if gaps else photo


class _Reader:
    """The profile's rules applied to one page."""

    def __init__(self, url: str, profile: SiteProfile) -> None:
        self.url = url
        self.profile = profile
        self.id_pattern = re.compile(profile.photo_id_pattern)
        self.dropped = 0

    # --- values ---------------------------------------------------------------------------

    def absolute(self, value: str | None) -> str | None:
        """``value`` resolved against the page, if it is an http(s) URL then."""
        if not value:
            return None
        joined = urljoin(self.url, value.strip())
        return joined if urlsplit(joined).scheme in ("http", "https") else None

    def image(self, value: str | None) -> str | None:
        url = self.absolute(value)
        if url is None:
            return None
        for pattern, replacement in self.profile.image_rewrites:
            url = re.sub(pattern, replacement, url)
        return url

    def photo_id(self, *candidates: str | None) -> str | None:
        """The first candidate that is an id, or a URL with an id in it."""
        for value in candidates:
            if not value:
                continue
            value = value.strip()
            if _ID.match(value):
                return value
            match = self.id_pattern.search(value)
            if match:
                return match.group(1)
        return None

    def photo(
        self,
        found_in: str,
        ids: Iterable[str | None],
        image: str | None,
        title: str | None = None,
        style: str | None = None,
        project: str | None = None,
        link: str | None = None,
    ) -> Photo | None:
        link_url = self.absolute(link)
        photo_id = self.photo_id(*ids, link_url)
        if photo_id is None:
            self.dropped += 1
            return None
        return Photo(
            photo_id=photo_id,
            image_url=self.image(image) or "",
            title=_text(title),
            style=_text(style),
            project_url=self.absolute(project),
            photo_url=link_url,
            found_in=found_in,
        )

    def from_object(self, found_in: str, item: dict[str, Any], where: PhotoFields) -> Photo | None:
        return self.photo(
            found_in,
            [_first(item, (path,)) for path in where.id],
            _first(item, where.image),
            _first(item, where.title),
            _first(item, where.style),
            _first(item, where.project),
            _first(item, where.link),
        )

    # --- sources --------------------------------------------------------------------------

    def from_jsonld(self, root: Element) -> list[Photo | None]:
        types = set(self.profile.jsonld_types)
        photos: list[Photo | None] = []
        for script in select(root, 'script[type="application/ld+json"]'):
            data = _json(script.text(collapse=False))
            for item in _objects(data):
                kind = item.get("@type")
                kinds = {kind} if isinstance(kind, str) else set(kind or ())
                if kinds & types:
                    photos.append(self.from_object("json-ld", item, self.profile.jsonld))
        return photos

    def states(self, root: Element) -> Iterator[Any]:
        for selector in self.profile.state_scripts:
            for script in select(root, selector):
                data = _json(script.text(collapse=False))
                if data is not None:
                    yield data
        for variable in self.profile.state_variables:
            assignment = re.compile(re.escape(variable) + r"\s*=\s*")
            for script in select(root, "script"):
                text = script.text(collapse=False)
                match = assignment.search(text)
                if match is None:
                    continue
                try:
                    data, _ = json.JSONDecoder().raw_decode(text, match.end())
                except ValueError:
                    continue
                yield data

    def from_state(self, root: Element) -> list[Photo | None]:
        photos: list[Photo | None] = []
        for state in self.states(root):
            for path in self.profile.state_photos:
                entries = _path(state, path, first_of_list=False)
                if isinstance(entries, list):
                    photos.extend(
                        self.from_object("state", entry, self.profile.state)
                        for entry in entries
                        if isinstance(entry, dict)
                    )
                    break
        return photos

    def from_cards(self, root: Element) -> list[Photo | None]:
        markup = self.profile.cards
        photos: list[Photo | None] = []
        for card in select(root, markup.card):
            images = select(card, markup.image)
            image = _image_attr(images[0], markup.image_attrs) if images else None
            title = _text_of(card, markup.title) or (images[0].attrs.get("alt") if images else None)
            photos.append(
                self.photo(
                    "markup",
                    [card.attrs.get(name) for name in markup.id_attrs],
                    image,
                    title,
                    _text_of(card, markup.style),
                    _href_of(card, markup.project),
                    _href_of(card, markup.link),
                )
            )
        return photos

    def from_og(self, root: Element) -> Photo | None:
        """The photo of a single photo's page: only when its URL names a photo id (a gallery
        page has Open Graph tags too, for its cover image)."""
        og = {
            meta.attrs.get("property") or meta.attrs.get("name"): meta.attrs.get("content")
            for meta in select(root, "meta[property], meta[name]")
        }
        link = self.absolute(og.get(self.profile.og_url)) or self.url
        if self.id_pattern.search(link) is None:
            return None
        image = self.image(og.get(self.profile.og_image))
        if not image:
            return None
        return self.photo("og", [], image, og.get(self.profile.og_title), link=link)

    def next_url(self, root: Element) -> str | None:
        for state in self.states(root):
            found = self.absolute(_first(state, self.profile.state_next))
            if found:
                return found
        for link in select(root, self.profile.next_link):
            found = self.absolute(link.attrs.get("href"))
            if found:
                return found
        return None


# --------------------------------------------------------------------------------------
# JSON helpers


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _objects(data: Any) -> Iterator[dict[str, Any]]:
    """Every JSON object in ``data``, depth first (JSON-LD nests items anywhere)."""
    stack = [data]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            yield value
            stack.extend(reversed(list(value.values())))
        elif isinstance(value, list):
            stack.extend(reversed(value))


def _path(data: Any, path: str, *, first_of_list: bool = True) -> Any:
    value = data
    for key in path.split("."):
        if isinstance(value, list) and value:
            value = value[0]
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    if first_of_list and isinstance(value, list) and value:
        value = value[0]
    return value


def _first(data: Any, paths: Iterable[str]) -> str | None:
    """The first of ``paths`` whose value is a non-empty string (or a number)."""
    for path in paths:
        value = _path(data, path)
        if isinstance(value, bool):
            continue
        if isinstance(value, int | float):
            return str(value)
        if isinstance(value, str) and value.strip():
            return value
    return None


def _text(value: str | None) -> str | None:
    if not value:
        return None
    text = _SPACE.sub(" ", value).strip()
    return text[:MAX_TEXT] or None


# --------------------------------------------------------------------------------------
# markup helpers


def _text_of(scope: Element, selector: str) -> str | None:
    if not selector:
        return None
    found = select(scope, selector)
    return found[0].text() if found else None


def _href_of(scope: Element, selector: str) -> str | None:
    if not selector:
        return None
    found = select(scope, selector)
    return found[0].attrs.get("href") if found else None


def _image_attr(image: Element, names: Iterable[str]) -> str | None:
    for name in names:
        value = (image.attrs.get(name) or "").strip()
        if name.endswith("srcset"):
            value = _largest_candidate(value)
        if value and not value.startswith("data:"):
            return value
    return None


def _largest_candidate(srcset: str) -> str:
    """The URL of the largest candidate of a ``srcset`` (by its ``w`` or ``x`` descriptor)."""
    best, best_size = "", -1.0
    for candidate in srcset.split(","):
        parts = candidate.split()
        if not parts:
            continue
        size = 1.0
        if len(parts) > 1 and parts[1][:-1].replace(".", "", 1).isdigit():
            size = float(parts[1][:-1])
        if size > best_size:
            best, best_size = parts[0], size
    return best


# --------------------------------------------------------------------------------------
# a small element tree and CSS subset


@dataclass(eq=False)
class Element:
    """An HTML element: its tag, attributes (names lower case) and children."""

    tag: str
    attrs: dict[str, str] = field(default_factory=dict)
    children: list[Element | str] = field(default_factory=list)
    parent: Element | None = field(default=None, repr=False)

    def iter(self) -> Iterator[Element]:
        """The element's descendants in document order (not the element itself)."""
        stack = [c for c in reversed(self.children) if isinstance(c, Element)]
        while stack:
            element = stack.pop()
            yield element
            stack.extend(c for c in reversed(element.children) if isinstance(c, Element))

    def text(self, *, collapse: bool = True) -> str:
        """The text inside the element; with ``collapse``, whitespace runs become one space."""
        parts: list[str] = []
        stack: list[Element | str] = [self]
        while stack:
            node = stack.pop()
            if isinstance(node, str):
                parts.append(node)
            else:
                stack.extend(reversed(node.children))
        text = "".join(parts)
        return _SPACE.sub(" ", text).strip() if collapse else text

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())


_VOID = frozenset(
    "area base br col embed hr img input link meta param source track wbr".split()  # noqa: SIM905
)


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#document")
        self.open: list[Element] = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {k: v or "" for k, v in attrs}, parent=self.open[-1])
        self.open[-1].children.append(element)
        if tag not in _VOID:
            self.open.append(element)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {k: v or "" for k, v in attrs}, parent=self.open[-1])
        self.open[-1].children.append(element)

    def handle_endtag(self, tag: str) -> None:
        # Lenient like a browser: close up to the matching open element, ignore strays.
        for depth in range(len(self.open) - 1, 0, -1):
            if self.open[depth].tag == tag:
                del self.open[depth:]
                return

    def handle_data(self, data: str) -> None:
        self.open[-1].children.append(data)


def parse_html(text: str) -> Element:
    """Parse HTML leniently into an element tree; returns the document's root."""
    builder = _TreeBuilder()
    builder.feed(text)
    builder.close()
    return builder.root


@dataclass(frozen=True)
class _Compound:
    tag: str | None
    id: str | None
    classes: tuple[str, ...]
    attrs: tuple[tuple[str, str, str], ...]

    def matches(self, element: Element) -> bool:
        if self.tag is not None and element.tag != self.tag:
            return False
        if self.id is not None and element.attrs.get("id") != self.id:
            return False
        if self.classes and not set(self.classes) <= element.classes:
            return False
        for name, op, expected in self.attrs:
            value = element.attrs.get(name)
            if value is None:
                return False
            if op == "=" and value != expected:
                return False
            if op == "~=" and expected not in value.split():
                return False
            if op == "^=" and not value.startswith(expected):
                return False
            if op == "*=" and expected not in value:
                return False
        return True


_SIMPLE = re.compile(
    r"""\.(?P<cls>[\w-]+)|\#(?P<id>[\w-]+)|\[\s*(?P<attr>[\w:-]+)\s*"""
    r"""(?:(?P<op>[~^*]?=)\s*(?:"(?P<dq>[^"]*)"|'(?P<sq>[^']*)'|(?P<bare>[^\]\s]+))\s*)?\]"""
)
_TAG = re.compile(r"^(\*|[a-zA-Z][\w-]*)")


@functools.lru_cache(maxsize=256)
def _parse_selector(selector: str) -> tuple[tuple[_Compound, ...], ...]:
    """``a.b [c=d], e`` -> alternatives, each a chain of compounds joined by descendance.

    Raises:
        ValueError: the selector uses something outside the supported subset.
    """
    alternatives = []
    for alternative in selector.split(","):
        chain = []
        for part in re.findall(r"(?:\[[^\]]*\]|[^\s\[])+", alternative):
            tag_match = _TAG.match(part)
            tag = tag_match.group(1).lower() if tag_match else None
            rest = part[tag_match.end() :] if tag_match else part
            classes, attrs, element_id, position = [], [], None, 0
            for match in _SIMPLE.finditer(rest):
                if match.start() != position:
                    break
                position = match.end()
                if match["cls"]:
                    classes.append(match["cls"])
                elif match["id"]:
                    element_id = match["id"]
                else:
                    value = match["dq"] if match["dq"] is not None else match["sq"]
                    value = value if value is not None else (match["bare"] or "")
                    attrs.append((match["attr"].lower(), match["op"] or "", value))
            if position != len(rest):
                raise ValueError(f"unsupported selector {selector!r} (at {part!r})")
            chain.append(
                _Compound(None if tag == "*" else tag, element_id, tuple(classes), tuple(attrs))
            )
        if not chain:
            raise ValueError(f"empty selector in {selector!r}")
        alternatives.append(tuple(chain))
    return tuple(alternatives)


def _chain_matches(element: Element, chain: tuple[_Compound, ...], scope: Element) -> bool:
    if not chain[-1].matches(element):
        return False
    ancestor = element.parent
    for compound in reversed(chain[:-1]):
        while ancestor is not None and ancestor is not scope and not compound.matches(ancestor):
            ancestor = ancestor.parent
        if ancestor is None or ancestor is scope:
            return False
        ancestor = ancestor.parent
    return True


def select(scope: Element, selector: str) -> list[Element]:
    """The elements below ``scope`` that match ``selector``, in document order, each once.

    Raises:
        ValueError: the selector uses something outside the supported subset.
    """
    alternatives = _parse_selector(selector)
    return [
        element
        for element in scope.iter()
        if any(_chain_matches(element, chain, scope) for chain in alternatives)
    ]
