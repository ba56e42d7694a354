"""The API's own protections against the real server (issue 19, findings 2, 4, 7 and 8):
body and header size limits answered before the body is read, credentials before the body,
non-finite numbers answered 422, doc pages that need no internet, the credentials as OpenAPI
security schemes, and loopback-only service while auth is disabled, however it is started.

Oversized requests are written on raw sockets, so a test can declare a large body and send
only part of it: the answer has to come from what the server has seen so far."""

from __future__ import annotations

import json
import re
import select
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.api.conftest import Keys
from tests.support import REPO, api_server, free_port, worker_env

pytestmark = pytest.mark.services

MAX_BODY = 1024 * 1024  # the defaults, which the session's server runs with
MAX_HEADERS = 16 * 1024


# -- raw HTTP ------------------------------------------------------------------------------


def connect(base: str) -> socket.socket:
    url = urlsplit(base)
    sock = socket.create_connection((url.hostname, url.port), timeout=10)
    return sock


def head(method: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: test", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_answer(sock: socket.socket, timeout_s: float = 5) -> tuple[int, dict[str, str], dict]:
    """The status, headers and JSON body of the answer on ``sock`` (within ``timeout_s``)."""
    sock.settimeout(timeout_s)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before an answer: {data!r}"
        data += chunk
    raw_head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = raw_head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers["content-length"])
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed inside the answer's body"
        body += chunk
    return int(status_line.split()[1]), headers, json.loads(body[:length])


def timed_health(base: str) -> float:
    start = time.monotonic()
    assert httpx.get(f"{base}/health", timeout=10).status_code == 200
    return time.monotonic() - start


# -- finding 2: body and header limits, credentials before the body ------------------------


def test_declared_oversized_body_is_413_before_it_is_sent(api: str) -> None:
    """A 56 MB Content-Length without credentials, and 64 KiB of it sent: 413 at once, and
    the server stays responsive while the rest never comes."""
    with connect(api) as sock:
        started = time.monotonic()
        sock.sendall(
            head(
                "POST",
                "/keys",
                {"Content-Type": "application/json", "Content-Length": str(56_000_000)},
            )
        )
        sock.sendall(b"[" + b"1," * 32_768)
        code, headers, body = read_answer(sock)
        elapsed = time.monotonic() - started
        assert code == 413, body
        assert "MODOMO_API_MAX_BODY_BYTES" in body["detail"] and "56000000" in body["detail"]
        assert headers["connection"] == "close"
        assert elapsed < 2, elapsed
        assert timed_health(api) < 1


@pytest.mark.parametrize("path", ["/keys", "/schedules", "/process/colors", "/exports"])
def test_no_credential_is_401_before_the_body_is_read(api: str, path: str) -> None:
    """A body within the limit is declared and never sent: the server answers 401 from the
    headers alone (it would wait for the body if it read it first). /keys and /schedules
    take a JSON model that FastAPI reads before resolving dependencies."""
    with connect(api) as sock:
        sock.sendall(
            head("POST", path, {"Content-Type": "application/json", "Content-Length": "500000"})
        )
        sock.sendall(b'{"name": "')
        code, headers, body = read_answer(sock)
        assert code == 401, body
        assert headers["www-authenticate"] == "Bearer"
        assert body["detail"].startswith("credentials required")
        assert headers["connection"] == "close"  # the unread body is not drained


def test_chunked_body_without_credentials_is_401_before_it_is_read(api: str) -> None:
    with connect(api) as sock:
        sock.sendall(
            head(
                "POST",
                "/keys",
                {"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
            )
        )
        sock.sendall(b'a\r\n{"name": "\r\n')  # one chunk, and the stream goes on
        code, _, body = read_answer(sock)
        assert code == 401, body


def test_chunked_body_over_the_limit_is_413_once_the_limit_is_passed(api: str, keys: Keys) -> None:
    """An admin streams an endless chunked body: 413 once 1 MiB has come, long before the
    stream would end, and /health answers promptly meanwhile."""
    piece = b" " * 65536
    chunk = b"%x\r\n%s\r\n" % (len(piece), piece)
    with connect(api) as sock:
        sock.sendall(
            head(
                "POST",
                "/keys",
                {
                    "Content-Type": "application/json",
                    "Transfer-Encoding": "chunked",
                    "X-API-Key": keys.admin,
                },
            )
        )
        sent = 0
        health: list[float] = []
        while sent < 64 * MAX_BODY:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(piece)
            if sent == 8 * 65536:
                health.append(timed_health(api))
        code, headers, body = read_answer(sock)
        assert code == 413, body
        assert "MODOMO_API_MAX_BODY_BYTES" in body["detail"]
        assert sent < 32 * MAX_BODY, sent  # the answer came long before the stream's end
        assert health and health[0] < 1, health


def test_body_within_the_limit_is_served(admin: httpx.Client) -> None:
    name = "x" * 100
    answer = admin.post(
        "/keys",
        content=json.dumps({"name": name, "role": "user"}) + " " * (MAX_BODY - 200),
        headers={"Content-Type": "application/json"},
    )
    assert answer.status_code == 201, answer.text
    assert answer.json()["name"] == name
    admin.delete(f"/keys/{answer.json()['id']}")


def test_bad_credential_with_a_body_is_401(api: str) -> None:
    answer = httpx.post(
        f"{api}/keys", json={"name": "n", "role": "user"}, headers={"X-API-Key": "mdm_nope"}
    )
    assert answer.status_code == 401
    assert "unknown or revoked" in answer.json()["detail"]


@pytest.mark.parametrize("size", [MAX_HEADERS + 1, 1024 * 1024])
def test_oversized_headers_are_431(api: str, size: int) -> None:
    answer = httpx.get(f"{api}/jobs", headers={"X-API-Key": "k" * size}, timeout=30)
    assert answer.status_code == 431
    assert "MODOMO_API_MAX_HEADER_BYTES" in answer.json()["detail"]
    assert timed_health(api) < 1


def test_headers_within_the_limit_are_served(user: httpx.Client) -> None:
    answer = user.get("/jobs", headers={"X-Padding": "p" * (MAX_HEADERS - 1024)})
    assert answer.status_code == 200, answer.text


def test_limits_come_from_the_settings(tmp_path: Path) -> None:
    with api_server(
        log_path=tmp_path / "api.log",
        MODOMO_API_MAX_BODY_BYTES="2048",
        MODOMO_API_MAX_HEADER_BYTES="4096",
    ) as base:
        big = httpx.post(f"{base}/process/colors", content=b"{" + b" " * 3000 + b"}")
        assert big.status_code == 413 and "2048" in big.json()["detail"]
        long = httpx.get(f"{base}/health", headers={"X-Padding": "p" * 5000})
        assert long.status_code == 431 and "4096" in long.json()["detail"]


# -- finding 4: non-finite numbers -----------------------------------------------------------


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e309"])
@pytest.mark.parametrize(
    ("path", "template", "field"),
    [
        ("/exports", '{"format": "coco", "min_confidence": %s}', "min_confidence"),
        ("/exports", '{"format": "coco", "ratios": [%s, 0.5, 0.5]}', "ratios"),
        ("/process/colors", '{"countdown": %s}', "countdown"),
        ("/process/colors", '{"expires": %s}', "expires"),
    ],
)
def test_non_finite_body_number_is_422_naming_the_field(
    user: httpx.Client, literal: str, path: str, template: str, field: str
) -> None:
    answer = user.post(
        path, content=template % literal, headers={"Content-Type": "application/json"}
    )
    assert answer.status_code == 422, answer.text
    errors = answer.json()["detail"]
    assert any(e["loc"][:2] == ["body", field] for e in errors), errors
    shown = "-Infinity" if literal == "-Infinity" else "NaN" if literal == "NaN" else "Infinity"
    assert shown in answer.text


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e309", "NaN"])
def test_non_finite_query_number_is_422_naming_the_field(user: httpx.Client, value: str) -> None:
    for path, method, field in (
        ("/objects", "GET", "min_confidence"),
        ("/exports", "POST", "min_confidence"),
        ("/process/colors", "POST", "countdown"),
    ):
        answer = user.request(method, path, params={field: value})
        assert answer.status_code == 422, (path, answer.text)
        errors = answer.json()["detail"]
        assert any(e["loc"][:2] == ["query", field] for e in errors), errors


def test_every_number_field_is_bounded_on_both_sides(api: str) -> None:
    """So a non-finite value can never be accepted: NaN fails every comparison and an
    infinity one of the two bounds. Every query parameter and request body of the OpenAPI
    document, following its references to the components."""
    document = httpx.get(f"{api}/openapi.json").json()
    components = document.get("components", {}).get("schemas", {})
    unbounded: list[str] = []
    seen: set[str] = set()
    checked = 0

    def walk(schema: object, where: str) -> None:
        nonlocal checked
        if isinstance(schema, list):
            for i, item in enumerate(schema):
                walk(item, f"{where}[{i}]")
            return
        if not isinstance(schema, dict):
            return
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref not in seen:
            seen.add(ref)
            walk(components[ref.rsplit("/", 1)[-1]], ref)
        if schema.get("type") == "number":
            checked += 1
            low = "minimum" in schema or "exclusiveMinimum" in schema
            high = "maximum" in schema or "exclusiveMaximum" in schema
            if not (low and high):
                unbounded.append(f"{where}: {schema}")
        for key, value in schema.items():
            walk(value, f"{where}.{key}")

    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            walk(operation.get("parameters", []), f"{method} {path} parameters")
            walk(operation.get("requestBody", {}), f"{method} {path} body")
    assert checked >= 4, "no number fields found"
    assert not unbounded, unbounded


# -- finding 7: doc pages without internet, security schemes ---------------------------------


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_doc_pages_load_only_assets_the_server_serves(api: str, page: str) -> None:
    answer = httpx.get(f"{api}{page}")
    assert answer.status_code == 200
    html = answer.text
    assert "://" not in html.replace("http://www.w3.org", ""), "an absolute URL in the page"
    urls = set(re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html))
    urls |= set(re.findall(r"""(?:url|spec-url)\s*[:=]\s*["']([^"']+)["']""", html))
    assert "/openapi.json" in urls
    assert any(u.endswith(".js") for u in urls), urls
    for url in urls:
        assert url.startswith("/"), url
        asset = httpx.get(f"{api}{url}")
        assert asset.status_code == 200, url
        assert asset.content, url


def test_swagger_oauth2_redirect_page_is_served(api: str) -> None:
    answer = httpx.get(f"{api}/docs/oauth2-redirect")
    assert answer.status_code == 200 and "oauth2" in answer.text.lower()


def test_openapi_declares_the_credentials(api: str) -> None:
    document = httpx.get(f"{api}/openapi.json").json()
    schemes = document["components"]["securitySchemes"]
    by_type = {s["type"]: s for s in schemes.values()}
    assert by_type["apiKey"]["in"] == "header" and by_type["apiKey"]["name"] == "X-API-Key"
    assert by_type["http"]["scheme"] == "bearer"
    either = [{name: []} for name in schemes]
    open_paths = {"/health", "/ready", "/dashboard"}
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if path in open_paths:
                assert "security" not in operation, (method, path)
            else:
                assert operation.get("security") == either, (method, path)


def test_swagger_authorize_header_reaches_the_api(api: str, keys: Keys) -> None:
    """What Swagger UI sends once authorised with each scheme is accepted."""
    document = httpx.get(f"{api}/openapi.json").json()
    for scheme in document["components"]["securitySchemes"].values():
        if scheme["type"] == "apiKey":
            headers = {scheme["name"]: keys.user}
        else:
            headers = {"Authorization": f"{scheme['scheme'].capitalize()} {keys.user}"}
        assert httpx.get(f"{api}/jobs", headers=headers).status_code == 200, scheme


# -- finding 8: auth disabled serves loopback clients only -----------------------------------


def test_auth_disabled_refuses_proxied_requests(tmp_path: Path) -> None:
    """A reverse proxy on this machine forwards outside clients from loopback: uvicorn takes
    the client from X-Forwarded-For (it trusts 127.0.0.1 by default), and the app refuses
    any request that names a proxy at all, whatever the path."""
    with api_server(log_path=tmp_path / "api.log", MODOMO_AUTH_DISABLED="1") as base:
        assert httpx.get(f"{base}/jobs").status_code == 200
        for path in ("/health", "/jobs", "/docs", "/openapi.json"):
            for header in (
                {"X-Forwarded-For": "203.0.113.9"},
                {"X-Forwarded-For": "127.0.0.1"},
                {"Forwarded": "for=203.0.113.9"},
                {"X-Real-IP": "203.0.113.9"},
            ):
                answer = httpx.get(f"{base}{path}", headers=header)
                assert answer.status_code == 403, (path, header)
                assert "MODOMO_AUTH_DISABLED" in answer.json()["detail"]
        assert "only loopback clients are served" in (tmp_path / "api.log").read_text()


_NETNS_CLIENT = r"""
import json, sys, time, httpx
port = int(sys.argv[1])
deadline = time.monotonic() + 90
while True:
    try:
        if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
            break
    except httpx.HTTPError:
        pass
    assert time.monotonic() < deadline, "no /health"
    time.sleep(0.3)
out = {}
for host in ("127.0.0.1", "192.0.2.77"):
    for path in ("/health", "/jobs", "/docs"):
        answer = httpx.get(f"http://{host}:{port}{path}", timeout=10)
        body = answer.json() if "json" in answer.headers.get("content-type", "") else None
        out[f"{host}{path}"] = [answer.status_code, body]
print(json.dumps(out))
"""


def test_uvicorn_on_all_addresses_with_auth_disabled_refuses_other_clients(
    tmp_path: Path,
) -> None:
    """``uvicorn modomo.api:app --host 0.0.0.0`` with auth disabled (``modomo api`` refuses
    that binding, plain uvicorn does not): a client on another address of the machine gets
    403, a loopback client is served, and the server says so when it starts. The machine is
    a network namespace made here, whose loopback interface also holds 192.0.2.77 (a
    documentation address): nothing leaves it."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs unshare and ip (util-linux, iproute2) for a network namespace")
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a network namespace here: {probe.stderr.strip()}")
    port = free_port()
    client = tmp_path / "client.py"
    client.write_text(_NETNS_CLIENT)
    log = tmp_path / "uvicorn.log"
    script = (
        "ip link set lo up && ip addr add 192.0.2.77/32 dev lo || exit 3\n"
        f"{sys.executable} -m uvicorn modomo.api:app --host 0.0.0.0 --port {port} "
        f"> {log} 2>&1 &\n"
        "server=$!\n"
        f"{sys.executable} {client} {port}; status=$?\n"
        "kill $server; wait $server\n"
        "exit $status\n"
    )
    done = subprocess.run(
        ["unshare", "--net", "sh", "-c", script],
        cwd=REPO,
        env=worker_env(MODOMO_AUTH_DISABLED="1"),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, (done.stdout, done.stderr, log.read_text())
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["127.0.0.1/health"][0] == 200
    assert seen["127.0.0.1/docs"][0] == 200
    for path in ("/health", "/jobs", "/docs"):
        code, body = seen[f"192.0.2.77{path}"]
        assert code == 403, (path, code, body)
        assert "only loopback clients" in body["detail"] and "192.0.2.77" in body["detail"]
    assert "MODOMO_AUTH_DISABLED is set" in log.read_text()
