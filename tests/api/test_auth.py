"""Auth against the real server: API keys with roles, revocation, Supabase-style JWTs, the
rate limit, and auth switched off for local use."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import jwt
import pytest

from modomo.api.keys import Principal
from tests.api.conftest import JWT_SECRET, Keys
from tests.support import REPO, api_server, worker_env

pytestmark = pytest.mark.services


def token(secret: str = JWT_SECRET, **claims: object) -> str:
    body: dict[str, object] = {
        "sub": "user-123",
        "aud": "authenticated",
        "exp": int(time.time()) + 300,
        "role": "authenticated",
    }
    body.update(claims)
    return jwt.encode(body, secret, algorithm="HS256")


def test_health_is_open(api: str) -> None:
    answer = httpx.get(f"{api}/health")
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok"}


def test_ready_names_both_dependencies(api: str) -> None:
    answer = httpx.get(f"{api}/ready")
    assert answer.status_code == 200
    assert answer.json()["checks"] == {"broker": "ok", "database": "ok"}


@pytest.mark.parametrize(
    "path", ["/jobs", "/scenes", "/objects", "/jobs/celery/dashboard", "/jobs/celery/workers"]
)
def test_no_credential_is_401(api: str, path: str) -> None:
    answer = httpx.get(f"{api}{path}")
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == "Bearer"


def test_unknown_and_revoked_keys_are_401(api: str, keys: Keys) -> None:
    for key in ("mdm_not-a-key", keys.revoked, "x"):
        answer = httpx.get(f"{api}/jobs", headers={"X-API-Key": key})
        assert answer.status_code == 401, key
        assert "unknown or revoked" in answer.json()["detail"]


def test_user_key_works_on_job_endpoints_but_not_admin_ones(user: httpx.Client) -> None:
    assert user.get("/jobs").status_code == 200
    purge = user.post("/jobs/celery/purge-queue/maintenance")
    assert purge.status_code == 403
    assert "admin" in purge.json()["detail"]
    assert user.get("/keys").status_code == 403


def test_admin_key_manages_keys_and_revocation_is_immediate(admin: httpx.Client, api: str) -> None:
    created = admin.post("/keys", json={"name": "temporary", "role": "user"})
    assert created.status_code == 201
    key = created.json()["key"]
    assert key.startswith("mdm_")
    assert "key" not in admin.get("/keys").json()[0]
    assert httpx.get(f"{api}/jobs", headers={"X-API-Key": key}).status_code == 200
    revoked = admin.delete(f"/keys/{created.json()['id']}")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    assert httpx.get(f"{api}/jobs", headers={"X-API-Key": key}).status_code == 401
    assert admin.delete(f"/keys/{created.json()['id']}").status_code == 404


def test_jwt_accepted_with_roles_from_the_admin_claim(api: str) -> None:
    user_token = token()
    answer = httpx.get(f"{api}/jobs", headers={"Authorization": f"Bearer {user_token}"})
    assert answer.status_code == 200
    forbidden = httpx.post(
        f"{api}/jobs/celery/purge-queue/maintenance",
        headers={"Authorization": f"Bearer {user_token}"},
    )
    assert forbidden.status_code == 403
    admin_token = token(app_metadata={"role": "admin"})
    listed = httpx.get(f"{api}/keys", headers={"Authorization": f"Bearer {admin_token}"})
    assert listed.status_code == 200


@pytest.mark.parametrize(
    "bad",
    [
        token(secret="not-the-project-secret-at-all-0123456789"),
        token(exp=int(time.time()) - 10),
        token(aud="someone-else"),
        token()[:-4] + "AAAA",
    ],
    ids=["wrong-secret", "expired", "wrong-audience", "tampered"],
)
def test_jwt_rejected(api: str, bad: str) -> None:
    answer = httpx.get(f"{api}/jobs", headers={"Authorization": f"Bearer {bad}"})
    assert answer.status_code == 401
    assert answer.json()["detail"].startswith("invalid token")


def test_rate_limit_and_auth_disabled_server(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """With auth disabled, loopback callers need no credential; the POST limit answers 429
    with Retry-After once spent."""
    with api_server(
        log_path=tmp_path / "api.log", MODOMO_AUTH_DISABLED="1", MODOMO_API_RATE_LIMIT="3/minute"
    ) as base:
        assert httpx.get(f"{base}/jobs").status_code == 200
        codes = [httpx.post(f"{base}/process/colors", json={}).status_code for _ in range(4)]
        assert codes == [202, 202, 202, 429]
        limited = httpx.post(f"{base}/process/colors", json={})
        assert limited.status_code == 429
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        assert httpx.get(f"{base}/jobs").status_code == 200  # GETs are not limited


def test_auth_disabled_refuses_non_loopback_binding_and_clients() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "modomo.cli", "api", "--host", "0.0.0.0"],
        cwd=REPO,
        env=worker_env(MODOMO_AUTH_DISABLED="1"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "refusing to bind to 0.0.0.0" in done.stdout


@pytest.mark.anyio
async def test_auth_disabled_serves_loopback_clients_only(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Unit level (httpx's ASGI transport lets the test choose the client address). The
    dependency's annotation is resolved from this module's globals, hence Principal there."""
    from modomo.api.auth import authenticate
    from modomo.config import get_settings

    monkeypatch.setenv("MODOMO_AUTH_DISABLED", "1")
    get_settings.cache_clear()
    try:
        from fastapi import Depends, FastAPI

        app = FastAPI()

        @app.get("/who")
        def who(principal: Principal = Depends(authenticate)) -> dict[str, str]:  # noqa: B008
            return {"role": principal.role}

        for client, expected in ((("127.0.0.1", 5000), 200), (("10.1.2.3", 5000), 403)):
            transport = httpx.ASGITransport(app=app, client=client)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
                answer = await http.get("/who")
            assert answer.status_code == expected, client
    finally:
        get_settings.cache_clear()


def test_jwt_verified_against_a_jwks_url(tmp_path, httpserver) -> None:  # type: ignore[no-untyped-def]
    """Supabase's asymmetric keys: tokens signed with the key a JWKS URL publishes verify;
    a token signed with another key does not."""
    import json

    from cryptography.hazmat.primitives.asymmetric import rsa

    signing = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(signing.public_key()))
    jwk.update({"kid": "key-1", "use": "sig", "alg": "RS256"})
    httpserver.expect_request("/auth/v1/.well-known/jwks.json").respond_with_json({"keys": [jwk]})
    claims = {"sub": "u-9", "aud": "authenticated", "exp": int(time.time()) + 300}

    def signed(key: rsa.RSAPrivateKey, **extra: object) -> str:
        return jwt.encode({**claims, **extra}, key, algorithm="RS256", headers={"kid": "key-1"})

    with api_server(
        log_path=tmp_path / "api.log",
        MODOMO_JWT_JWKS_URL=httpserver.url_for("/auth/v1/.well-known/jwks.json"),
    ) as base:
        good = httpx.get(f"{base}/jobs", headers={"Authorization": f"Bearer {signed(signing)}"})
        assert good.status_code == 200
        admin = signed(signing, app_metadata={"role": "admin"})
        assert (
            httpx.get(f"{base}/keys", headers={"Authorization": f"Bearer {admin}"}).status_code
            == 200
        )
        forged = httpx.get(f"{base}/jobs", headers={"Authorization": f"Bearer {signed(stranger)}"})
        assert forged.status_code == 401 and "invalid token" in forged.json()["detail"]
        hs = token()  # an HS256 token when only a JWKS is configured
        assert (
            httpx.get(f"{base}/jobs", headers={"Authorization": f"Bearer {hs}"}).status_code == 401
        )
