"""Fetching an image by URL without becoming an SSRF proxy.

:func:`fetch_image` downloads a user-supplied http(s) URL under hard limits (size, wall-clock
time, redirect count) and refuses destinations that are not public internet addresses.

SSRF guard
    Before each request (the first and every redirect hop) the URL is checked by
    :func:`check_url_allowed`: the scheme must be http/https and *every* address the host
    resolves to (``socket.getaddrinfo``) must be globally routable -- no loopback,
    private (RFC 1918, ULA), link-local (incl. cloud metadata 169.254.169.254), multicast,
    reserved, unspecified, shared (CGNAT) addresses, nor IPv6 forms embedding such an IPv4
    address (IPv4-mapped ``::ffff:a.b.c.d``, NAT64, 6to4, Teredo). Literal IPs in any
    spelling the resolver accepts (``127.1``, ``0x7f000001``) are covered because the check
    is made on what the resolver returns, not on the URL text.

DNS rebinding
    Checking a name and then letting the HTTP library resolve it again leaves a window in
    which a hostile DNS server (TTL 0) can answer "public" to the check and "127.0.0.1" to
    the connect. When :func:`fetch_image` creates its own client (the default) that window is
    closed: its transport resolves the host once per connection, checks every returned
    address, and connects to exactly the checked IP literal (TLS SNI and certificate
    verification still use the hostname). When the caller passes its own ``client`` we cannot
    control its connection layer, so only the pre-request check applies and the
    resolve-check-connect window remains; pass a custom client only for trusted URLs or
    when its transport enforces an equivalent policy (tests, or ``allow_private=True``).
    Our own client also ignores proxy environment variables (``trust_env=False``): going
    through a proxy would make the address check meaningless.

Limits
    ``timeout_s`` is a wall-clock deadline for the whole fetch (DNS, connects, redirects,
    body). It is also passed to httpx as the per-operation timeout (the remaining time when
    each request starts), so a stalled read is interrupted by httpx while a slow trickle is
    stopped by the deadline check between chunks; the overrun past the deadline is bounded
    by one read. ``max_bytes`` is checked against ``Content-Length`` up front and against
    the bytes actually received while streaming. ``Accept-Encoding: identity`` is requested;
    if a server compresses anyway, httpx inflates the body one network chunk at a time and
    ``max_bytes`` applies to the inflated size.

Per-host rate limit
    Each request (the first and every redirect hop, after its address check) first waits for
    its host's turn in the shared per-host token bucket of :mod:`modomo.hostlimit`
    (``MODOMO_CRAWL_RATE_PER_HOST`` requests/second, bursts of ``MODOMO_CRAWL_BURST``, shared by
    every worker through Redis), so a URL list with many images on one site does not hammer
    it however many workers download. The time spent waiting is not counted in ``timeout_s``.
    A turn more than ``MODOMO_CRAWL_MAX_WAIT`` seconds away, or a Redis that does not answer,
    fails the fetch with that reason; nothing is sent. A caller with its own policy passes
    ``throttle`` (the crawler: robots.txt and the site's ``Crawl-delay`` as well).

Every failure -- bad URL, refused address, network error, HTTP error, non-image body -- is
raised as :class:`FetchError` (a subclass of :class:`~modomo.images.loading.ImageError`,
hence of :class:`ValueError`) with a user-facing reason.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

from modomo.hostlimit import HostLimitError, host_key
from modomo.images.loading import ImageError, sniff_mime

__all__ = [
    "MAX_REDIRECTS",
    "FetchError",
    "FetchedImage",
    "Throttle",
    "check_url_allowed",
    "fetch_image",
    "shared_host_limit",
    "unthrottled",
]

Throttle = Callable[[str], float]
"""Called with a request's URL before it is sent; blocks until the request may go and
returns the seconds waited. Raises to stop the fetch (:class:`HostLimitError` becomes a
:class:`FetchError` with its reason)."""


def shared_host_limit(url: str) -> float:
    """The default :data:`Throttle`: the URL's host's turn in the process's shared limiter
    (:func:`modomo.hostlimit.host_limiter`), waiting at most ``MODOMO_CRAWL_MAX_WAIT`` s.

    Raises:
        HostLimitError: no turn in time, or the shared limit (Redis) unreachable.
    """
    from modomo.config import get_settings
    from modomo.hostlimit import host_limiter

    return host_limiter().acquire(host_key(url), get_settings().crawl_max_wait)


def unthrottled(url: str) -> float:
    """A :data:`Throttle` that never waits (the caller limits its requests itself)."""
    return 0.0


#: Redirect hops followed before giving up.
MAX_REDIRECTS = 5

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_ALLOWED_SCHEMES = frozenset({"http", "https"})
_GENERIC_BINARY_TYPES = frozenset({"application/octet-stream", "binary/octet-stream"})
_ACCEPT = "image/webp,image/png,image/jpeg,image/*;q=0.8,*/*;q=0.5"

_IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_SHARED = ipaddress.IPv4Network("100.64.0.0/10")


class FetchError(ImageError):
    """A URL that could not be fetched as an image; ``str(e)`` is a user-facing reason.

    Attributes:
        status: the HTTP status of an error answer (None for other failures).
        retry_after: that answer's ``Retry-After`` header, as sent (None when absent).
    """

    def __init__(
        self, reason: str, *, status: int | None = None, retry_after: str | None = None
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.retry_after = retry_after


@dataclass(frozen=True)
class FetchedImage:
    """A downloaded image body.

    Attributes:
        url: The URL as requested by the caller.
        final_url: The URL the body came from, after redirects.
        data: The body (at most ``max_bytes`` bytes); it starts with the magic number of a
            supported image format, but has not been decoded.
        content_type: The ``Content-Type`` header of the final response, or ``None``.
    """

    url: str
    final_url: str
    data: bytes
    content_type: str | None


def check_url_allowed(url: str, *, allow_private: bool, timeout_s: float | None = None) -> None:
    """Refuse URLs that are not http(s) or whose host is not a public address.

    The host is resolved with ``socket.getaddrinfo`` (literal IPs resolve locally, without
    network access) and refused if *any* address is non-public; see the module docstring.

    Args:
        url: Absolute http or https URL.
        allow_private: When ``True`` only the URL syntax and scheme are checked (no DNS
            lookup); use for trusted, internal sources only.
        timeout_s: Seconds the DNS lookup may take (None: the resolver's own limits).

    Raises:
        FetchError: e.g. ``"unsupported URL scheme 'ftp'"``, ``"invalid URL: ..."``,
            ``"could not resolve host 'x': ..."``,
            ``"refused: 127.0.0.1 is a loopback address"``,
            ``"refused: localhost resolves to 127.0.0.1, which is a loopback address"``.
    """
    _check_url(url, allow_private=allow_private, timeout_s=timeout_s)


def fetch_image(
    url: str,
    *,
    allow_private: bool = False,
    max_bytes: int,
    timeout_s: float,
    user_agent: str,
    client: httpx.Client | None = None,
    throttle: Throttle | None = None,
) -> FetchedImage:
    """Download ``url`` and return its body if it looks like a supported image.

    Redirects (301/302/303/307/308) are followed manually, at most :data:`MAX_REDIRECTS`
    hops, each target re-checked with :func:`check_url_allowed`. The response must be 2xx,
    its ``Content-Type`` must be ``image/*`` (or absent / ``application/octet-stream``), and
    the body must start with the magic number of a supported format
    (:func:`~modomo.images.loading.sniff_mime`); decode it with
    :func:`~modomo.images.loading.load_image`.

    Args:
        url: Absolute http(s) URL.
        allow_private: Allow loopback/private/link-local destinations (trusted input only).
        max_bytes: Largest accepted body, in bytes.
        timeout_s: Wall-clock deadline for the whole fetch, in seconds.
        user_agent: ``User-Agent`` header to send.
        client: Optional caller-owned client (not closed here). Its redirect setting is
            overridden per request; note that its own connection layer does not re-check
            resolved addresses (see "DNS rebinding" in the module docstring).
        throttle: Waits for each request's turn (see "Per-host rate limit" in the module
            docstring); default :func:`shared_host_limit`, :func:`unthrottled` for none.
            Seconds it waits are added to the deadline.

    Returns:
        The downloaded image bytes and metadata.

    Raises:
        FetchError: For any bad URL, refused destination, network failure, timeout
            (``"timed out after 10 s"``), no turn at the host (``"rate limit for
            host:port: ..."``), HTTP error (``"HTTP 404 from <url>"``), oversize body
            (``"download exceeds N bytes"``), redirect problem (``"too many redirects ..."``)
            or non-image response (``"not an image: ..."``).
        ValueError: ``max_bytes`` or ``timeout_s`` is not positive (a programming error).
    """
    if max_bytes <= 0:
        raise ValueError(f"max_bytes must be positive, got {max_bytes!r}")
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s!r}")

    deadline = time.monotonic() + timeout_s
    own_client = client is None
    if client is None:
        client = httpx.Client(
            transport=_GuardedTransport(allow_private=allow_private),
            follow_redirects=False,
            trust_env=False,
        )
    try:
        return _fetch(
            url,
            client=client,
            allow_private=allow_private,
            max_bytes=max_bytes,
            timeout_s=timeout_s,
            deadline=deadline,
            user_agent=user_agent,
            throttle=throttle or shared_host_limit,
        )
    finally:
        if own_client:
            client.close()


# --------------------------------------------------------------------------------------
# the download loop


def _fetch(
    url: str,
    *,
    client: httpx.Client,
    allow_private: bool,
    max_bytes: int,
    timeout_s: float,
    deadline: float,
    user_agent: str,
    throttle: Throttle,
) -> FetchedImage:
    headers = {"User-Agent": user_agent, "Accept": _ACCEPT, "Accept-Encoding": "identity"}
    current: str = url
    for hop in range(MAX_REDIRECTS + 1):
        remaining = _left_or_timeout(deadline, timeout_s)
        try:
            target = _check_url(current, allow_private=allow_private, timeout_s=remaining)
            try:
                deadline += throttle(str(target))  # waiting for the host is not fetch time
            except HostLimitError as exc:
                raise FetchError(str(exc)) from exc
            with client.stream(
                "GET",
                target,
                headers=headers,
                timeout=httpx.Timeout(_left_or_timeout(deadline, timeout_s)),
                follow_redirects=False,
            ) as response:
                status = response.status_code
                if status in _REDIRECT_STATUSES:
                    current = _redirect_target(response, target, current)
                    if hop == MAX_REDIRECTS:
                        break
                    continue
                if not 200 <= status < 300:
                    phrase = f" ({response.reason_phrase})" if response.reason_phrase else ""
                    raise FetchError(
                        f"HTTP {status} from {current}{phrase}",
                        status=status,
                        retry_after=response.headers.get("retry-after"),
                    )

                content_type = response.headers.get("content-type")
                _check_content_type(content_type)
                declared = (response.headers.get("content-length") or "").strip()
                if declared.isdigit() and int(declared) > max_bytes:
                    raise FetchError(
                        f"download exceeds {max_bytes} bytes (Content-Length: {declared})"
                    )
                data = _read_body(
                    response, max_bytes=max_bytes, deadline=deadline, timeout_s=timeout_s
                )
                _check_body(data, content_type)
                return FetchedImage(
                    url=url, final_url=str(response.url), data=data, content_type=content_type
                )
        except FetchError:
            raise
        except (httpx.TimeoutException, _ResolveTimeout) as exc:
            raise FetchError(f"timed out after {timeout_s:g} s") from exc
        except httpx.ConnectError as exc:
            raise FetchError(f"could not connect to {_host_port(current)}: {_reason(exc)}") from exc
        except httpx.ProtocolError as exc:
            raise FetchError(
                f"HTTP protocol error from {_host_port(current)}: {_reason(exc)}"
            ) from exc
        except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError, OSError) as exc:
            raise FetchError(f"network error fetching {current}: {_reason(exc)}") from exc
    raise FetchError(f"too many redirects (more than {MAX_REDIRECTS}) starting at {url}")


def _redirect_target(response: httpx.Response, target: httpx.URL, current: str) -> str:
    location = (response.headers.get("location") or "").strip()
    if not location:
        raise FetchError(f"HTTP {response.status_code} redirect from {current} has no Location")
    try:
        return str(target.join(location))
    except (httpx.InvalidURL, ValueError) as exc:
        raise FetchError(f"invalid redirect location {location!r}: {_reason(exc)}") from exc


def _read_body(
    response: httpx.Response, *, max_bytes: int, deadline: float, timeout_s: float
) -> bytes:
    chunks: list[bytes] = []
    received = 0
    for chunk in response.iter_bytes():
        received += len(chunk)
        if received > max_bytes:
            raise FetchError(f"download exceeds {max_bytes} bytes")
        chunks.append(chunk)
        if time.monotonic() > deadline:
            raise FetchError(f"timed out after {timeout_s:g} s")
    return b"".join(chunks)


def _check_content_type(content_type: str | None) -> None:
    if content_type is None:
        return
    media_type = content_type.split(";", 1)[0].strip().lower()
    if not media_type or media_type.startswith("image/") or media_type in _GENERIC_BINARY_TYPES:
        return
    raise FetchError(f"not an image: content-type {media_type}")


def _check_body(data: bytes, content_type: str | None) -> None:
    if not data:
        raise FetchError("not an image: empty response body")
    if sniff_mime(data) is not None:
        return
    label = f"content-type {content_type.split(';', 1)[0].strip()}" if content_type else "data"
    head = data[:512].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")) or b"<html" in head:
        what = "looks like an HTML page"
    elif b"<svg" in head:
        what = "is SVG, which is not supported"
    else:
        what = "is not a supported image format (JPEG, PNG, GIF, WEBP, BMP, TIFF)"
    raise FetchError(f"not an image: {label} but the body {what}")


def _left(deadline: float) -> float:
    return deadline - time.monotonic()


def _left_or_timeout(deadline: float, timeout_s: float) -> float:
    remaining = _left(deadline)
    if remaining <= 0:
        raise FetchError(f"timed out after {timeout_s:g} s")
    return remaining


# --------------------------------------------------------------------------------------
# URL and address checks


def _check_url(url: str, *, allow_private: bool, timeout_s: float | None) -> httpx.URL:
    """Validate ``url`` (see :func:`check_url_allowed`) and return it parsed by httpx.

    Parsing once with httpx and requesting that same object avoids parser differentials.
    """
    if not isinstance(url, str | httpx.URL):
        raise FetchError(f"invalid URL: expected a string, got {type(url).__name__}")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        raise FetchError(f"invalid URL: {_reason(exc)}") from exc
    scheme = parsed.scheme.lower()
    if scheme not in _ALLOWED_SCHEMES:
        if not scheme:
            raise FetchError(f"invalid URL {str(url)!r}: expected an absolute http(s) URL")
        raise FetchError(f"unsupported URL scheme {scheme!r} (only http and https)")
    host = _ascii_host(parsed)
    if not host:
        raise FetchError(f"invalid URL {str(url)!r}: no host")
    port = parsed.port or (443 if scheme == "https" else 80)
    if not 0 < port < 65536:
        raise FetchError(f"invalid URL {str(url)!r}: port {port} out of range")
    if not allow_private:
        _check_addresses(host, _resolve(host, port, timeout_s))
    return parsed


def _ascii_host(url: httpx.URL) -> str:
    try:
        return url.raw_host.decode("ascii")
    except UnicodeDecodeError as exc:  # pragma: no cover - httpx IDNA-encodes hosts
        raise FetchError(f"invalid host in URL: {exc}") from exc


def _resolve(host: str, port: int, timeout_s: float | None) -> list[str]:
    """Resolve ``host`` to IP address strings, within ``timeout_s`` seconds if given.

    ``getaddrinfo`` cannot be interrupted, so with a timeout it runs in a daemon thread that
    is abandoned (and finishes on its own) if the deadline passes.
    """
    outcome: dict[str, Any] = {}

    def lookup() -> None:
        try:
            outcome["infos"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except BaseException as exc:  # handed to the caller below
            outcome["error"] = exc

    if timeout_s is None:
        lookup()
    else:
        worker = threading.Thread(target=lookup, name=f"modomo-resolve-{host}", daemon=True)
        worker.start()
        worker.join(max(timeout_s, 0.0))
        if worker.is_alive():
            raise _ResolveTimeout(f"timed out resolving host {host!r}")

    error = outcome.get("error")
    if isinstance(error, socket.gaierror):
        raise FetchError(f"could not resolve host {host!r}: {_reason(error)}") from error
    if isinstance(error, UnicodeError):
        raise FetchError(f"invalid host name {host!r}: {error}") from error
    if isinstance(error, OSError):
        raise FetchError(f"could not resolve host {host!r}: {_reason(error)}") from error
    if error is not None:
        raise error
    addresses: list[str] = []
    for _family, _type, _proto, _canon, sockaddr in outcome["infos"]:
        address = str(sockaddr[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise FetchError(f"could not resolve host {host!r}: no addresses")
    return addresses


def _check_addresses(host: str, addresses: Iterable[str]) -> None:
    bare_host = host.strip("[]")
    for address in addresses:
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError as exc:
            raise FetchError(f"refused: {host} resolves to unparseable {address!r}") from exc
        problem = _non_public_reason(ip)
        if problem is None:
            continue
        shown = _display(ip)
        if _same_ip(bare_host, ip):
            raise FetchError(f"refused: {shown} is {problem}")
        raise FetchError(f"refused: {host} resolves to {shown}, which is {problem}")


def _display(ip: _IPAddress) -> str:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return f"::ffff:{ip.ipv4_mapped}"
    return str(ip)


def _same_ip(host: str, ip: _IPAddress) -> bool:
    try:
        return ipaddress.ip_address(host) == ip
    except ValueError:
        return False


def _non_public_reason(ip: _IPAddress) -> str | None:
    """Why ``ip`` must not be contacted, e.g. ``"a loopback address"``; ``None`` if public."""
    if isinstance(ip, ipaddress.IPv6Address):
        for embedded, how in _embedded_ipv4(ip):
            inner = _non_public_reason(embedded)
            if inner is not None:
                return f"{how} form of {embedded}, {inner}"
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED:
        return "a shared (carrier-grade NAT) address"
    if ip.is_private:
        return "a private address"
    if ip.is_reserved:
        return "a reserved address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local:
        return "a site-local address"
    if not ip.is_global:
        return "not a globally routable address"
    return None


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[tuple[ipaddress.IPv4Address, str]]:
    found: list[tuple[ipaddress.IPv4Address, str]] = []
    if ip.ipv4_mapped is not None:
        found.append((ip.ipv4_mapped, "an IPv4-mapped"))
    if ip in _NAT64:
        found.append((ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF), "a NAT64"))
    if ip.sixtofour is not None:
        found.append((ip.sixtofour, "a 6to4"))
    if ip.teredo is not None:
        found.append((ip.teredo[1], "a Teredo"))
    return found


# --------------------------------------------------------------------------------------
# connection layer that re-checks and pins resolved addresses (closes the rebinding window)


class _ResolveTimeout(httpcore.ConnectTimeout):
    """DNS resolution did not finish in time (mapped by httpx to ``httpx.ConnectTimeout``)."""


class _GuardedBackend(httpcore.SyncBackend):
    """Resolve, check every address, then connect to a checked IP literal."""

    def __init__(self, *, allow_private: bool) -> None:
        self._allow_private = allow_private

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        if self._allow_private:
            return super().connect_tcp(host, port, timeout, local_address, socket_options)
        addresses = _resolve(host, port, timeout)
        _check_addresses(host, addresses)
        last_error: httpcore.ConnectError | None = None
        for address in addresses:
            try:
                return super().connect_tcp(address, port, timeout, local_address, socket_options)
            except httpcore.ConnectTimeout:
                raise
            except httpcore.ConnectError as exc:
                last_error = exc
        assert last_error is not None  # addresses is never empty
        raise last_error


class _GuardedTransport(httpx.HTTPTransport):
    """``httpx.HTTPTransport`` whose connections go through :class:`_GuardedBackend`.

    httpx offers no public hook for the network backend, so the connection pool built by the
    base class is replaced by an equivalent one that uses ours (HTTP/1.1, no proxy, no
    retries). ``tests/images/test_fetch.py`` checks that the guard is in effect.
    """

    def __init__(self, *, allow_private: bool) -> None:
        ssl_context = _default_ssl_context()
        super().__init__(verify=ssl_context, trust_env=False)
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context,
            http1=True,
            http2=False,
            retries=0,
            network_backend=_GuardedBackend(allow_private=allow_private),
        )


@functools.cache
def _default_ssl_context() -> ssl.SSLContext:
    """httpx's default verifying context (certifi CA bundle), built once: loading the bundle
    costs milliseconds, and an ``SSLContext`` may be shared between connections/threads."""
    return httpx.create_ssl_context(trust_env=False)


# --------------------------------------------------------------------------------------
# messages


def _reason(exc: BaseException) -> str:
    """A short human reason for ``exc``, unwrapping httpx/httpcore chains to the OS error."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, socket.gaierror) and current.strerror:
            return current.strerror
        if isinstance(current, OSError) and current.strerror:
            return current.strerror
        current = current.__cause__ or current.__context__
    return str(exc) or type(exc).__name__


def _host_port(url: str) -> str:
    try:
        parsed = httpx.URL(url)
    except Exception:  # message helper only
        return url
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    host = parsed.host
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
