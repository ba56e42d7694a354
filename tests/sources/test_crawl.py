"""The polite client against a real HTTP server on loopback: robots.txt, the per-host rate
limit (request times as the server saw them), 429/5xx backoff with Retry-After, the
User-Agent, the address policy. No database."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from modomo.hostlimit import LocalHostLimiter
from modomo.images import FetchError
from modomo.sources.crawl import (
    CrawlError,
    Disallowed,
    PoliteClient,
    Politeness,
    retry_after_seconds,
)
from tests.sources.site import FakeHouzz, FakePhoto, GalleryPageSpec, SiteServer, image_bytes

UA = "ModomoTest/1.0 (+https://example.invalid/bot; tests)"
TOLERANCE_S = 0.03
"""Server-side arrival times may be this much closer than the client's start times."""


@pytest.fixture(scope="module")
def server() -> Iterator[SiteServer]:
    with SiteServer() as running:
        yield running


def polite(**overrides: object) -> Politeness:
    values: dict[str, object] = {
        "user_agent": UA,
        "rate_per_host": 50.0,
        "max_retries": 3,
        "timeout_s": 5.0,
        "allow_private": True,
        "backoff_s": 0.05,
    }
    values.update(overrides)
    return Politeness(**values)  # type: ignore[arg-type]


def client(**overrides: object) -> PoliteClient:
    politeness = polite(**overrides)
    return PoliteClient(politeness, limiter=LocalHostLimiter(politeness.rate_per_host))


def small_site() -> FakeHouzz:
    photos = [
        FakePhoto(str(900 + n), f"Room {n}", image=image_bytes(f"crawl-{n}")) for n in range(3)
    ]
    photos.append(FakePhoto("999", "Hidden", image=image_bytes("crawl-hidden"), private=True))
    return FakeHouzz(
        galleries={
            "kitchen": [GalleryPageSpec(photos[:2]), GalleryPageSpec(photos[2:], "markup")],
            "outdoor": [GalleryPageSpec(photos[:1])],
        }
    )


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in zip(times, times[1:], strict=False)]


def assert_spaced(times: list[float], interval: float) -> None:
    """Requests started ``interval`` apart, as their arrival times at the server show: the
    whole run takes at least its share, and no two arrive much closer (a request delayed on
    its way makes its gap to the next one shorter)."""
    assert times[-1] - times[0] >= (len(times) - 1) * interval - TOLERANCE_S, gaps(times)
    assert min(gaps(times)) >= 0.6 * interval, gaps(times)


def test_disallowed_urls_are_never_requested(server: SiteServer) -> None:
    site = server.use(small_site())
    hidden = next(p for p in site.photos() if p.private)
    with client() as crawler:
        with pytest.raises(Disallowed, match="robots.txt disallows"):
            crawler.get_page(f"{site.base}/photos/outdoor")
        with pytest.raises(Disallowed):
            crawler.fetch_image(site.base + hidden.image_path)
        site.redirects["/old-kitchen"] = "/photos/outdoor?pg=1"
        with pytest.raises(Disallowed):  # a redirect into a disallowed path
            crawler.get_page(f"{site.base}/old-kitchen")
        assert crawler.get_page(f"{site.base}/photos/kitchen").status == 200
    targets = [h.target for h in site.hits]
    assert targets == ["/robots.txt", "/old-kitchen", "/photos/kitchen"]  # robots.txt once
    assert all(h.user_agent == UA for h in site.hits)


def test_requests_to_a_host_keep_the_rate(server: SiteServer) -> None:
    site = server.use(small_site())
    with client(rate_per_host=10.0) as crawler:
        for _ in range(3):
            crawler.get_page(f"{site.base}/photos/kitchen")
            for photo in list(site.photos())[:2]:
                crawler.fetch_image(site.base + photo.image_path)  # images count too
    times = [h.at for h in site.hits]
    assert len(times) == 10
    assert_spaced(times, 0.1)


def test_robots_crawl_delay_slows_the_host_down(server: SiteServer) -> None:
    site = server.use(small_site())
    site.robots = "User-agent: modomotest\nCrawl-delay: 0.3\nDisallow: /private\n"
    with client(rate_per_host=100.0) as crawler:
        for _ in range(3):
            crawler.get_page(f"{site.base}/photos/kitchen")
    assert_spaced([h.at for h in site.hits[1:]], 0.3)


def test_429_is_retried_after_its_retry_after(server: SiteServer) -> None:
    site = server.use(small_site())
    site.throttle["/photos/kitchen?pg=2"] = 1
    with client() as crawler:
        page = crawler.get_page(f"{site.base}/photos/kitchen?pg=2")
    assert page.status == 200 and "Room 2" in page.text
    hits = [h for h in site.hits if h.target == "/photos/kitchen?pg=2"]
    assert [h.status for h in hits] == [429, 200]
    assert hits[1].at - hits[0].at >= 1.0 - TOLERANCE_S


def test_5xx_backs_off_and_gives_up_after_the_retries(server: SiteServer) -> None:
    site = server.use(small_site())
    site.errors["/photos/kitchen"] = [503, 502]
    site.errors["/photos/kitchen?pg=2"] = [500] * 10
    with client(max_retries=2) as crawler:
        assert crawler.get_page(f"{site.base}/photos/kitchen").status == 200
        with pytest.raises(CrawlError, match="HTTP 500 .* after 3 attempts") as failed:
            crawler.get_page(f"{site.base}/photos/kitchen?pg=2")
    assert failed.value.status == 500
    first = [h.at for h in site.hits if h.target == "/photos/kitchen"]
    assert gaps(first)[0] >= 0.05 - TOLERANCE_S and gaps(first)[1] >= 0.1 - TOLERANCE_S
    assert sum(1 for h in site.hits if h.target == "/photos/kitchen?pg=2") == 3


def test_a_retry_after_longer_than_allowed_is_not_waited_for(server: SiteServer) -> None:
    site = server.use(small_site())
    site.throttle["/photos/kitchen"] = 3600
    with client(max_wait_s=10.0) as crawler, pytest.raises(CrawlError, match="wait 3600 s"):
        crawler.get_page(f"{site.base}/photos/kitchen")


def test_robots_txt_missing_allows_all_unreachable_allows_nothing(server: SiteServer) -> None:
    site = server.use(small_site())
    site.robots = None  # 404
    with client() as crawler:
        assert crawler.get_page(f"{site.base}/photos/outdoor").status == 200
    site = server.use(small_site())
    site.errors["/robots.txt"] = [500] * 10
    unreachable = pytest.raises(Disallowed, match="robots.txt of .* unreachable .*HTTP 500")
    with client(max_retries=1) as crawler, unreachable:
        crawler.get_page(f"{site.base}/photos/kitchen")
    assert [h.target for h in site.hits] == ["/robots.txt", "/robots.txt"]


def test_private_addresses_are_refused_unless_allowed(server: SiteServer) -> None:
    site = server.use(small_site())
    refused = pytest.raises(Disallowed, match="refused: 127.0.0.1 is a loopback address")
    with client(allow_private=False) as crawler, refused:
        crawler.get_page(f"{site.base}/photos/kitchen")
    assert site.hits == []


def test_images_go_through_the_guarded_fetch(server: SiteServer) -> None:
    site = server.use(small_site())
    photo = next(iter(site.photos()))
    site.errors[photo.image_path] = [503]
    gone = FakePhoto("404", "Gone", image=None)
    site.galleries["kitchen"][0].photos.append(gone)
    with client() as crawler:
        assert crawler.fetch_image(site.base + photo.image_path) == photo.image
        with pytest.raises(FetchError, match="HTTP 404 from"):
            crawler.fetch_image(site.base + gone.image_path)
        with pytest.raises(FetchError, match="not an image"):
            crawler.fetch_image(f"{site.base}/photos/kitchen")
    assert [h.status for h in site.hits if h.path == photo.image_path] == [503, 200]


def test_pages_must_be_pages(server: SiteServer) -> None:
    site = server.use(small_site())
    photo = next(iter(site.photos()))
    with client() as crawler, pytest.raises(CrawlError, match="not a page: content-type image"):
        crawler.get_page(site.base + photo.image_path)


def test_retry_after_values() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30
    assert retry_after_seconds(format_datetime(now - timedelta(seconds=30), usegmt=True), now) == 0
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds(None) is None


def test_local_limiter_spaces_starts_and_honours_holds() -> None:
    clock = [0.0]
    limiter = LocalHostLimiter(
        2.0, clock=lambda: clock[0], sleep=lambda s: clock.__setitem__(0, clock[0] + s)
    )
    starts = []
    for _ in range(3):
        limiter.acquire("a:80", 10)
        starts.append(clock[0])
    limiter.acquire("b:80", 10)  # another host does not wait
    starts.append(clock[0])
    limiter.hold("a:80", 2.0)
    limiter.acquire("a:80", 10)
    starts.append(clock[0])
    assert starts == [0.0, 0.5, 1.0, 1.0, 3.0]
