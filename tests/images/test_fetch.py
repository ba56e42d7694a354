"""Tests for modomo.images.fetch against a real HTTP server on 127.0.0.1 (no other network)."""

from __future__ import annotations

import contextlib
import io
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from PIL import Image

from modomo.images import fetch as fetch_module
from modomo.images.fetch import (
    MAX_REDIRECTS,
    FetchedImage,
    FetchError,
    check_url_allowed,
    fetch_image,
    unthrottled,
)
from modomo.images.loading import ImageError, load_image

MAX_BYTES = 100_000
UA = "modomo-tests/1.0"


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), (12, 34, 56)).save(buffer, "PNG")
    return buffer.getvalue()


PNG = png_bytes()
HTML = b"<!DOCTYPE html><html><body>Please log in</body></html>"


@dataclass
class Server:
    base: str
    port: int
    stop: threading.Event
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Host)


class Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # silence stderr
        pass

    def send(self, status: int, body: bytes = b"", content_type: str | None = None) -> None:
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def redirect(self, location: str, status: int = 302) -> None:
        self.send_response(status)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def trickle(self, chunk: bytes, interval: float, content_type: str = "image/png") -> None:
        """Send headers, then ``chunk`` every ``interval`` s until stopped or disconnected."""
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.end_headers()  # no Content-Length: the body ends when the connection closes
        try:
            if chunk:
                self.wfile.write(PNG[:16])
                self.wfile.flush()
            while not self.server.stop.wait(interval):
                if chunk:
                    self.wfile.write(chunk)
                    self.wfile.flush()
        except OSError:  # the client gave up
            pass

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        self.server.requests.append((self.path, self.headers.get("Host")))
        path = self.path
        if path == "/image.png":
            self.send(200, PNG, "image/png")
        elif path == "/image-charset":
            self.send(200, PNG, "image/png; charset=binary")
        elif path == "/image-no-type":
            self.send(200, PNG)
        elif path == "/image-octet":
            self.send(200, PNG, "application/octet-stream")
        elif path == "/html-as-jpeg":
            self.send(200, HTML, "image/jpeg")
        elif path == "/html-as-octet":
            self.send(200, HTML, "application/octet-stream")
        elif path == "/html":
            self.send(200, HTML, "text/html; charset=utf-8")
        elif path == "/empty":
            self.send(200, b"", "image/png")
        elif path == "/missing":
            self.send(404, b"nope", "text/plain")
        elif path == "/error":
            self.send(500, b"boom", "text/plain")
        elif path.startswith("/hops/"):  # /hops/N redirects N times, then serves the image
            remaining = int(path.rsplit("/", 1)[1])
            if remaining == 0:
                self.send(200, PNG, "image/png")
            else:
                self.redirect(f"/hops/{remaining - 1}", status=301 if remaining % 2 else 302)
        elif path == "/relative-redirect":
            self.redirect("image.png", status=307)
        elif path == "/redirect-no-location":
            self.send(302, b"")
        elif path == "/redirect-to-ftp":
            self.redirect("ftp://example.com/image.png")
        elif path == "/loop":
            self.redirect("/loop")
        elif path == "/big-declared":
            self.send(200, PNG + b"\x00" * (MAX_BYTES + 1), "image/png")
        elif path == "/big-undeclared":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            with contextlib.suppress(OSError):  # the client hangs up at max_bytes
                self.wfile.write(PNG + b"\x00" * (MAX_BYTES + 1))
        elif path == "/slow":
            self.trickle(b"\x00", 0.05)
        elif path == "/stall":
            self.trickle(b"", 0.05)
        else:
            self.send(404, b"unknown test path", "text/plain")


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins every handler thread
    block_on_close = True
    stop: threading.Event
    requests: list[tuple[str, str | None]]


@pytest.fixture
def server() -> Iterator[Server]:
    httpd = _Server(("127.0.0.1", 0), Handler)
    httpd.stop = threading.Event()
    httpd.requests = []
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    port = httpd.server_address[1]
    try:
        yield Server(f"http://127.0.0.1:{port}", port, httpd.stop, httpd.requests)
    finally:
        httpd.stop.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)
        assert not thread.is_alive()


def fetch(url: str, **overrides: object) -> FetchedImage:
    options: dict[str, object] = {
        "allow_private": True,  # the test server is on loopback
        "max_bytes": MAX_BYTES,
        "timeout_s": 5.0,
        "user_agent": UA,
        "throttle": unthrottled,  # the shared per-host limit is tests/test_hostlimit.py's
    }
    options.update(overrides)
    return fetch_image(url, **options)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------
# successful fetches


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/image.png", "image/png"),  # plain image
        ("/image-charset", "image/png; charset=binary"),  # parameters are ignored
        ("/image-no-type", None),  # no Content-Type: sniffed
        ("/image-octet", "application/octet-stream"),  # generic binary type: sniffed
    ],
)
def test_fetch_image(server: Server, path: str, content_type: str | None) -> None:
    result = fetch(server.base + path)

    assert result == FetchedImage(
        url=server.base + path,
        final_url=server.base + path,
        data=PNG,
        content_type=content_type,
    )
    assert load_image(result.data, max_pixels=1000).rgb.shape == (6, 8, 3)


def test_user_agent_and_headers_are_sent(server: Server) -> None:
    seen: dict[str, str] = {}

    def capture(request: httpx.Request) -> None:
        seen.update(request.headers)

    with httpx.Client(event_hooks={"request": [capture]}) as client:
        fetch(server.base + "/image.png", client=client)
    assert seen["user-agent"] == UA
    assert seen["accept-encoding"] == "identity"


def test_redirect_chain_is_followed(server: Server) -> None:
    result = fetch(server.base + f"/hops/{MAX_REDIRECTS}")

    assert result.url == server.base + f"/hops/{MAX_REDIRECTS}"
    assert result.final_url == server.base + "/hops/0"
    assert result.data == PNG
    assert [path for path, _ in server.requests] == [
        f"/hops/{n}" for n in range(MAX_REDIRECTS, -1, -1)
    ]


def test_relative_redirect(server: Server) -> None:
    assert fetch(server.base + "/relative-redirect").final_url == server.base + "/image.png"


def test_caller_supplied_client_is_used_and_left_open(server: Server) -> None:
    with httpx.Client() as client:
        assert fetch(server.base + "/hops/2", client=client).data == PNG
        assert not client.is_closed


# --------------------------------------------------------------------------------------
# failures


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/missing", r"^HTTP 404 from http://127\.0\.0\.1:\d+/missing \(Not Found\)$"),  # 404
        ("/error", r"^HTTP 500 from .*/error"),  # server error
        ("/html", r"^not an image: content-type text/html$"),  # wrong type, refused early
        ("/html-as-jpeg", r"^not an image: content-type image/jpeg but the body looks like "
         r"an HTML page$"),  # lying Content-Type
        ("/html-as-octet", r"^not an image: content-type application/octet-stream but the "
         r"body looks like an HTML page$"),  # generic type, sniffed
        ("/empty", r"^not an image: empty response body$"),  # nothing at all
        (f"/hops/{MAX_REDIRECTS + 1}", rf"^too many redirects \(more than {MAX_REDIRECTS}\)"),
        ("/loop", r"^too many redirects"),  # redirect loop
        ("/redirect-no-location", r"^HTTP 302 redirect from .* has no Location$"),
        ("/redirect-to-ftp", r"^unsupported URL scheme 'ftp'"),  # hop re-checked
        ("/big-declared", rf"^download exceeds {MAX_BYTES} bytes \(Content-Length: \d+\)$"),
        ("/big-undeclared", rf"^download exceeds {MAX_BYTES} bytes$"),  # counted while streaming
    ],
)  # fmt: skip
def test_fetch_failures(server: Server, path: str, message: str) -> None:
    with pytest.raises(FetchError, match=message):
        fetch(server.base + path)


@pytest.mark.parametrize(
    "path",
    [
        "/slow",  # trickles a byte every 50 ms: only the wall-clock deadline stops it
        "/stall",  # sends headers then nothing: httpx's read timeout stops it
    ],
)
def test_timeout_is_a_wall_clock_deadline(server: Server, path: str) -> None:
    started = time.monotonic()
    with pytest.raises(FetchError, match=r"^timed out after 1 s$"):
        fetch(server.base + path, timeout_s=1.0)
    elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 3.0


def test_connection_refused() -> None:
    with socket.socket() as probe:  # find a port, then close it so nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(FetchError, match=rf"^could not connect to 127\.0\.0\.1:{port}: .*refused"):
        fetch(f"http://127.0.0.1:{port}/image.png")


def test_loopback_is_refused_before_connecting(server: Server) -> None:
    with pytest.raises(FetchError, match=r"^refused: 127\.0\.0\.1 is a loopback address$"):
        fetch(server.base + "/image.png", allow_private=False)
    assert server.requests == []


def test_redirect_to_a_private_address_is_refused() -> None:
    requested: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requested.append(str(request.url))
        if request.url.host == "93.184.216.34":  # a public literal: passes the check
            return httpx.Response(302, headers={"Location": "http://169.254.169.254/latest"})
        return httpx.Response(200, content=PNG, headers={"Content-Type": "image/png"})

    with (
        httpx.Client(transport=httpx.MockTransport(handler)) as client,
        pytest.raises(FetchError, match=r"^refused: 169\.254\.169\.254 is a link-local address$"),
    ):
        fetch("http://93.184.216.34/photo.jpg", allow_private=False, client=client)
    assert requested == ["http://93.184.216.34/photo.jpg"]  # the metadata URL was never hit


def test_fetch_error_hierarchy() -> None:
    assert issubclass(FetchError, ImageError)
    assert issubclass(FetchError, ValueError)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/a.png",  # wrong scheme
        "not a url",  # no scheme
        "http://",  # no host
        "http://[::1",  # broken IPv6 literal
        "http://example.com:99999/",  # port out of range
    ],
)
def test_bad_urls_raise_fetch_error_only(url: str) -> None:
    with pytest.raises(FetchError):
        fetch(url)
    with pytest.raises(FetchError):
        fetch(url, allow_private=False)


def test_bad_limits_are_programming_errors() -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        fetch("http://93.184.216.34/", max_bytes=0)
    with pytest.raises(ValueError, match="timeout_s"):
        fetch("http://93.184.216.34/", timeout_s=0)


# --------------------------------------------------------------------------------------
# address checks


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1/", r"^refused: 127\.0\.0\.1 is a loopback address$"),  # loopback
        ("http://localhost/", r"^refused: localhost resolves to 127\.0\.0\.1, which is a "
         r"loopback address$"),  # name for loopback
        ("http://127.1/", r"^refused: 127\.1 resolves to 127\.0\.0\.1"),  # short IPv4 form
        ("http://2130706433/", r"^refused: .* 127\.0\.0\.1"),  # decimal IPv4 form
        ("http://10.0.0.1/", r"^refused: 10\.0\.0\.1 is a private address$"),  # RFC 1918
        ("http://172.16.0.1/", r"^refused: 172\.16\.0\.1 is a private address$"),  # RFC 1918
        ("http://192.168.1.1/", r"^refused: 192\.168\.1\.1 is a private address$"),  # RFC 1918
        ("http://169.254.169.254/latest/meta-data/", r"^refused: 169\.254\.169\.254 is a "
         r"link-local address$"),  # cloud metadata endpoint
        ("http://100.64.0.1/", r"^refused: 100\.64\.0\.1 is a shared"),  # carrier-grade NAT
        ("http://[::1]/", r"^refused: ::1 is a loopback address$"),  # IPv6 loopback
        ("http://[fe80::1]/", r"^refused: fe80::1 is a link-local address$"),  # IPv6 link-local
        ("http://[fd00::1]/", r"^refused: fd00::1 is a private address$"),  # IPv6 ULA
        ("http://224.0.0.1/", r"^refused: 224\.0\.0\.1 is a multicast address$"),  # multicast
        ("http://[ff02::1]/", r"^refused: ff02::1 is a multicast address$"),  # IPv6 multicast
        ("http://0.0.0.0/", r"^refused: 0\.0\.0\.0 is an unspecified address$"),  # unspecified
        ("http://240.0.0.1/", r"^refused: 240\.0\.0\.1 is a"),  # reserved (class E)
        ("http://[::ffff:127.0.0.1]/", r"^refused: ::ffff:127\.0\.0\.1 is an IPv4-mapped form "
         r"of 127\.0\.0\.1, a loopback address$"),  # IPv4-mapped IPv6
        ("http://[64:ff9b::a00:1]/", r"^refused: .* NAT64 form of 10\.0\.0\.1"),  # NAT64
        ("http://[2002:c0a8:101::]/", r"^refused: .* 6to4 form of 192\.168\.1\.1"),  # 6to4
        ("ftp://93.184.216.34/a.png", r"^unsupported URL scheme 'ftp'"),  # FTP
        ("file:///etc/passwd", r"^unsupported URL scheme 'file'"),  # local files
        ("gopher://93.184.216.34/", r"^unsupported URL scheme 'gopher'"),  # classic SSRF
        ("/relative/path.png", r"^invalid URL .*absolute"),  # not absolute
    ],
)  # fmt: skip
def test_check_url_refuses(url: str, message: str) -> None:
    with pytest.raises(FetchError, match=message):
        check_url_allowed(url, allow_private=False)


@pytest.mark.parametrize(
    "url",
    [
        "http://93.184.216.34/",  # public IPv4 literal (resolves locally, no network)
        "https://93.184.216.34:8443/a/b.jpg?x=1",  # https, port, path and query
        "HTTP://8.8.8.8/",  # scheme is case-insensitive
        "http://[2606:4700:4700::1111]/",  # public IPv6 literal
    ],
)
def test_check_url_allows_public_literals(url: str) -> None:
    check_url_allowed(url, allow_private=False)


@pytest.mark.parametrize(
    ("url", "refused"),
    [
        ("http://127.0.0.1/", False),  # loopback is fine when private is allowed
        ("http://10.0.0.1/", False),  # so is RFC 1918
        ("ftp://127.0.0.1/", True),  # but never another scheme
    ],
)
def test_check_url_with_allow_private(url: str, refused: bool) -> None:
    if refused:
        with pytest.raises(FetchError):
            check_url_allowed(url, allow_private=True)
    else:
        check_url_allowed(url, allow_private=True)


# --------------------------------------------------------------------------------------
# DNS behaviour (getaddrinfo is replaced; IP literals still go to the real resolver)


Resolver = Callable[[str], list[str]]


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> Callable[[Resolver], None]:
    real = socket.getaddrinfo

    def install(resolver: Resolver) -> None:
        def getaddrinfo(host: object, port: object, *args: object, **kwargs: object) -> list:
            name = host.decode() if isinstance(host, bytes) else str(host)
            if not name.endswith(".test"):
                return real(host, port, *args, **kwargs)  # type: ignore[arg-type]
            return [
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))
                for address in resolver(name)
            ]

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)

    return install


def test_unresolvable_host(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> list:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)
    with pytest.raises(FetchError, match=r"^could not resolve host 'nowhere\.test': Name or"):
        check_url_allowed("http://nowhere.test/", allow_private=False)
    with pytest.raises(FetchError, match=r"^could not resolve host 'nowhere\.test'"):
        fetch("http://nowhere.test/", allow_private=False)


def test_any_private_address_in_the_answer_is_refused(fake_dns) -> None:
    fake_dns(lambda name: ["93.184.216.34", "10.1.2.3"])
    with pytest.raises(
        FetchError, match=r"^refused: mixed\.test resolves to 10\.1\.2\.3, which is a private"
    ):
        check_url_allowed("http://mixed.test/", allow_private=False)


def test_slow_dns_counts_against_the_deadline(fake_dns) -> None:
    release = threading.Event()

    def slow(name: str) -> list[str]:
        release.wait(5)
        return ["93.184.216.34"]

    fake_dns(slow)
    started = time.monotonic()
    try:
        with pytest.raises(FetchError, match=r"^timed out after 0\.5 s$"):
            fetch("http://slow-dns.test/", allow_private=False, timeout_s=0.5)
    finally:
        release.set()
    assert time.monotonic() - started < 2.0


def test_dns_rebinding_is_caught_at_connect_time(server: Server, fake_dns) -> None:
    answers = iter([["93.184.216.34"]])  # public for the check, then loopback

    fake_dns(lambda name: next(answers, ["127.0.0.1"]))
    with pytest.raises(
        FetchError, match=r"^refused: rebind\.test resolves to 127\.0\.0\.1, which is a loopback"
    ):
        fetch(f"http://rebind.test:{server.port}/image.png", allow_private=False)
    assert server.requests == []


def test_connection_goes_to_the_checked_address(
    server: Server, fake_dns, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pretend loopback is public so the guarded connection layer is exercised end to end:
    # it must connect to the resolved IP while keeping the hostname in the Host header.
    real_reason = fetch_module._non_public_reason
    monkeypatch.setattr(
        fetch_module,
        "_non_public_reason",
        lambda ip: None if str(ip) == "127.0.0.1" else real_reason(ip),
    )
    fake_dns(lambda name: ["127.0.0.1"])

    result = fetch(f"http://pinned.test:{server.port}/hops/1", allow_private=False)

    assert result.data == PNG
    assert result.final_url == f"http://pinned.test:{server.port}/hops/0"
    assert server.requests == [
        ("/hops/1", f"pinned.test:{server.port}"),
        ("/hops/0", f"pinned.test:{server.port}"),
    ]
