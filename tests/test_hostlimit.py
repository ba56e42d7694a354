"""The per-host token bucket (:mod:`modomo.hostlimit`) against the real Redis: burst then the
steady rate, several processes sharing one host's bucket, hosts independent, the timeout, the
key's expiry, an unreachable Redis, the in-process fallback, and ``fetch_image`` going
through the shared limit (request times as a loopback server saw them)."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from modomo.config import get_settings, load_settings
from modomo.hostlimit import (
    KEY_PREFIX,
    HostLimitTimeout,
    HostLimitUnavailable,
    LocalHostLimiter,
    RedisHostLimiter,
    host_key,
    host_limiter,
)
from modomo.images import FetchError, fetch_image
from modomo.images.fetch import FetchedImage
from tests.support import encode, free_port, noise_image

SLACK_S = 0.03
"""Scheduling jitter allowed per window (seconds of extra rate)."""


def max_in_window(times: list[float], window_s: float) -> int:
    """The most of ``times`` that fall in any half-open window of ``window_s`` seconds."""
    ordered = sorted(times)
    best, first = 0, 0
    for last, at in enumerate(ordered):
        while at - ordered[first] >= window_s:
            first += 1
        best = max(best, last - first + 1)
    return best


def assert_within_rate(
    times: list[float], rate: float, burst: int, windows: tuple[float, ...] = (0.25, 0.5, 1, 2)
) -> dict[float, tuple[int, float]]:
    """Every window of each length holds at most ``burst + rate * (window + SLACK_S)``
    requests; returns {window: (most seen, allowed)}."""
    seen = {}
    for window in windows:
        allowed = burst + rate * (window + SLACK_S)
        most = max_in_window(times, window)
        seen[window] = (most, allowed)
        assert most <= allowed, f"{most} requests in {window} s, allowed {allowed:.2f}: {times}"
    return seen


def redis_url() -> str:
    url = os.environ.get("REDIS_URL")
    if not url:
        pytest.skip("no Redis in this session (see tests/conftest.py)")
    return url


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_url())
    yield connection
    connection.close()


def fresh_host() -> str:
    return f"test-{uuid.uuid4().hex[:10]}.invalid:80"


# --- the bucket in Redis --------------------------------------------------------------------


@pytest.mark.services
def test_burst_then_steady_rate(client: redis.Redis) -> None:
    limiter = RedisHostLimiter(client, rate=10.0, burst=3)
    host = fresh_host()
    start = time.monotonic()
    waits, times = [], []
    for _ in range(8):
        waits.append(limiter.acquire(host, timeout_s=5))
        times.append(time.monotonic() - start)
    assert waits[:3] == [0.0, 0.0, 0.0]  # the burst
    assert times[2] < 0.05
    assert all(0.07 <= w <= 0.11 for w in waits[3:]), waits  # then one every 0.1 s
    assert 0.5 - SLACK_S <= times[-1] <= 0.5 + 0.1, times
    assert_within_rate([start + t for t in times], 10.0, 3)
    # the key: modomo:hostlimit:<host>, a negative or small balance, expiring once full again
    key = KEY_PREFIX + host
    assert set(client.hgetall(key)) == {b"tokens", b"ts"}
    assert 0 < client.pttl(key) <= (3 / 10.0) * 1000 + 1000 + 50


@pytest.mark.services
def test_idle_key_vanishes_and_the_bucket_is_full_again(client: redis.Redis) -> None:
    limiter = RedisHostLimiter(client, rate=20.0, burst=2)
    host = fresh_host()
    for _ in range(3):
        limiter.acquire(host, timeout_s=5)
    deadline = time.monotonic() + 5
    while client.exists(KEY_PREFIX + host):  # full after (2 - -1) / 20 s, then 1 s of slack
        assert time.monotonic() < deadline, client.pttl(KEY_PREFIX + host)
        time.sleep(0.05)
    assert [limiter.acquire(host, timeout_s=5) for _ in range(2)] == [0.0, 0.0]


@pytest.mark.services
def test_separate_hosts_do_not_wait_for_each_other(client: redis.Redis) -> None:
    limiter = RedisHostLimiter(client, rate=2.0, burst=1)
    first, second = fresh_host(), fresh_host()
    assert limiter.acquire(first, timeout_s=5) == 0.0
    assert limiter.acquire(second, timeout_s=5) == 0.0
    assert limiter.acquire(first, timeout_s=5) > 0.4  # the first host's next turn: 0.5 s


@pytest.mark.services
def test_timeout_raises_at_once_and_takes_nothing(client: redis.Redis) -> None:
    limiter = RedisHostLimiter(client, rate=1.0, burst=1)
    host = fresh_host()
    limiter.acquire(host, timeout_s=5)
    start = time.monotonic()
    with pytest.raises(HostLimitTimeout, match=r"next request slot is (0\.9\d*|1) s away") as err:
        limiter.acquire(host, timeout_s=0.2)
    assert time.monotonic() - start < 0.1  # no waiting for a slot it will not get
    assert err.value.host == host and err.value.timeout_s == 0.2
    assert 0.9 < err.value.wait_s <= 1.0
    # the refused caller took no slot: the next caller's turn is still about 1 s away
    assert limiter.acquire(host, timeout_s=5) <= 1.0


@pytest.mark.services
def test_hold_makes_every_caller_wait(client: redis.Redis) -> None:
    host = fresh_host()
    one = RedisHostLimiter(client, rate=50.0, burst=5)
    other = RedisHostLimiter(redis.Redis.from_url(redis_url()), rate=50.0, burst=5)
    held_at = time.monotonic()
    one.hold(host, 0.6)  # a Retry-After seen by one worker
    waited = other.acquire(host, timeout_s=5)
    granted_at = time.monotonic()
    # the hold counts from when it was set: less whatever this (loaded) machine took since
    assert 0.6 - (granted_at - waited - held_at) - 0.01 <= waited <= 0.6
    second = other.acquire(host, timeout_s=5)
    between = time.monotonic() - granted_at - second  # time not spent waiting
    # no burst after a hold: the next token is 1/rate after the last, less the time between
    assert second == pytest.approx(max(0.0, 0.02 - between), abs=0.005)


def _acquire_in_child(
    url: str, host: str, count: int, rate: float, burst: int, ready: Any, go: Any, out: Any
) -> None:
    limiter = RedisHostLimiter(redis.Redis.from_url(url), rate, burst)
    ready.put(os.getpid())
    go.wait(30)
    times = []
    for _ in range(count):
        limiter.acquire(host, timeout_s=30)
        times.append(time.time())
    out.put(times)


@pytest.mark.services
def test_processes_acquiring_together_stay_within_the_rate() -> None:
    url, host = redis_url(), fresh_host()
    rate, burst, per_process, processes = 10.0, 2, 8, 4
    context = multiprocessing.get_context("fork")  # fresh Redis connections in each child
    ready, out, go = context.Queue(), context.Queue(), context.Event()
    children = [
        context.Process(
            target=_acquire_in_child, args=(url, host, per_process, rate, burst, ready, go, out)
        )
        for _ in range(processes)
    ]
    for child in children:
        child.start()
    try:
        pids = {ready.get(timeout=30) for _ in children}
        go.set()
        per_child = [out.get(timeout=60) for _ in children]
    finally:
        for child in children:
            child.join(timeout=10)
    assert len(pids) == processes
    times = sorted(t for ts in per_child for t in ts)
    assert len(times) == processes * per_process
    firsts = sorted(ts[0] for ts in per_child)
    assert firsts[-1] - firsts[0] < 0.5  # they really took turns together
    # 32 requests: 2 at once, then 30 at 10/s: 3 s (unshared, each process would go 4x faster)
    assert times[-1] - times[0] >= (len(times) - burst) / rate - SLACK_S
    assert_within_rate(times, rate, burst)


@pytest.mark.services
def test_unreachable_redis_fails_with_the_reason() -> None:
    port = free_port()
    dead = redis.Redis(port=port, socket_connect_timeout=1)
    limiter = RedisHostLimiter(dead, rate=1.0, where=f"Redis at redis://127.0.0.1:{port}")
    with pytest.raises(HostLimitUnavailable, match=rf"redis://127\.0\.0\.1:{port}, which did not"):
        limiter.acquire("example.com:443", timeout_s=5)


# --- in process memory ----------------------------------------------------------------------


def test_local_limiter_burst_then_rate_across_threads() -> None:
    limiter = LocalHostLimiter(rate=20.0, burst=3)
    times: list[float] = []
    lock = threading.Lock()

    def take(_: int) -> None:
        limiter.acquire("h:80", timeout_s=5)
        with lock:
            times.append(time.monotonic())

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(take, range(15)))
    assert times[-1] - min(times) >= (15 - 3) / 20.0 - SLACK_S
    assert_within_rate(times, 20.0, 3)


def test_local_limiter_timeout_hosts_and_bad_values() -> None:
    clock = [100.0]
    limiter = LocalHostLimiter(
        rate=1.0,
        burst=2,
        clock=lambda: clock[0],
        sleep=lambda s: clock.__setitem__(0, clock[0] + s),
    )
    assert [limiter.acquire("a:80", 5) for _ in range(3)] == [0.0, 0.0, 1.0]
    assert limiter.acquire("b:80", 5) == 0.0
    with pytest.raises(HostLimitTimeout, match="1 s away"):
        limiter.acquire("a:80", 0.5)
    assert [limiter.acquire("c:80", 5, rate=0.5, burst=1) for _ in range(2)] == [0.0, 2.0]
    with pytest.raises(ValueError, match="rate"):
        LocalHostLimiter(rate=0)
    with pytest.raises(ValueError, match="burst"):
        limiter.acquire("a:80", 1, burst=0)


def test_host_limiter_follows_the_settings() -> None:
    embedded = load_settings(redis_url="", broker_url="", result_backend="", crawl_burst=4)
    local = host_limiter(embedded)
    assert isinstance(local, LocalHostLimiter) and local.burst == 4
    assert host_limiter(embedded) is local  # one per process
    shared = host_limiter(load_settings(redis_url="redis://127.0.0.1:6379/13"))
    assert (
        isinstance(shared, RedisHostLimiter)
        and shared.where == "Redis at redis://127.0.0.1:6379/13"
    )
    assert host_key("https://Example.com/a.jpg") == "example.com:443"
    assert host_key("http://127.0.0.1:8080/x") == "127.0.0.1:8080"


# --- fetch_image through the shared limit ---------------------------------------------------


@pytest.fixture
def image_server() -> Iterator[tuple[HTTPServer, list[float]]]:
    arrivals: list[float] = []
    body = encode(noise_image("hostlimit"), "PNG")

    def handle(request: Request) -> Response:
        arrivals.append(time.monotonic())
        if request.path == "/moved.png":
            return Response("moved", 302, headers={"Location": "/image.png"})
        return Response(body, 200, content_type="image/png")

    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.expect_request("/image.png").respond_with_handler(handle)
    server.expect_request("/moved.png").respond_with_handler(handle)
    server.start()
    yield server, arrivals
    server.clear()
    server.stop()


@pytest.mark.services
def test_fetch_image_downloads_keep_the_shared_rate(
    image_server: tuple[HTTPServer, list[float]], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, arrivals = image_server
    monkeypatch.setattr(get_settings(), "crawl_rate_per_host", 8.0)
    monkeypatch.setattr(get_settings(), "crawl_burst", 2)
    assert isinstance(host_limiter(), RedisHostLimiter)
    urls = [server.url_for("/image.png")] * 10 + [server.url_for("/moved.png")] * 2

    def fetch(url: str) -> FetchedImage:
        # waiting for a turn is not counted in timeout_s (14 requests at 8/s take 1.5 s)
        return fetch_image(url, allow_private=True, max_bytes=10**6, timeout_s=1, user_agent="t")

    with ThreadPoolExecutor(8) as pool:
        assert all(image.data for image in pool.map(fetch, urls))
    assert len(arrivals) == 14  # each redirect hop is a request and takes a turn
    assert arrivals[-1] - arrivals[0] >= (14 - 2) / 8.0 - SLACK_S
    assert_within_rate(arrivals, 8.0, 2)


@pytest.mark.services
def test_fetch_image_fails_when_the_shared_limit_is_unreachable(
    image_server: tuple[HTTPServer, list[float]], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, arrivals = image_server
    monkeypatch.setattr(get_settings(), "redis_url", f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(FetchError, match="did not answer .*; request not sent"):
        fetch_image(
            server.url_for("/image.png"),
            allow_private=True,
            max_bytes=10**6,
            timeout_s=5,
            user_agent="t",
        )
    assert arrivals == []  # nothing was sent
