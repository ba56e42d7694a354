"""A polite HTTP client for crawling a site: robots.txt, a per-host rate limit, backoff.

- robots.txt (RFC 9309) is fetched once per origin and cached for the client's life, parsed
  by protego and matched on the User-Agent's product token (``Modomo`` of ``Modomo/0.1 …``).
  A 4xx robots.txt allows everything; one that cannot be fetched (5xx after the retries, a
  network error) disallows everything, as the RFC asks. A disallowed URL is never requested.
  A ``Crawl-delay`` or ``Request-rate`` longer than our own interval slows that host down
  (its bucket then fills at the site's rate, with no bursts).
- Rate limit: every request to a host (``host:port``) takes a token from that host's
  bucket in :mod:`modomo.hostlimit`: ``rate_per_host`` requests/second with bursts of
  ``burst``, shared by every worker process through Redis (in process memory without Redis),
  so three scraping workers together still send ``rate_per_host``, not three times it. A
  request whose turn is more than ``max_wait_s`` away, or whose limit cannot be checked
  (Redis unreachable), fails with the reason instead of being sent.
- 429 and 5xx answers, timeouts and connection errors are retried up to ``max_retries``
  times: after the ``Retry-After`` delay when the answer gives one (seconds or an HTTP date;
  the whole host waits, for every worker, not just this URL), else after an exponential
  backoff (1, 2, 4 … s, at most 60 s). A ``Retry-After`` longer than ``max_wait_s`` is not
  waited for.
- Every request sends the configured descriptive User-Agent.
- Pages come through one ``httpx.Client`` (HTTP/2 where the server offers it, connections
  reused, timeouts) with redirects followed here, each hop checked against robots.txt and the
  address policy (:func:`modomo.images.check_url_allowed`: no private addresses unless
  allowed) and counted against its host's rate limit. Pages come from the configured site,
  not from users, so the shared client's resolve-then-connect window is accepted for them.
- Images (URLs found in pages: third-party content) go through
  :func:`modomo.images.fetch_image`, the guarded fetch with its size and time caps; each of
  its requests (redirect hops included) passes the same robots.txt check and rate limit, and
  they are retried like pages on 429 and 5xx.
"""

from __future__ import annotations

import email.utils
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

import httpx
from protego import Protego

from modomo.config import Settings
from modomo.hostlimit import HostLimiter, HostLimitError, host_key, host_limiter
from modomo.images import FetchError, check_url_allowed, fetch_image

__all__ = [
    "CrawlError",
    "Disallowed",
    "Page",
    "PoliteClient",
    "Politeness",
    "retry_after_seconds",
]

log = logging.getLogger(__name__)

MAX_REDIRECTS = 5
MAX_BACKOFF_S = 60.0
ROBOTS_MAX_BYTES = 512_000
"""robots.txt bytes read at most (RFC 9309 asks crawlers to parse at least 500 KiB)."""
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_PAGE_TYPES = ("text/html", "application/xhtml+xml", "application/json", "text/plain")


class CrawlError(Exception):
    """A URL that could not be crawled; ``str(e)`` is the reason, ``status`` the HTTP status
    of the last answer (None when there was none)."""

    def __init__(self, reason: str, *, url: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.url = url
        self.status = status


class Disallowed(CrawlError):
    """robots.txt does not allow the URL (it was not requested)."""


@dataclass(frozen=True)
class Politeness:
    """How the crawler treats a site.

    Attributes:
        user_agent: the User-Agent sent; its product token is matched against robots.txt.
        rate_per_host: requests per second to one host, at most (all workers together).
        burst: requests a rested host may get at once (the token bucket's size).
        max_retries: retries of a 429, 5xx, timeout or connection error.
        timeout_s: seconds a page request (or an image download, in all) may take.
        max_bytes: bytes a page or image may have.
        allow_private: allow private, loopback and link-local addresses (local tests only).
        max_wait_s: the longest wait for a host's turn (the shared rate limit) or a
            ``Retry-After``, in seconds.
        backoff_s: the first retry's delay without ``Retry-After`` (doubled per retry).
    """

    user_agent: str
    rate_per_host: float = 1.0
    burst: int = 1
    max_retries: int = 5
    timeout_s: float = 20.0
    max_bytes: int = 25_000_000
    allow_private: bool = False
    max_wait_s: float = 300.0
    backoff_s: float = 1.0

    @classmethod
    def from_settings(cls, settings: Settings) -> Politeness:
        """The crawl settings (``MODOMO_CRAWL_*``, ``MODOMO_USER_AGENT``, fetch limits)."""
        return cls(
            user_agent=settings.user_agent,
            rate_per_host=settings.crawl_rate_per_host,
            burst=settings.crawl_burst,
            max_retries=settings.crawl_max_retries,
            timeout_s=settings.fetch_timeout,
            max_bytes=settings.max_download_bytes,
            allow_private=settings.allow_private_urls,
            max_wait_s=settings.crawl_max_wait,
        )

    @property
    def robots_token(self) -> str:
        """The product token robots.txt groups are matched against (``Modomo``)."""
        token = self.user_agent.strip().split("/", 1)[0].split()
        return token[0] if token else self.user_agent

    def backoff(self, attempt: int) -> float:
        """Seconds before retry number ``attempt + 1`` when the server gave no delay."""
        return float(min(self.backoff_s * 2**attempt, MAX_BACKOFF_S))


@dataclass(frozen=True)
class _Answer:
    status: int
    headers: httpx.Headers
    body: bytes
    url: str
    encoding: str | None


@dataclass(frozen=True)
class Page:
    """A fetched page: its final URL (after redirects), status and decoded text."""

    url: str
    status: int
    text: str
    content_type: str | None


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay seconds or an HTTP date).

    Returns None for a missing or unreadable value; a date in the past gives 0.
    """
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(int(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class _Robots:
    """One origin's robots.txt rules (``None``: everything allowed)."""

    def __init__(self, rules: Protego | None, *, disallow_all: str | None = None) -> None:
        self.rules = rules
        self.disallow_all = disallow_all

    def check(self, url: str, token: str) -> None:
        if self.disallow_all is not None:
            raise Disallowed(self.disallow_all, url=url)
        if self.rules is not None and not self.rules.can_fetch(url, token):
            raise Disallowed(f"robots.txt disallows {url}", url=url)

    def interval(self, token: str) -> float | None:
        """The interval between requests the site asks of us, if it asks one."""
        if self.rules is None:
            return None
        delay = self.rules.crawl_delay(token)
        rate = self.rules.request_rate(token)
        asked = [float(delay)] if delay else []
        if rate is not None and rate.requests:
            asked.append(rate.seconds / rate.requests)
        return max(asked) if asked else None


class PoliteClient:
    """Fetches pages and images the polite way (see the module text). Use as a context
    manager, or call :meth:`close`.

    Args:
        politeness: how to treat the site.
        limiter: the per-host rate limit (default: the process's shared one,
            :func:`modomo.hostlimit.host_limiter`: in Redis when Modomo has one).
    """

    def __init__(
        self,
        politeness: Politeness,
        *,
        limiter: HostLimiter | None = None,
    ) -> None:
        self.politeness = politeness
        self.limiter = limiter or host_limiter()
        self.requests = 0
        """Requests sent (pages, robots.txt files and images, each attempt counted)."""
        self.waited_s = 0.0
        """Seconds spent waiting for hosts' turns (the rate limit and holds)."""
        self._robots: dict[str, _Robots] = {}
        self._asked_rates: dict[str, float] = {}
        self._client = httpx.Client(
            http2=True,
            headers={"User-Agent": politeness.user_agent},
            timeout=httpx.Timeout(politeness.timeout_s, connect=min(10.0, politeness.timeout_s)),
            limits=httpx.Limits(max_connections=4, max_keepalive_connections=4),
            follow_redirects=False,
            trust_env=False,
        )

    def __enter__(self) -> PoliteClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the pooled connections."""
        self._client.close()

    # --- public ---------------------------------------------------------------------------

    def get_page(self, url: str) -> Page:
        """GET a page (HTML, JSON or text), following redirects.

        Raises:
            Disallowed: robots.txt does not allow it (or a redirect target); nothing was sent
                to the disallowed URL.
            CrawlError: refused address, HTTP error (after the retries for 429 and 5xx), not
                a page, too large, too many redirects, network error, no turn at the host
                within ``max_wait_s`` or the shared rate limit unreachable.
        """
        current = url
        for _hop in range(MAX_REDIRECTS + 1):
            self.check_robots(current)
            answer = self._get(current)
            status = answer.status
            if status in _REDIRECTS:
                location = answer.headers.get("location", "").strip()
                if not location:
                    raise CrawlError(f"HTTP {status} from {current} without a Location", url=url)
                current = str(httpx.URL(answer.url).join(location))
                continue
            if not 200 <= status < 300:
                tries = self.politeness.max_retries + 1
                after = f" after {tries} attempts" if _retryable(status) and tries > 1 else ""
                raise CrawlError(f"HTTP {status} from {current}{after}", url=current, status=status)
            content_type = answer.headers.get("content-type")
            media = (content_type or "").split(";", 1)[0].strip().lower()
            if media and not media.startswith(_PAGE_TYPES):
                raise CrawlError(f"not a page: content-type {media} at {current}", url=current)
            try:
                text = answer.body.decode(answer.encoding or "utf-8", errors="replace")
            except LookupError:  # a charset Python does not know
                text = answer.body.decode("utf-8", errors="replace")
            return Page(url=answer.url, status=status, text=text, content_type=content_type)
        raise CrawlError(f"too many redirects (more than {MAX_REDIRECTS}) from {url}", url=url)

    def fetch_image(self, url: str) -> bytes:
        """Download an image through :func:`modomo.images.fetch_image` (address policy,
        size and time caps, image check), each request (redirect hops included) within
        robots.txt and its host's rate limit.

        Raises:
            Disallowed: robots.txt does not allow the image URL (or a redirect target).
            FetchError: it could not be fetched as an image (the reason says why; no turn at
                the host within ``max_wait_s`` and an unreachable rate limit are reasons too).
        """
        self.check_robots(url)
        host = _host(url)
        politeness = self.politeness
        for attempt in range(politeness.max_retries + 1):
            try:
                return fetch_image(
                    url,
                    allow_private=politeness.allow_private,
                    max_bytes=politeness.max_bytes,
                    timeout_s=politeness.timeout_s,
                    user_agent=politeness.user_agent,
                    throttle=self._image_hop,
                ).data
            except FetchError as exc:
                if (
                    exc.status is None
                    or not _retryable(exc.status)
                    or attempt == politeness.max_retries
                ):
                    raise
                delay = retry_after_seconds(exc.retry_after)
                if delay is not None and delay > politeness.max_wait_s:
                    raise
                self._hold(host, delay if delay is not None else politeness.backoff(attempt))
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def check_robots(self, url: str) -> None:
        """Raise :class:`Disallowed` unless the origin's robots.txt allows ``url``."""
        self._robots_for(url).check(url, self.politeness.robots_token)

    # --- internals ------------------------------------------------------------------------

    def _wait(self, host: str) -> float:
        """Take ``host``'s next turn (sleeping until it is due); returns seconds waited.

        Raises:
            HostLimitError: no turn within ``max_wait_s``, or the limit is unreachable.
        """
        asked = self._asked_rates.get(host)
        waited = self.limiter.acquire(
            host,
            self.politeness.max_wait_s,
            rate=asked or self.politeness.rate_per_host,
            burst=1 if asked else self.politeness.burst,
        )
        self.requests += 1
        self.waited_s += waited
        return waited

    def _hold(self, host: str, seconds: float) -> None:
        """Make every worker's next request to ``host`` wait ``seconds``."""
        try:
            self.limiter.hold(host, seconds, rate=self._asked_rates.get(host))
        except HostLimitError as exc:  # the next _wait says so and stops
            log.warning("%s", exc)

    def _image_hop(self, url: str) -> float:
        """:func:`fetch_image`'s throttle: robots.txt and the rate limit for each request of
        an image download (its redirect hops included)."""
        self.check_robots(url)
        return self._wait(_host(url))

    def _robots_for(self, url: str) -> _Robots:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}".lower()
        robots = self._robots.get(origin)
        if robots is None:
            robots = self._fetch_robots(origin)
            self._robots[origin] = robots
            asked = robots.interval(self.politeness.robots_token)
            own = 1.0 / self.politeness.rate_per_host
            if asked is not None and asked > own:
                log.info("%s asks for %.3g s between requests (robots.txt)", origin, asked)
                self._asked_rates[_host(url)] = 1.0 / asked
        return robots

    def _fetch_robots(self, origin: str) -> _Robots:
        url = f"{origin}/robots.txt"
        try:
            for _hop in range(MAX_REDIRECTS + 1):
                answer = self._get(url, max_bytes=ROBOTS_MAX_BYTES)
                if answer.status in _REDIRECTS and answer.headers.get("location"):
                    url = str(httpx.URL(answer.url).join(answer.headers["location"].strip()))
                    continue
                break
        except CrawlError as exc:
            log.warning("robots.txt of %s unreachable: %s", origin, exc)
            return _Robots(None, disallow_all=f"robots.txt of {origin} unreachable ({exc})")
        status = answer.status
        if 200 <= status < 300:
            return _Robots(Protego.parse(answer.body.decode("utf-8", errors="replace")))
        if 400 <= status < 500:
            return _Robots(None)
        return _Robots(None, disallow_all=f"robots.txt of {origin} unreachable (HTTP {status})")

    def _get(self, url: str, *, max_bytes: int | None = None) -> _Answer:
        """One GET with the address check, the rate limit and the retries; the body is read
        only for a final answer."""
        politeness = self.politeness
        limit = max_bytes if max_bytes is not None else politeness.max_bytes
        host = _host(url)
        for attempt in range(politeness.max_retries + 1):
            last_try = attempt == politeness.max_retries
            try:
                check_url_allowed(
                    url, allow_private=politeness.allow_private, timeout_s=politeness.timeout_s
                )
            except FetchError as exc:
                raise CrawlError(str(exc), url=url) from exc
            try:
                self._wait(host)
            except HostLimitError as exc:
                raise CrawlError(str(exc), url=url) from exc
            try:
                with self._client.stream("GET", url) as response:
                    status = response.status_code
                    if _retryable(status) and not last_try:
                        delay = retry_after_seconds(response.headers.get("retry-after"))
                        if delay is not None and delay > politeness.max_wait_s:
                            raise CrawlError(
                                f"HTTP {status} from {url} asks to wait {delay:g} s "
                                f"(more than {politeness.max_wait_s:g} s)",
                                url=url,
                                status=status,
                            )
                        wait = delay if delay is not None else politeness.backoff(attempt)
                        log.info("HTTP %s from %s: retrying in %.3g s", status, url, wait)
                        self._hold(host, wait)
                        continue
                    body = b"" if status in _REDIRECTS else _read(response, limit, url)
                    return _Answer(
                        status, response.headers, body, str(response.url), response.charset_encoding
                    )
            except httpx.TransportError as exc:  # timeouts, refused connections: transient
                reason = f"{type(exc).__name__} fetching {url}: {exc or 'no detail'}"
                if last_try:
                    raise CrawlError(reason, url=url) from exc
                log.info("%s: retrying", reason)
                self._hold(host, politeness.backoff(attempt))
            except httpx.HTTPError as exc:  # e.g. a body that does not decode: not transient
                raise CrawlError(f"{type(exc).__name__} fetching {url}: {exc}", url=url) from exc
        raise AssertionError("unreachable")  # pragma: no cover - the last try returns or raises


def _read(response: httpx.Response, max_bytes: int, url: str) -> bytes:
    declared = (response.headers.get("content-length") or "").strip()
    if declared.isdigit() and int(declared) > max_bytes:
        raise CrawlError(f"{url} exceeds {max_bytes} bytes (Content-Length {declared})", url=url)
    chunks: list[bytes] = []
    received = 0
    for chunk in response.iter_bytes():
        received += len(chunk)
        if received > max_bytes:
            raise CrawlError(f"{url} exceeds {max_bytes} bytes", url=url)
        chunks.append(chunk)
    return b"".join(chunks)


def _retryable(status: int) -> bool:
    return status == 429 or 500 <= status <= 599


_host = host_key
