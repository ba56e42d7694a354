"""Reading gallery pages with the Houzz profile: structured data first, markup as fallback,
Open Graph for a single photo, pagination; the small selector subset; the profile itself.
No network, no services."""

from __future__ import annotations

import json

import pytest

from modomo.sources.gallery import parse_gallery, parse_html, select
from modomo.sources.houzz import ROOM_TYPES, check_room_types, scene_room_type
from modomo.sources.houzz_profile import HOUZZ
from tests.sources.site import FakeHouzz, FakePhoto, GalleryPageSpec

BASE = "https://www.houzz.example"


def site(kind: str, pages: int = 2) -> FakeHouzz:
    photos = [
        FakePhoto("101", "Bright Living Room", "Scandinavian", "/projects/sunny-flat"),
        FakePhoto("102", "Dark Den", None),
    ]
    fake = FakeHouzz(
        galleries={"living-room": [GalleryPageSpec(photos, kind) for _ in range(pages)]}
    )
    fake.base = BASE
    return fake


@pytest.mark.parametrize("kind", ["json-ld", "state", "markup"])
def test_each_kind_of_page_gives_the_same_photos(kind: str) -> None:
    fake = site(kind)
    url = fake.page_url("living-room", 1)
    page = parse_gallery(fake.page_html("living-room", 1), url, HOUZZ)

    assert [p.photo_id for p in page.photos] == ["101", "102"]
    first, second = page.photos
    assert first.image_url == f"{BASE}/simgs/pictures/bright-living-room-101-home-design.jpg"
    assert first.title == "Bright Living Room"
    assert first.style == "Scandinavian"  # JSON-LD states none: the card fills it in
    assert first.project_url == f"{BASE}/projects/sunny-flat"
    assert first.photo_url == f"{BASE}/photos/bright-living-room-phvw-vp~101"
    assert first.found_in == kind
    assert second.style is None and second.project_url is None
    assert page.next_url == f"{BASE}/photos/living-room?pg=2"
    assert page.dropped == 0


@pytest.mark.parametrize("kind", ["json-ld", "state", "markup"])
def test_last_page_names_no_next_page(kind: str) -> None:
    fake = site(kind)
    page = parse_gallery(fake.page_html("living-room", 2), fake.page_url("living-room", 2), HOUZZ)
    assert page.next_url is None and len(page.photos) == 2


def test_markup_thumbnails_become_full_size_and_srcset_gives_the_largest() -> None:
    text = """
    <div class="hz-photo-card" data-photo-id="7">
      <img srcset="/fimgs/pictures/a-7-w360-h360-b0-p0--.jpg 360w,
                   /fimgs/pictures/a-7-w720-h720-b0-p0--.jpg 720w" alt="  A   room ">
    </div>
    <div class="hz-photo-card">
      <a class="hz-photo-card__link" href="/photos/b-phvw-vp~8?from=gallery"><img src="/b.jpg"></a>
    </div>
    <div class="hz-photo-card"><img src="/no-id.jpg"></div>
    <div class="hz-photo-card" data-photo-id="9"></div>
    """
    page = parse_gallery(text, f"{BASE}/photos/kitchen", HOUZZ)
    assert [(p.photo_id, p.image_url, p.title) for p in page.photos] == [
        ("7", f"{BASE}/simgs/pictures/a-7-home-design.jpg", "A room"),
        ("8", f"{BASE}/b.jpg", None),
    ]
    assert page.dropped == 2  # one without an id, one without an image


def test_jsonld_in_a_graph_with_a_property_value_identifier() -> None:
    data = {
        "@context": "https://schema.org",
        "@graph": [
            {"@type": "WebPage", "name": "Bathrooms"},
            {
                "@type": ["ImageObject", "Photograph"],
                "identifier": {"@type": "PropertyValue", "value": 55},
                "contentUrl": "https://st.example/simgs/pictures/x.jpg",
                "caption": "Marble bath",
                "genre": "Modern",
            },
            {"@type": "ImageObject", "url": "https://www.houzz.example/photos/y-phvw-vp~56"},
        ],
    }
    text = f'<script type="application/ld+json">{json.dumps(data)}</script><p>broken <b>html'
    page = parse_gallery(text, f"{BASE}/photos/bathroom", HOUZZ)
    assert [(p.photo_id, p.title, p.style) for p in page.photos] == [
        ("55", "Marble bath", "Modern")
    ]
    assert page.dropped == 1  # 56 has no image URL


def test_state_assigned_to_a_window_variable() -> None:
    state = {"photos": [{"photoId": "77", "imageUrl": "/simgs/pictures/z.jpg", "name": "Z"}]}
    text = f"<script>var x = 1; window.__HZ_STATE__ = {json.dumps(state)};</script>"
    page = parse_gallery(text, f"{BASE}/photos/bedroom", HOUZZ)
    assert [(p.photo_id, p.image_url, p.title, p.found_in) for p in page.photos] == [
        ("77", f"{BASE}/simgs/pictures/z.jpg", "Z", "state")
    ]


def test_a_single_photo_page_is_read_from_open_graph() -> None:
    text = """<head>
      <meta property="og:url" content="https://www.houzz.example/photos/nook-phvw-vp~4242">
      <meta property="og:image" content="https://st.example/fimgs/pictures/nook-w360-h360-b0-p0--.jpg">
      <meta property="og:title" content="Reading nook">
    </head>"""
    page = parse_gallery(text, f"{BASE}/photos/nook-phvw-vp~4242", HOUZZ)
    assert [(p.photo_id, p.image_url, p.title, p.found_in) for p in page.photos] == [
        ("4242", "https://st.example/simgs/pictures/nook-home-design.jpg", "Reading nook", "og")
    ]


def test_a_gallery_cover_image_is_not_a_photo() -> None:
    # an empty gallery page still has Open Graph tags, for its cover: no photo in it
    fake = FakeHouzz(galleries={"kitchen": [GalleryPageSpec([], "markup")]})
    fake.base = BASE
    page = parse_gallery(fake.page_html("kitchen", 1), fake.page_url("kitchen", 1), HOUZZ)
    assert page.photos == () and page.next_url is None


def test_selector_subset() -> None:
    root = parse_html(
        '<div id="a" class="x y"><p data-k="v w"><a rel="next nofollow" href="/n">n</a></p>'
        '<img src="/i"><br></div><span class="x">s</span>'
    )
    assert [e.tag for e in select(root, ".x")] == ["div", "span"]
    assert [e.tag for e in select(root, "div.x.y p a")] == ["a"]
    assert [e.tag for e in select(root, "#a img, span")] == ["img", "span"]
    assert [e.tag for e in select(root, "[data-k~=w] [rel~=next]")] == ["a"]
    assert [e.tag for e in select(root, '[href^="/"]')] == ["a"]
    assert [e.tag for e in select(root, "[src*=i]")] == ["img"]
    for outside in ("p > a", "p:first-child", "a + b"):
        with pytest.raises(ValueError, match="unsupported selector"):
            select(root, outside)


def test_the_profile_covers_every_room_type() -> None:
    assert ROOM_TYPES == (
        "living-room",
        "bedroom",
        "kitchen",
        "bathroom",
        "dining-room",
        "home-office",
        "kids-room",
        "outdoor",
    )
    assert [scene_room_type(r) for r in ROOM_TYPES] == [
        "living_room",
        "bedroom",
        "kitchen",
        "bathroom",
        "dining_room",
        "home_office",
        "kids_room",
        "outdoor",
    ]
    assert HOUZZ.page_url(BASE + "/", "kids-room", 1) == f"{BASE}/photos/kids-room"
    assert HOUZZ.page_url(BASE, "kids-room", 3) == f"{BASE}/photos/kids-room?pg=3"
    assert check_room_types(None) == list(ROOM_TYPES)
    assert check_room_types(["kitchen", "bedroom", "kitchen"]) == ["kitchen", "bedroom"]
    with pytest.raises(ValueError, match="unknown room type 'garage'"):
        check_room_types(["garage"])
