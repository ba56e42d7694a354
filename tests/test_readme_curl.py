"""Every ``curl`` example of the README that talks to the API, run as written (with bash)
against a real server: only the placeholders are replaced (the address, the keys, and the
example image URL, by an image served on loopback: this machine has no DNS). A README
example that answers 4xx or 5xx fails here."""

from __future__ import annotations

import functools
import json
import re
import shlex
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.support import REPO, api_server, encode, noise_image

pytestmark = pytest.mark.services

_ADDRESS = re.compile(r"(?:http://)?(?:localhost|127\.0\.0\.1):8000")


def readme_curls() -> list[str]:
    """The README's curl commands to the API, each with its continuation lines (a trailing
    backslash, or a quoted body still open) joined, in order."""
    commands: list[str] = []
    current: list[str] | None = None
    for line in (REPO / "README.md").read_text().splitlines():
        if current is None:
            if not line.strip().startswith("curl"):
                continue
            current = []
        current.append(line)
        text = "\n".join(current)
        try:
            shlex.split(text.replace("\\\n", " "))
        except ValueError:  # a quote still open: the body goes on
            continue
        if not line.rstrip().endswith("\\"):
            if _ADDRESS.search(text):  # to the API, not an installer's URL
                commands.append(re.sub(r"\s+#[^'\"]*$", "", text))  # a trailing comment
            current = None
    return commands


@contextmanager
def static_server(folder: Path) -> Iterator[str]:
    """Files of ``folder`` over HTTP on a loopback port, on a thread; yields the base URL."""
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_the_readme_has_the_api_examples() -> None:
    commands = readme_curls()
    assert len(commands) >= 6, commands
    assert any("/process/colors" in c for c in commands)
    assert any("/schedules" in c for c in commands)


def test_every_readme_curl_example_works(tmp_path: Path) -> None:
    from modomo.api.keys import create_key

    _, user = create_key("readme user", "user")
    _, admin = create_key("readme admin", "admin")
    created: list[str] = []
    schedules: list[str] = []
    photos = tmp_path / "served"
    photos.mkdir()
    (photos / "room.jpg").write_bytes(encode(noise_image("readme", (96, 128)), "JPEG"))
    with (
        static_server(photos) as served,
        api_server(tmp_path / "api.log", MODOMO_ALLOW_PRIVATE_URLS="true") as base,
    ):
        for command in readme_curls():
            runnable = _ADDRESS.sub(base, command)
            runnable = runnable.replace("$ADMIN_KEY", admin).replace("$KEY", user)
            runnable = runnable.replace("mdm_...", user).replace("-fsS ", "-sS ")
            runnable = runnable.replace("https://example.com/room.jpg", f"{served}/room.jpg")
            out = subprocess.run(
                ["bash", "-c", runnable + " -o body.json -w '%{http_code}'"],
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=60,
            )
            code = out.stdout.strip()[-3:]
            body = (tmp_path / "body.json").read_text() if (tmp_path / "body.json").exists() else ""
            assert out.returncode == 0 and code.startswith("2"), (command, code, body, out.stderr)
            try:
                answer = json.loads(body)
            except json.JSONDecodeError:
                continue
            if isinstance(answer, dict) and answer.get("job_id"):
                created.append(str(answer["job_id"]))
            if "/schedules" in command and isinstance(answer, dict) and answer.get("name"):
                schedules.append(str(answer["name"]))
        # nothing the examples queued runs later in another test's workers
        headers = {"Authorization": f"Bearer {admin}"}
        for job_id in created:
            httpx.post(f"{base}/jobs/{job_id}/cancel", headers=headers, timeout=30)
        for name in schedules:
            httpx.delete(f"{base}/schedules/{name}", headers=headers, timeout=30)
    assert created, "the examples created no job"
