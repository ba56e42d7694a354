"""The API under test: a real ``modomo api`` (uvicorn) on loopback, on the session's Redis and
PostgreSQL, with keys created in the database as ``modomo keys create`` does."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support import api_server

JWT_SECRET = secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Keys:
    """Credentials of the test session: a user key, an admin key, a revoked key."""

    user: str
    admin: str
    revoked: str


@pytest.fixture(scope="session")
def keys() -> Keys:
    from modomo.api.keys import create_key, revoke_key

    _, user = create_key("test user", "user")
    _, admin = create_key("test admin", "admin")
    record, revoked = create_key("test revoked", "user")
    revoke_key(record["id"])
    return Keys(user=user, admin=admin, revoked=revoked)


@pytest.fixture(scope="session")
def user_owner(keys: Keys) -> str:
    """The ``created_by`` of the user key's jobs: a job made in-process with it belongs to
    that key (jobs without one, as the CLI makes them, are the admins' to see)."""
    from modomo.api.keys import lookup_key

    principal = lookup_key(keys.user)
    assert principal is not None and principal.owner is not None
    return principal.owner


@pytest.fixture(scope="session")
def api(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Iterator[str]:
    """Base URL of the session's API server (JWTs signed with JWT_SECRET accepted)."""
    log: Path = tmp_path_factory.mktemp("api") / "api.log"
    with api_server(
        log_path=log, MODOMO_JWT_SECRET=JWT_SECRET, MODOMO_API_RATE_LIMIT="100000/minute"
    ) as base:
        yield base


@pytest.fixture
def user(api: str, keys: Keys) -> Iterator[httpx.Client]:
    """An HTTP client with the user key."""
    with httpx.Client(base_url=api, headers={"X-API-Key": keys.user}, timeout=30) as client:
        yield client


@pytest.fixture
def admin(api: str, keys: Keys) -> Iterator[httpx.Client]:
    """An HTTP client with the admin key (as a Bearer token)."""
    headers = {"Authorization": f"Bearer {keys.admin}"}
    with httpx.Client(base_url=api, headers=headers, timeout=30) as client:
        yield client


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
