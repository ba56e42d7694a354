"""The Houzz crawl in-process against a fake site on loopback, with the real PostgreSQL:
scenes and their facts, failures with reasons, robots.txt, 429, duplicates, the limit, re-runs,
resuming from the cursor after a crash, cancel."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select

from modomo.config import Settings, get_settings
from modomo.db.models import Scene
from modomo.db.session import session_scope
from modomo.hostlimit import LocalHostLimiter
from modomo.jobs import cancel_job, close_source, create_job, describe_job, open_source
from modomo.sources.crawl import PoliteClient, Politeness
from modomo.sources.houzz import CURSOR, TALLY, CrawlReport, crawl_galleries
from tests.sources.site import FakePhoto, SiteServer, standard_site

pytestmark = pytest.mark.services

ROOMS = ["living-room", "kitchen", "bedroom", "outdoor"]


@pytest.fixture(scope="module")
def server() -> Iterator[SiteServer]:
    with SiteServer() as running:
        yield running


def settings_for(server: SiteServer, **overrides: object) -> Settings:
    return get_settings().model_copy(
        update={
            "houzz_base_url": server.base,
            "allow_private_urls": True,
            "crawl_rate_per_host": 50.0,
            **overrides,
        }
    )


def run(
    job_id: uuid.UUID, settings: Settings, limit: int = 100, rooms: list[str] = ROOMS, **kw: object
) -> CrawlReport:
    politeness = Politeness.from_settings(settings)
    limiter = LocalHostLimiter(politeness.rate_per_host)
    with PoliteClient(politeness, limiter=limiter) as client:
        return crawl_galleries(job_id, limit, rooms, settings=settings, client=client, **kw)  # type: ignore[arg-type]


def crawl_job(
    settings: Settings, limit: int = 100, rooms: list[str] = ROOMS
) -> tuple[dict, CrawlReport]:
    job_id = create_job("scrape", {"limit": limit, "room_types": rooms})
    open_source(job_id)
    report = run(job_id, settings, limit, rooms)
    assert report.finished
    close_source(job_id, error=report.error)
    return describe_job(job_id), report


def scenes(photos: dict[str, FakePhoto]) -> dict[str, Scene]:
    keys = {f"houzz:{p.photo_id}": name for name, p in photos.items()}
    with session_scope() as session:
        found = session.scalars(select(Scene).where(Scene.source_key.in_(list(keys)))).all()
        for scene in found:
            session.expunge(scene)
    return {keys[s.source_key]: s for s in found}


def test_crawl_stores_each_photo_once_with_its_facts(server: SiteServer) -> None:
    site, photos = standard_site()
    server.use(site)
    job, report = crawl_job(settings_for(server))

    # L0-L4, K0-K4 and B0-B1 are the job's scenes; K5 has K0's bytes, so it is K0's scene
    assert (job["status"], job["total"], job["processed"], job["failed"]) == (
        "completed",
        12,
        9,
        3,
    ), job
    assert (report.stored, report.failed, report.repeats, report.duplicates) == (10, 3, 1, 1)
    assert report.pages == 6 and report.skipped == 0
    assert len(report.errors) == 1 and report.errors[0].startswith("outdoor: robots.txt disallows")
    reasons = {f["source_key"]: f["error"] for f in job["failures"]}
    assert set(reasons) == {f"houzz:{photos[n].photo_id}" for n in ("K1", "K3", "B1")}
    assert "HTTP 404 from" in reasons[f"houzz:{photos['K3'].photo_id}"]
    assert "robots.txt disallows" in reasons[f"houzz:{photos['B1'].photo_id}"]
    assert reasons[f"houzz:{photos['K1'].photo_id}"]  # the decoder's reason
    assert all(f["stage"] == "ingest" for f in job["failures"])

    stored = scenes(photos)
    assert sorted(stored) == sorted([*photos][:10] + ["B0", "B1"])  # not K5, not O0
    l0, k0, b0 = stored["L0"], stored["K0"], stored["B0"]
    assert (l0.source, l0.room_type, l0.style, l0.status) == (
        "houzz",
        "living_room",
        "scandinavian",
        "ingested",
    )
    assert stored["L1"].style == "mid_century_modern" and stored["L2"].style is None
    assert k0.room_type == "kitchen" and b0.room_type == "bedroom"
    assert l0.image_url == site.base + photos["L0"].image_path
    assert k0.image_url == site.base + photos["K0"].image_path  # the markup's thumbnail, upgraded
    assert l0.meta["title"] == "Photo L0" and l0.meta["photo_id"] == photos["L0"].photo_id
    assert l0.meta["project_url"] == site.base + "/projects/project-l0"
    assert l0.meta["photo_url"] == site.base + photos["L0"].page_path
    assert l0.meta["style"] == "Scandinavian" and l0.meta["gallery"] == "living-room"
    assert {stored[n].meta["parsed_from"] for n in ("L0", "L3", "K0")} == {
        "json-ld",
        "state",
        "markup",
    }
    assert stored["K1"].status == stored["K3"].status == stored["B1"].status == "failed"

    # what the server saw: robots.txt once, never a disallowed path, the 429 retried after 1 s
    assert [h.target for h in site.hits].count("/robots.txt") == 1
    assert not [h for h in site.hits if h.path == "/photos/outdoor" or "/private/" in h.path]
    kitchen2 = [h for h in site.hits if h.target == "/photos/kitchen?pg=2"]
    assert [h.status for h in kitchen2] == [429, 200]
    assert kitchen2[1].at - kitchen2[0].at >= 1.0 - 0.03
    assert site.page_hits("living-room") == [1, 2] and site.page_hits("bedroom") == [1, 2]
    assert site.image_hits(photos["L1"]) == 1  # listed twice, fetched once
    assert all(h.user_agent == get_settings().user_agent for h in site.hits)
    assert job["params"][CURSOR]["done"] is True
    assert job["params"][TALLY]["pages"] == 6


def test_a_rerun_adds_nothing_and_fetches_only_what_failed(server: SiteServer) -> None:
    site, photos = standard_site()
    server.use(site)
    settings = settings_for(server)
    crawl_job(settings)
    with session_scope() as session:
        before = session.scalar(select(func.count()).select_from(Scene))
    site.hits.clear()

    job, report = crawl_job(settings)
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Scene)) == before
    assert report.skipped == 9 and report.repeats == 1
    # the failed ones are tried again; K5 (K0's bytes, no scene of its own) maps to K0's scene
    assert (job["total"], job["processed"], job["failed"]) == (4, 1, 3)
    fetched = {name for name, p in photos.items() if site.image_hits(p)}
    assert fetched == {"K1", "K3", "K5"}


def test_the_limit_is_shared_between_room_types_and_exact(server: SiteServer) -> None:
    site, photos = standard_site()
    server.use(site)
    job, report = crawl_job(settings_for(server), limit=5, rooms=["living-room", "kitchen"])
    assert (job["total"], job["processed"], job["failed"]) == (5, 4, 1)
    assert sorted(scenes(photos)) == ["K0", "K1", "L0", "L1", "L2"]  # 3 + 2
    assert site.page_hits("living-room") == [1] and site.page_hits("kitchen") == [1]
    assert sum(site.image_hits(p) for p in photos.values()) == 5


def test_a_crashed_crawl_resumes_from_its_cursor(server: SiteServer) -> None:
    site, photos = standard_site()
    server.use(site)
    site.throttle.clear()
    settings = settings_for(server, crawl_chunk_size=2)
    rooms = ["living-room", "kitchen"]
    job_id = create_job("scrape", {"limit": 100, "room_types": rooms})
    open_source(job_id)

    def crash(taken: int, limit: int) -> None:
        if taken >= 7:  # after kitchen page 1's first chunk is committed
            raise RuntimeError("worker killed")

    with pytest.raises(RuntimeError, match="worker killed"):
        run(job_id, settings, rooms=rooms, on_progress=crash)
    cursor = describe_job(job_id)["params"][CURSOR]
    assert (cursor["room_type"], cursor["page"]) == ("kitchen", 1)
    crashed_at = len(site.hits)

    report = run(job_id, settings, rooms=rooms)
    close_source(job_id)
    job = describe_job(job_id)
    assert report.finished and report.pages == 3  # kitchen 1 (again), 2, 3
    after = site.hits[crashed_at:]
    assert not [h for h in after if h.path == "/photos/living-room"]
    assert [h.target for h in after if h.path.startswith("/photos/")] == [
        "/photos/kitchen",
        "/photos/kitchen?pg=2",
        "/photos/kitchen?pg=3",
    ]
    assert site.image_hits(photos["K0"]) == site.image_hits(photos["K1"]) == 1
    assert (job["status"], job["total"], job["processed"], job["failed"]) == ("completed", 10, 8, 2)
    assert len(scenes(photos)) == 10


def test_a_cancelled_job_stops_and_a_deadline_keeps_the_cursor(server: SiteServer) -> None:
    site, _ = standard_site()
    server.use(site)
    settings = settings_for(server)
    job_id = create_job("scrape", {})
    open_source(job_id)
    report = run(job_id, settings, deadline=time.monotonic())
    assert not report.finished and not report.cancelled and report.pages == 0
    assert describe_job(job_id)["params"][CURSOR] == {
        "room_type": "living-room",
        "page": 1,
        "url": f"{site.base}/photos/living-room",
        "until": 25,
        "paginated": False,
    }
    cancel_job(job_id)
    report = run(job_id, settings)
    assert report.cancelled and not report.finished
    assert site.hits == []
