"""The API's command-line side: `modomo keys` and `modomo flower` (basic auth required)."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest

from tests.support import REPO, free_port, worker_env

pytestmark = pytest.mark.services


def modomo(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modomo.cli", *args],
        cwd=REPO,
        env=worker_env(COLUMNS="200", **env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_keys_create_list_revoke(api: str) -> None:
    created = modomo("keys", "create", "ci robot", "--role", "admin", "--quiet")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("mdm_") and len(key) > 40
    assert httpx.get(f"{api}/keys", headers={"X-API-Key": key}).status_code == 200

    listed = modomo("keys", "list")
    assert "ci robot" in listed.stdout and key[:12] in listed.stdout
    assert key not in listed.stdout  # the key itself is never shown again

    revoked = modomo("keys", "revoke", key[:12])
    assert revoked.returncode == 0 and "revoked key ci robot" in revoked.stdout
    assert httpx.get(f"{api}/keys", headers={"X-API-Key": key}).status_code == 401
    assert modomo("keys", "revoke", key[:12]).returncode == 1
    bad = modomo("keys", "create", "x", "--role", "root")
    assert bad.returncode == 2 and "role must be one of user, admin" in bad.stdout


def test_flower_refuses_to_start_without_a_password() -> None:
    done = modomo("flower", "--port", str(free_port()))
    assert done.returncode == 2
    assert "MODOMO_FLOWER_PASSWORD" in done.stdout


def test_flower_requires_basic_auth() -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "modomo.cli", "flower", "--port", str(port)],
        cwd=REPO,
        env=worker_env(MODOMO_FLOWER_USER="ops", MODOMO_FLOWER_PASSWORD="s3cret-test"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}/api/workers"
        deadline = time.monotonic() + 60
        while True:
            try:
                anonymous = httpx.get(url, timeout=2)
                break
            except httpx.HTTPError:
                assert process.poll() is None, "flower exited"
                assert time.monotonic() < deadline, "flower did not answer in 60 s"
                time.sleep(0.3)
        assert anonymous.status_code == 401
        assert httpx.get(url, auth=("ops", "wrong"), timeout=5).status_code == 401
        assert httpx.get(url, auth=("ops", "s3cret-test"), timeout=10).status_code == 200
    finally:
        process.terminate()
        process.wait(20)
