"""A per-host request rate limit shared by every worker: a token bucket in Redis.

Celery's ``rate_limit`` is per worker process, so three scraping workers at 1 request/second
each would send 3 requests/second to the same site. Every network fetch Modomo makes to a
host (Houzz pages and images in :mod:`modomo.sources.crawl`, URL-list downloads in
:mod:`modomo.images.fetch`) first takes a token from that host's bucket here, which all
processes share through Redis.

Algorithm: the token bucket, as RFC 2697 section 3 meters traffic with one
(https://www.rfc-editor.org/rfc/rfc2697#section-3; also
https://en.wikipedia.org/wiki/Token_bucket).
A bucket holds at most ``burst`` tokens and gains ``rate`` tokens per second; a request
takes one. Over any window of ``w`` seconds a host therefore receives at most
``burst + rate * w`` requests.

We let the balance go negative: a caller that finds no token *reserves* the next one (the
balance goes to -1, -2 …) and sleeps exactly until it is due, instead of polling. The
reservations form a queue in arrival order, so callers are served first come, first
served, and each :meth:`HostLimiter.acquire` costs one Redis round trip. (This is the
"virtual scheduling" form of the same bucket, as in the generic cell rate algorithm,
ITU-T I.371 annex A.) A caller whose turn is further away than its ``timeout_s`` takes
nothing and gets :class:`HostLimitTimeout` at once.

Shared state and clock: one Redis hash per host, ``modomo:hostlimit:<host>`` with the
balance ``tokens`` and the time ``ts`` it was computed, updated by one Lua script (atomic:
Redis runs a script without interleaving other commands) that reads the time with Redis's
``TIME``, so every worker measures against the same clock whatever its own clock says. The
key expires when its bucket would be full again (an absent key *is* a full bucket), so idle
hosts leave nothing behind. ``hold`` (after a 429's ``Retry-After``) empties the bucket so
that the next request waits that long, for every worker.

Why our own code: no maintained library gives a blocking, cross-process, per-host token
bucket on redis-py. ``limits`` (already used by the API) has fixed and moving windows that
answer "allowed or not" but no waiting turn; redis-cell implements the same algorithm as a
Redis *module* that must be loaded into the server (managed Redis services rarely allow
modules); the others would be a new dependency for a twenty-line script.

Without Redis (the embedded default, nothing configured: one process runs everything) the
same bucket is kept in process memory (:class:`LocalHostLimiter`). With Redis configured but
unreachable, :meth:`HostLimiter.acquire` raises :class:`HostLimitUnavailable`: the request is
not sent rather than sent unlimited.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import redis

from modomo.config import Settings, get_settings

__all__ = [
    "KEY_PREFIX",
    "HostLimitError",
    "HostLimitTimeout",
    "HostLimitUnavailable",
    "HostLimiter",
    "LocalHostLimiter",
    "RedisHostLimiter",
    "host_key",
    "host_limiter",
]

log = logging.getLogger(__name__)

KEY_PREFIX = "modomo:hostlimit:"
"""Redis key prefix of the buckets; the host (``name:port``) follows."""

_KEY_SLACK_MS = 1000
"""Milliseconds a bucket's key outlives the moment it would be full again."""


class HostLimitError(RuntimeError):
    """No request slot for a host; ``str(e)`` says why. Nothing was sent."""

    def __init__(self, reason: str, *, host: str) -> None:
        super().__init__(reason)
        self.host = host


class HostLimitTimeout(HostLimitError):
    """The host's next free slot is further away than the caller would wait.

    Attributes:
        wait_s: seconds until the slot the caller would have had.
        timeout_s: seconds the caller would wait at most.
    """

    def __init__(self, host: str, wait_s: float, timeout_s: float, rate: float) -> None:
        super().__init__(
            f"rate limit for {host}: the next request slot is {wait_s:.3g} s away, longer "
            f"than the {timeout_s:g} s this request may wait ({rate:g} requests/s shared by "
            "every worker; MODOMO_CRAWL_RATE_PER_HOST)",
            host=host,
        )
        self.wait_s = wait_s
        self.timeout_s = timeout_s


class HostLimitUnavailable(HostLimitError):
    """The shared limiter's Redis did not answer, so the request was not sent."""


def host_key(url: str) -> str:
    """The host a URL's request counts against: ``name:port`` (lowercase, default ports
    filled in: 80 for http, 443 for https)."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{(parts.hostname or '').lower()}:{port}"


class HostLimiter(ABC):
    """A per-host token bucket: at most ``burst`` requests at once, ``rate`` per second on
    average.

    Args:
        rate: tokens per second (requests/second per host), the default of :meth:`acquire`.
        burst: bucket size (requests a rested host may get at once), at least 1.

    Raises:
        ValueError: ``rate`` not positive or ``burst`` below 1.
    """

    def __init__(
        self, rate: float, burst: int = 1, *, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        _check(rate, burst)
        self.rate = float(rate)
        self.burst = int(burst)
        self._sleep = sleep

    def acquire(
        self,
        host: str,
        timeout_s: float,
        *,
        rate: float | None = None,
        burst: int | None = None,
    ) -> float:
        """Take a token for ``host``, sleeping until it is due.

        Args:
            host: the bucket's name, normally :func:`host_key` of the URL.
            timeout_s: seconds this caller would wait at most.
            rate: requests/second for this host (default: the limiter's), e.g. slower
                when robots.txt asks for a ``Crawl-delay``.
            burst: bucket size for this host (default: the limiter's).

        Returns:
            Seconds waited (0.0 when a token was there).

        Raises:
            HostLimitTimeout: the next slot is more than ``timeout_s`` away; raised at once,
                without waiting and without taking the slot.
            HostLimitUnavailable: the shared state (Redis) cannot be reached.
            ValueError: a bad ``rate``, ``burst`` or a negative ``timeout_s``.
        """
        rate = self.rate if rate is None else float(rate)
        burst = self.burst if burst is None else int(burst)
        _check(rate, burst)
        if timeout_s < 0:
            raise ValueError(f"timeout_s must not be negative, got {timeout_s!r}")
        taken, wait = self._take(host, rate, burst, float(timeout_s))
        if not taken:
            raise HostLimitTimeout(host, wait, timeout_s, rate)
        if wait > 0:
            self._sleep(wait)
        return wait

    def hold(self, host: str, seconds: float, *, rate: float | None = None) -> None:
        """Send nothing more to ``host`` for ``seconds`` from now (a ``Retry-After``): the
        next :meth:`acquire` of any process waits at least that long.

        Raises:
            HostLimitUnavailable: the shared state (Redis) cannot be reached.
        """
        if seconds > 0:
            self._hold(host, self.rate if rate is None else float(rate), float(seconds))

    @abstractmethod
    def _take(self, host: str, rate: float, burst: int, max_wait: float) -> tuple[bool, float]:
        """Reserve a token unless it is more than ``max_wait`` seconds away; returns
        (reserved, seconds until it is due)."""

    @abstractmethod
    def _hold(self, host: str, rate: float, seconds: float) -> None:
        """Empty the bucket so that its next token is ``seconds`` away."""


def _check(rate: float, burst: int) -> None:
    if not (rate > 0 and math.isfinite(rate)):
        raise ValueError(f"rate must be a positive number of requests/second, got {rate!r}")
    if burst < 1:
        raise ValueError(f"burst must be at least 1, got {burst!r}")


# --- in Redis, shared by every process ------------------------------------------------------

_TAKE = """
-- KEYS[1]: the bucket; ARGV: rate (tokens/s), burst (tokens), max_wait (s), hold (s; 0 = take)
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local max_wait = tonumber(ARGV[3])
local hold = tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local wait = 0
if hold > 0 then
  tokens = math.min(tokens, 1 - hold * rate)
else
  tokens = tokens - 1
  if tokens < 0 then
    wait = -tokens / rate
  end
  if wait > max_wait then
    return {0, string.format('%.6f', wait)}
  end
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.9f', tokens),
           'ts', string.format('%.6f', now))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + SLACK_MS)
return {1, string.format('%.6f', wait)}
""".replace("SLACK_MS", str(_KEY_SLACK_MS))


class RedisHostLimiter(HostLimiter):
    """The token bucket in Redis, shared by every process using the same Redis database.

    Args:
        client: a redis-py client (its connection pool is fork-safe).
        rate, burst: see :class:`HostLimiter`.
        prefix: key prefix (default :data:`KEY_PREFIX`).
        where: how to name the Redis in error messages (no password).
    """

    def __init__(
        self,
        client: redis.Redis,
        rate: float,
        burst: int = 1,
        *,
        prefix: str = KEY_PREFIX,
        where: str = "Redis",
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(rate, burst, sleep=sleep)
        self.client = client
        self.prefix = prefix
        self.where = where
        self._script = client.register_script(_TAKE)

    def _run(self, host: str, *args: float) -> tuple[bool, float]:
        try:
            reply: Any = self._script(keys=[self.prefix + host], args=list(args))
        except redis.RedisError as exc:
            raise HostLimitUnavailable(
                f"rate limit for {host}: the shared limit lives in {self.where}, which did not "
                f"answer ({type(exc).__name__}: {exc}); request not sent",
                host=host,
            ) from exc
        return bool(int(reply[0])), float(reply[1])

    def _take(self, host: str, rate: float, burst: int, max_wait: float) -> tuple[bool, float]:
        return self._run(host, rate, burst, max_wait, 0.0)

    def _hold(self, host: str, rate: float, seconds: float) -> None:
        self._run(host, rate, self.burst, 0.0, seconds)


# --- in process memory, for the embedded default -------------------------------------------


class LocalHostLimiter(HostLimiter):
    """The same token bucket in this process's memory (thread-safe; waiting happens outside
    the lock). For running without Redis, where one process does all the fetching.

    Args:
        rate, burst: see :class:`HostLimiter`.
        clock: a monotonic clock in seconds.
        sleep: how to wait.
    """

    def __init__(
        self,
        rate: float,
        burst: int = 1,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(rate, burst, sleep=sleep)
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # host -> (tokens, at)

    def _refilled(self, host: str, rate: float, burst: int, now: float) -> float:
        tokens, at = self._buckets.get(host, (float(burst), now))
        return min(float(burst), tokens + max(0.0, now - at) * rate)

    def _take(self, host: str, rate: float, burst: int, max_wait: float) -> tuple[bool, float]:
        with self._lock:
            now = self._clock()
            tokens = self._refilled(host, rate, burst, now) - 1
            wait = -tokens / rate if tokens < 0 else 0.0
            if wait > max_wait:
                return False, wait
            self._buckets[host] = (tokens, now)
            self._forget_full(now)
            return True, wait

    def _hold(self, host: str, rate: float, seconds: float) -> None:
        with self._lock:
            now = self._clock()
            tokens = self._refilled(host, rate, self.burst, now)
            self._buckets[host] = (min(tokens, 1 - seconds * rate), now)

    def _forget_full(self, now: float) -> None:
        # the in-memory counterpart of the Redis key's expiry (an absent bucket is full)
        if len(self._buckets) > 1024:
            self._buckets = {
                host: (tokens, at)
                for host, (tokens, at) in self._buckets.items()
                if tokens + (now - at) * self.rate < self.burst
            }


# --- the process's limiter ------------------------------------------------------------------

_LIMITERS: dict[tuple[str, float, int], HostLimiter] = {}
_LIMITERS_LOCK = threading.Lock()


def _redis_url(settings: Settings) -> str:
    """The Redis the limit lives in: ``MODOMO_REDIS_URL``, else a Redis broker; "" for none."""
    if settings.redis_url:
        return settings.redis_url
    if settings.broker_url.startswith(("redis://", "rediss://", "unix://")):
        return settings.broker_url
    return ""


def _shown(url: str) -> str:
    """A Redis URL without its password, for messages."""
    parts = urlsplit(url)
    host = parts.hostname or parts.path or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"Redis at {parts.scheme}://{host}{port}{parts.path if parts.hostname else ''}"


def host_limiter(settings: Settings | None = None) -> HostLimiter:
    """The process's limiter for ``settings`` (default: the process's settings), made once.

    With a Redis (``MODOMO_REDIS_URL``, or a ``redis://`` broker) a :class:`RedisHostLimiter`
    shared by every worker; without (the embedded default) a :class:`LocalHostLimiter`.
    Default rate ``MODOMO_CRAWL_RATE_PER_HOST`` (requests/second), burst
    ``MODOMO_CRAWL_BURST``. Creating it connects to nothing; Redis is first asked in
    :meth:`HostLimiter.acquire`.
    """
    settings = settings or get_settings()
    url = _redis_url(settings)
    key = (url, float(settings.crawl_rate_per_host), int(settings.crawl_burst))
    with _LIMITERS_LOCK:
        limiter = _LIMITERS.get(key)
        if limiter is None:
            if url:
                client = redis.Redis.from_url(
                    url, socket_connect_timeout=5, socket_timeout=10, health_check_interval=30
                )
                limiter = RedisHostLimiter(client, key[1], key[2], where=_shown(url))
            else:
                if not settings.embedded:
                    log.warning(
                        "no Redis URL for the shared per-host rate limit (broker %s): each "
                        "process keeps its own limit; set MODOMO_REDIS_URL",
                        settings.broker_url.split("://", 1)[0],
                    )
                limiter = LocalHostLimiter(key[1], key[2])
            _LIMITERS[key] = limiter
        return limiter
