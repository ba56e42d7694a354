"""Hostile input end to end: ``modomo process`` (embedded default: SQLite, in-process worker)
over a folder of every hostile image and URL lists of hostile URLs, then the job record.

Each hostile input fails as its own scene with a reason that names what was wrong; the odd but
valid images (animated, CMYK, 16-bit, EXIF-rotated, 1 x 1, 30000 x 10) are processed; the good
images are processed; nothing is lost (``processed + failed == total == inputs``). A second run
with ``MODOMO_ALLOW_PRIVATE_URLS=true`` reaches the loopback server for the cases that need a
response: over the size cap, trickling, HTML served as ``image/jpeg``, a 404 and a redirect.

The API's hostile requests (path traversal in a queue name, huge lists, enormous limits,
forged, revoked and wrong-role credentials, malformed JSON) run against this test's own
``modomo api`` on the session's services (read-only or self-cancelling requests only).
"""

from __future__ import annotations

import contextlib
import io
import json
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
import uuid
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.support import REPO, encode, noise_image, write_unique_images

pytestmark = pytest.mark.faults

MAX_DOWNLOAD = 200_000


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width x height`` (a decompression bomb's header)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body))
            + kind
            + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 1024, 9))
        + chunk(b"IEND", b"")
    )


def exif_rotated_jpeg() -> bytes:
    """80 x 40 as stored, orientation 6: upright it is 40 wide, 80 high, red on top."""
    stored = np.zeros((40, 80, 3), np.uint8)
    stored[:, :40] = (255, 0, 0)
    stored[:, 40:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(stored, "JPEG", quality=95, exif=exif.tobytes())


def odd_but_valid(folder: Path) -> dict[str, tuple[int, int]]:
    """Write the odd but valid images; returns {name: upright (width, height)}."""
    frames = [Image.new("RGB", (16, 12), c) for c in ((250, 10, 10), (10, 250, 10), (9, 9, 250))]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    (folder / "animated.gif").write_bytes(gif.getvalue())
    cmyk = io.BytesIO()
    Image.fromarray(noise_image("cmyk", (48, 64))).convert("CMYK").save(cmyk, "JPEG", quality=95)
    (folder / "cmyk.jpg").write_bytes(cmyk.getvalue())
    sixteen = io.BytesIO()
    ramp = (np.arange(32 * 48, dtype=np.uint32).reshape(32, 48) * 40).astype(np.uint16)
    Image.fromarray(ramp).save(sixteen, "PNG")
    assert Image.open(io.BytesIO(sixteen.getvalue())).mode.startswith("I;16")
    (folder / "sixteen-bit.png").write_bytes(sixteen.getvalue())
    (folder / "exif-rotated.jpg").write_bytes(exif_rotated_jpeg())
    (folder / "one-pixel.png").write_bytes(encode(np.full((1, 1, 3), 77, np.uint8)))
    strip = np.zeros((10, 30000, 3), np.uint8)
    strip[:, ::2] = (200, 180, 20)
    (folder / "strip-30000x10.png").write_bytes(encode(strip))
    return {
        "animated.gif": (16, 12),
        "cmyk.jpg": (64, 48),
        "sixteen-bit.png": (48, 32),
        "exif-rotated.jpg": (40, 80),
        "one-pixel.png": (1, 1),
        "strip-30000x10.png": (30000, 10),
    }


def hostile_files(folder: Path) -> dict[str, str]:
    """Write the hostile files; returns {name: a phrase its failure reason must contain}."""
    jpeg = encode(noise_image("truncated", (256, 256)), "JPEG")
    (folder / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (folder / "headers-only.jpg").write_bytes(jpeg[:40])
    (folder / "bomb.png").write_bytes(png_claiming(100_000, 100_000))
    (folder / "page.jpg").write_bytes(b"<!DOCTYPE html><html><body>Sign in</body></html>")
    (folder / "empty.png").write_bytes(b"")
    (folder / "random.webp").write_bytes(b"\x01\x02" + bytes(range(256)) * 8)
    return {
        "truncated.jpg": "truncated or corrupt",
        "headers-only.jpg": "truncated or corrupt",
        "bomb.png": "decompression bomb",
        "page.jpg": "HTML",
        "empty.png": "0 bytes",
        "random.webp": "not an image",
    }


PNG_OK = encode(noise_image("served-ok"))
PNG_REDIRECTED = encode(noise_image("served-after-redirect"))


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes, content_type: str, length: bool = True) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(OSError):  # the client hangs up at the cap
            self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        self.server.hits.append(self.path)
        if self.path == "/ok.png":
            self._send(200, PNG_OK, "image/png")
        elif self.path == "/after-redirect.png":
            self._send(200, PNG_REDIRECTED, "image/png")
        elif self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/after-redirect.png")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/redirect-to-metadata":
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/big-declared.png":
            self._send(200, PNG_OK + b"\x00" * (MAX_DOWNLOAD + 1), "image/png")
        elif self.path == "/big-undeclared.png":
            self._send(200, PNG_OK + b"\x00" * (4 * MAX_DOWNLOAD), "image/png", length=False)
        elif self.path == "/html-as-jpeg.jpg":
            self._send(200, b"<!DOCTYPE html><html><body>Login</body></html>", "image/jpeg")
        elif self.path == "/trickle.png":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            with contextlib.suppress(OSError):
                self.wfile.write(PNG_OK[:16])
                while not self.server.stop.wait(0.05):
                    self.wfile.write(b"\x00")
                    self.wfile.flush()
        else:
            self._send(404, b"no such thing", "text/plain")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    stop: threading.Event
    hits: list[str]


@pytest.fixture
def web() -> Iterator[_Server]:
    server = _Server(("127.0.0.1", 0), _Handler)
    server.stop = threading.Event()
    server.hits = []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.stop.set()
        server.shutdown()
        server.server_close()
        thread.join(10)


def modomo(*args: str, data_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``modomo`` on the embedded default: nothing configured but the data folder."""
    environment = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(data_dir),
        "MODOMO_DATA_DIR": str(data_dir),
        "COLUMNS": "200",
        "PYTHONUNBUFFERED": "1",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "modomo.cli", *args],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=240,
    )


def jobs_in(data_dir: Path) -> list[str]:
    with sqlite3.connect(data_dir / "modomo.sqlite") as db:
        return [row[0] for row in db.execute("SELECT id FROM jobs ORDER BY created_at")]


def job_record(data_dir: Path, job_id: str) -> dict:
    shown = modomo("jobs", "show", job_id, "--json", data_dir=data_dir)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    return json.loads(shown.stdout)


def scenes_of(data_dir: Path, job_id: str) -> dict[str, dict]:
    """{source_key: scene row} of one job's scenes."""
    with sqlite3.connect(data_dir / "modomo.sqlite") as db:
        db.row_factory = sqlite3.Row
        rows = db.execute(
            "SELECT s.source_key, s.status, s.width, s.height, s.colors, s.image_key "
            "FROM scenes s JOIN job_scenes j ON j.scene_id = s.id WHERE j.job_id = ?",
            (job_id,),
        ).fetchall()
    return {row["source_key"]: dict(row) for row in rows}


def name_of(source_key: str) -> str:
    return source_key.rsplit("/", 1)[-1]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_every_hostile_input_fails_alone_with_its_reason(tmp_path: Path, web: _Server) -> None:
    data_dir = tmp_path / "data"
    photos = tmp_path / "photos"
    good = write_unique_images(photos, 4, tag="good")
    odd = odd_but_valid(photos)
    hostile = hostile_files(photos)
    port = web.server_address[1]
    refused_urls = {
        f"http://127.0.0.1:{port}/ok.png": "loopback",
        f"http://localhost:{port}/ok.png": "loopback",  # a name that resolves to 127.0.0.1
        f"http://[::1]:{port}/ok.png": "loopback",
        "http://169.254.169.254/latest/meta-data/": "link-local",
        "http://10.1.2.3/room.jpg": "private",
        "http://192.168.0.1/room.jpg": "private",
        "http://[fe80::1]/room.jpg": "link-local",
        "http://224.0.0.1/room.jpg": "multicast",
        "http://0.0.0.0/room.jpg": "refused",
        f"http://127.0.0.1:{port}/redirect-to-metadata": "loopback",
    }
    not_http = {
        "file:///etc/passwd": "cannot read",  # only http(s) lines are URLs: a missing path
        "gopher://127.0.0.1:70/1": "cannot read",
    }
    (tmp_path / "urls.txt").write_text("\n".join([*refused_urls, *not_http]) + "\n")

    done = modomo("process", str(photos), str(tmp_path / "urls.txt"), data_dir=data_dir)
    assert done.returncode == 0, done.stdout + done.stderr
    assert web.hits == []  # nothing private was ever connected to
    (job_id,) = jobs_in(data_dir)
    job = job_record(data_dir, job_id)
    inputs = len(good) + len(odd) + len(hostile) + len(refused_urls) + len(not_http)
    expected_failures = len(hostile) + len(refused_urls) + len(not_http)
    assert job["status"] == "completed", job
    assert (job["total"], job["processed"], job["failed"], job["pending"]) == (
        inputs,
        inputs - expected_failures,
        expected_failures,
        0,
    ), job
    failures = {f["source_key"]: f for f in job["failures"]}
    assert len(failures) == expected_failures, sorted(failures)
    for name, phrase in hostile.items():
        (failure,) = [f for key, f in failures.items() if name_of(key) == name]
        assert phrase.lower() in failure["error"].lower(), (name, failure)
    assert "10000000000 pixels" in failures[f"file:{photos / 'bomb.png'}"]["error"]
    for url, phrase in refused_urls.items():
        assert url in failures, (url, sorted(failures))
        assert phrase in failures[url]["error"], (url, failures[url])
        assert failures[url]["stage"] == "ingest"
    for line, phrase in not_http.items():
        (failure,) = [f for key, f in failures.items() if line.split("://")[1] in key]
        assert phrase in failure["error"], failure

    scenes = scenes_of(data_dir, job_id)
    assert len(scenes) == inputs  # every input has its scene: nothing lost, nothing merged
    processed = {name_of(k): s for k, s in scenes.items() if k not in failures}
    assert set(processed) == {p.name for p in good} | set(odd)
    for name, scene in processed.items():
        assert scene["colors"] is not None, name
        palette = json.loads(scene["colors"])["palette"]
        assert abs(sum(c["share"] for c in palette) - 1) < 1e-3, name
        assert scene["image_key"], name
    for name, size in odd.items():
        assert (processed[name]["width"], processed[name]["height"]) == size, name
    animated = json.loads(processed["animated.gif"]["colors"])
    assert animated["dominant"]["rgb"][0] > 200  # the first frame (red), not a blend

    # the stored EXIF-rotated image, decoded as every stage decodes it, is upright
    from modomo.images import load_image

    key = processed["exif-rotated.jpg"]["image_key"]
    stored = next((data_dir / "artifacts").rglob(Path(key).name)).read_bytes()
    upright = load_image(stored, max_pixels=10**6).rgb
    assert upright.shape == (80, 40, 3)
    assert upright[:35].reshape(-1, 3).mean(0)[0] > 200  # red on top
    assert upright[45:].reshape(-1, 3).mean(0)[2] > 200  # blue below

    # the summary lists the failures with their reasons
    assert "bomb.png" in done.stdout and "completed" in done.stdout


def test_private_urls_allowed_still_cap_size_time_and_type(tmp_path: Path, web: _Server) -> None:
    """With ``MODOMO_ALLOW_PRIVATE_URLS=true`` the loopback server is reached; the download
    cap, the wall-clock deadline and the content check still hold, per URL."""
    data_dir = tmp_path / "data"
    base = f"http://127.0.0.1:{web.server_address[1]}"
    urls = {
        f"{base}/ok.png": None,
        f"{base}/redirect": None,
        f"{base}/big-declared.png": f"download exceeds {MAX_DOWNLOAD} bytes",
        f"{base}/big-undeclared.png": f"download exceeds {MAX_DOWNLOAD} bytes",
        f"{base}/trickle.png": "timed out after 2 s",
        f"{base}/html-as-jpeg.jpg": "looks like an HTML page",
        f"{base}/missing.png": "HTTP 404",
        f"http://127.0.0.1:{closed_port()}/x.jpg": "could not connect",
    }
    (tmp_path / "urls.txt").write_text("\n".join(urls) + "\n")
    done = modomo(
        "process",
        str(tmp_path / "urls.txt"),
        data_dir=data_dir,
        MODOMO_ALLOW_PRIVATE_URLS="true",
        MODOMO_MAX_DOWNLOAD_BYTES=str(MAX_DOWNLOAD),
        MODOMO_FETCH_TIMEOUT="2",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (job_id,) = jobs_in(data_dir)
    job = job_record(data_dir, job_id)
    assert (job["status"], job["total"], job["processed"], job["failed"]) == (
        "completed",
        8,
        2,
        6,
    ), job
    failures = {f["source_key"]: f["error"] for f in job["failures"]}
    for url, phrase in urls.items():
        if phrase is None:
            assert url not in failures
        else:
            assert phrase in failures[url], (url, failures.get(url))
    scenes = scenes_of(data_dir, job_id)
    assert all(scenes[url]["colors"] for url, phrase in urls.items() if phrase is None)
    assert "/after-redirect.png" in web.hits


# --------------------------------------------------------------------------------------
# the API: hostile requests answered 4xx naming the problem, never 5xx, never obeyed


@pytest.fixture(scope="module")
def hostile_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict]]:
    """This module's own ``modomo api`` on the session's services (read-only and refused
    requests only), and its keys: user, admin, revoked."""
    from modomo.api.keys import create_key, revoke_key
    from tests.support import api_server

    _, user = create_key("hostile user", "user")
    _, admin = create_key("hostile admin", "admin")
    record, revoked = create_key("hostile revoked", "user")
    revoke_key(record["id"])
    log = tmp_path_factory.mktemp("hostile-api") / "api.log"
    with api_server(log_path=log, MODOMO_API_RATE_LIMIT="100000/minute") as base:
        yield base, {"user": user, "admin": admin, "revoked": revoked}
    assert "Traceback" not in log.read_text(), log.read_text()


@pytest.mark.services
def test_hostile_api_requests_are_refused_clearly(hostile_api: tuple[str, dict]) -> None:
    import httpx

    base, keys = hostile_api
    http = httpx.Client(base_url=base, timeout=30)
    user, admin = {"X-API-Key": keys["user"]}, {"Authorization": f"Bearer {keys['admin']}"}

    def field_named(answer: httpx.Response, field: str) -> bool:
        return any(field in error["loc"] for error in answer.json()["detail"])

    # queue names: traversal, Redis internals, case games; admin only, and only real queues
    for name in (
        "..%2Fcelery",
        "..%2F..%2Fcelery",
        "celery%2F..%2Fmaintenance",
        "_kombu.binding.celery",
        "unacked",
        "CELERY",
        "celery%00",
        "*",
        "color_processing%5Cx",
    ):
        answer = http.post(f"/jobs/celery/purge-queue/{name}", headers=admin)
        assert answer.status_code in (404, 422), (name, answer.status_code, answer.text)
        assert http.post(f"/jobs/celery/purge-queue/{name}", headers=user).status_code in (
            403,
            404,
        )
    # replayed revoked key, forged keys, wrong schemes, a key far too long
    for headers in (
        {"X-API-Key": keys["revoked"]},
        {"Authorization": f"Bearer {keys['revoked']}"},
        {"Authorization": f"Basic {keys['user']}"},
        {"X-API-Key": "mdm_" + "A" * 43},
        {"X-API-Key": keys["user"][:-1] + ("A" if keys["user"][-1] != "A" else "B")},
        {"X-API-Key": "mdm_' OR '1'='1"},
        {"X-API-Key": "mdm_" + "x" * 8000},
        {"Authorization": "Bearer a.b.c"},
        {"Authorization": "Bearer"},
    ):
        answer = http.get("/jobs", headers=headers)
        assert answer.status_code == 401, (headers, answer.text)
    # a user key on every admin endpoint
    for method, path in (
        ("GET", "/keys"),
        ("POST", "/keys"),
        ("DELETE", f"/keys/{uuid.uuid4()}"),
        ("POST", "/jobs/celery/purge-queue/maintenance"),
    ):
        answer = http.request(method, path, headers=user, json={"name": "x", "role": "admin"})
        assert answer.status_code == 403, (method, path, answer.text)
    # an admin cannot mint an unknown role
    bad_role = http.post("/keys", headers=admin, json={"name": "x", "role": "root"})
    assert bad_role.status_code == 422 and field_named(bad_role, "role")
    # bodies: malformed JSON, wrong types, wrong content type, deep nesting, huge lists
    for content, content_type in (
        (b'{"limit": ', "application/json"),
        (b"[1, 2, 3]", "application/json"),
        (b'"limit"', "application/json"),
        (b"limit=1", "application/x-www-form-urlencoded"),
        (b"\xff\xfe\x00garbage", "application/json"),
        (b'{"limit": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", "application/json"),
    ):
        answer = http.post(
            "/process/colors", content=content, headers={**user, "Content-Type": content_type}
        )
        assert answer.status_code in (400, 422), (content[:40], answer.status_code, answer.text)
    for body, field in (
        ({"limit": 10**30}, "limit"),
        ({"limit": 1e308}, "limit"),
        ({"limit": -1}, "limit"),
        ({"limit": [1]}, "limit"),
        ({"limit": {"$gt": 0}}, "limit"),
    ):
        answer = http.post("/process/colors", json=body, headers=user)
        assert answer.status_code == 422 and field_named(answer, field), (body, answer.text)
    too_many = [str(uuid.uuid4()) for _ in range(10_000)]  # over the list's bound, < 1 MiB
    answer = http.post("/detect/process", json={"scene_ids": too_many}, headers=user)
    assert answer.status_code == 422 and field_named(answer, "scene_ids")
    huge = [str(uuid.uuid4()) for _ in range(100_000)]  # 3.8 MB: over the body cap
    answer = http.post("/detect/process", json={"scene_ids": huge}, headers=user)
    assert answer.status_code == 413, answer.text
    answer = http.post(
        "/exports", json={"format": "coco", "room_types": ["a"] * 10_000}, headers=user
    )
    assert answer.status_code == 422 and field_named(answer, "room_types")
    # query strings: negative and enormous limits and offsets, NaN, non-UUID ids
    for path, field in (
        ("/jobs?limit=-1", "limit"),
        ("/jobs?limit=0", "limit"),
        (f"/jobs?limit={10**30}", "limit"),
        ("/jobs?offset=-5", "offset"),
        (f"/scenes?limit={10**12}", "limit"),
        ("/objects?min_confidence=nan", "min_confidence"),
        ("/objects?min_confidence=inf", "min_confidence"),
        ("/duplicates?limit=-1", "limit"),
        ("/jobs/..%2F..%2Fetc%2Fpasswd", "job_id"),
        ("/scenes/not-a-uuid", "scene_id"),
        (f"/scenes/{uuid.uuid4()}x/similar?k=5", "scene_id"),
        (f"/scenes/{uuid.uuid4()}/similar?k=100000000", "k"),
    ):
        answer = http.get(path, headers=user)
        assert answer.status_code in (404, 422), (path, answer.status_code, answer.text)
        if answer.status_code == 422:
            assert field_named(answer, field), (path, answer.text)
    # CORS is off unless configured: no origin is answered
    evil = http.options(
        "/jobs",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
    )
    assert "access-control-allow-origin" not in evil.headers
    assert http.get("/health").status_code == 200  # and the server is still well
    http.close()
