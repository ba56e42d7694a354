"""Security properties on this test's own Redis and PostgreSQL (tests/faults/servers.py).

- No pickle: a pickled task message reaches a real worker and is refused, never unpickled
  (the payload would have created a file) nor run, and the worker says so in its log.
- Secrets (JWT secret, Flower password, database and Redis passwords, Hugging Face and
  Supabase tokens, an API key) never appear in any log, CLI output or API answer, including
  error answers while Redis or PostgreSQL is down; nor in the database (keys are stored as
  SHA-256 digests only).
- Flower refuses unauthenticated access and refuses to start without a password; the
  dashboard's data endpoint needs a credential (in a header, never in the URL).
- CORS answers only the configured origins.
"""

from __future__ import annotations

import hashlib
import pickle
import re
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import jwt
import pytest
from sqlalchemy import create_engine, text

from tests.faults.servers import (
    OwnPostgres,
    OwnRedis,
    own_env,
    own_postgres,
    own_redis,
    process,
    side_app,
)
from tests.support import REPO, free_port, write_unique_images

pytestmark = pytest.mark.faults


@contextmanager
def worker(env: dict[str, str], log: Path, app, queues: str = "celery,color_processing"):  # type: ignore[no-untyped-def]
    hostname = f"sec-{uuid.uuid4().hex[:8]}@localhost"
    argv = [sys.executable, "-m", "celery", "-A", "modomo.celery_app", "worker", "-Q", queues]
    argv += ["-c", "1", "-n", hostname, "--without-mingle", "--without-gossip", "-l", "INFO"]
    with process(argv, env, log) as child:
        deadline = time.monotonic() + 60
        while not app.control.ping(destination=[hostname], timeout=0.5):
            assert child.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "worker did not answer a ping"
        yield hostname


def wait_http(url: str, child: subprocess.Popen[bytes], log: Path, **kwargs: object) -> None:
    deadline = time.monotonic() + 60
    while True:
        assert child.poll() is None, log.read_text()
        try:
            httpx.get(url, timeout=1, **kwargs)  # type: ignore[arg-type]
            return
        except httpx.HTTPError:
            assert time.monotonic() < deadline, f"{url} did not answer"
            time.sleep(0.2)


@contextmanager
def api(env: dict[str, str], log: Path) -> Iterator[str]:
    port = free_port()
    argv = [sys.executable, "-m", "modomo.cli", "api", "--port", str(port)]
    with process(argv, env, log) as child:
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/health", child, log)
        yield base


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modomo.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[OwnRedis, OwnPostgres]]:
    with own_redis() as redis_server, own_postgres() as pg:
        yield redis_server, pg


# --------------------------------------------------------------------------------------
# (a) no pickle


class _Touch:
    """Unpickling this creates ``path``: proof that a payload was deserialized."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.touch, (self.path,))


def test_pickled_messages_are_refused_not_unpickled(
    servers: tuple[OwnRedis, OwnPostgres], tmp_path: Path
) -> None:
    from kombu import Connection, Producer

    redis_server, pg = servers
    env = own_env(redis_server.url, pg.url, tmp_path / "data")
    app = side_app(redis_server.url, pg.url, tmp_path / "data")
    log = tmp_path / "worker.log"
    markers = [tmp_path / "unpickled-v2", tmp_path / "unpickled-v1"]
    task = "modomo.tasks.maintenance_tasks.health_check"
    with worker(env, log, app, queues="celery") as hostname:
        with Connection(redis_server.url) as connection:
            producer = Producer(connection)
            v2_id, v1_id = str(uuid.uuid4()), str(uuid.uuid4())
            # protocol 2: the task name in the headers, arguments in the pickled body
            producer.publish(
                pickle.dumps(((_Touch(markers[0]),), {}, {})),
                content_type="application/x-python-serialize",
                content_encoding="binary",
                headers={"lang": "py", "task": task, "id": v2_id, "root_id": v2_id},
                routing_key="celery",
                exchange="",
            )
            # protocol 1: everything in the pickled body
            producer.publish(
                pickle.dumps(
                    {"task": task, "id": v1_id, "args": (_Touch(markers[1]),), "kwargs": {}}
                ),
                content_type="application/x-python-serialize",
                content_encoding="binary",
                routing_key="celery",
                exchange="",
            )
        deadline = time.monotonic() + 30
        while log.read_text().count("ContentDisallowed") < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1)  # time for a (wrong) execution to show
        assert app.control.ping(destination=[hostname], timeout=2)  # the worker lives on
        written = log.read_text()
    assert not any(marker.exists() for marker in markers), "a pickled payload was unpickled"
    refusals = [line for line in written.splitlines() if "ContentDisallowed" in line]
    assert len(refusals) >= 2, written
    assert all("pickle" in line for line in refusals), refusals
    assert "succeeded" not in written, written
    from celery.result import AsyncResult

    for task_id in (v2_id, v1_id):
        assert AsyncResult(task_id, app=app).state == "PENDING"  # never ran, no result


# --------------------------------------------------------------------------------------
# (b)-(e) secrets, hashed keys, Flower, the dashboard, CORS


def _scan(texts: dict[str, str], needles: dict[str, str]) -> list[str]:
    found = []
    for where, body in texts.items():
        for name, secret in needles.items():
            if secret in body:
                found.append(f"{name} in {where}")
    return found


def test_secrets_never_leak_and_access_is_guarded(
    servers: tuple[OwnRedis, OwnPostgres], tmp_path: Path
) -> None:
    import redis as redis_lib

    redis_server, pg = servers
    redis_password = "redispw" + secrets.token_hex(12)
    pg_password = "pgpw" + secrets.token_hex(12)
    redis_lib.Redis(port=redis_server.port).config_set("requirepass", redis_password)
    engine = create_engine(pg.url)
    with engine.begin() as connection:
        connection.execute(text(f"ALTER USER postgres PASSWORD '{pg_password}'"))
    engine.dispose()
    redis_url = f"redis://:{redis_password}@127.0.0.1:{redis_server.port}/0"
    database_url = pg.url.replace("postgres@", f"postgres:{pg_password}@")
    origin = "https://dashboard.good.example"
    needles = {
        "jwt secret": "jwtsecret" + secrets.token_hex(16),
        "flower password": "flowerpw" + secrets.token_hex(12),
        "hf token": "hf_" + secrets.token_hex(16),
        "supabase key": "sbkey" + secrets.token_hex(16),
        "redis password": redis_password,
        "pg password": pg_password,
    }
    data_dir = tmp_path / "data"
    env = own_env(
        redis_url,
        database_url,
        data_dir,
        MODOMO_JWT_SECRET=needles["jwt secret"],
        MODOMO_FLOWER_PASSWORD=needles["flower password"],
        MODOMO_HF_TOKEN=needles["hf token"],
        MODOMO_SUPABASE_SERVICE_ROLE_KEY=needles["supabase key"],
        MODOMO_CORS_ORIGINS=origin,
        MODOMO_LOG_LEVEL="DEBUG",  # the most the processes ever log
    )
    outputs: dict[str, str] = {}
    created = cli(env, "keys", "create", "sec-admin", "--role", "admin", "--quiet")
    assert created.returncode == 0, created.stdout + created.stderr
    admin_key = created.stdout.strip()
    created = cli(env, "keys", "create", "sec-user", "--role", "user")
    assert created.returncode == 0, created.stdout + created.stderr
    user_key = next(w for w in created.stdout.split() if w.startswith("mdm_"))
    outputs["keys create stderr"] = created.stderr
    needles["admin key"], needles["user key"] = admin_key, user_key
    # a valid key that the test itself puts in a URL (so it is in the access log: not a needle)
    burned = cli(env, "keys", "create", "sec-burned", "--quiet")
    assert burned.returncode == 0, burned.stdout + burned.stderr
    burned_key = burned.stdout.strip()
    for args in (("keys", "list", "--all"), ("db", "current"), ("jobs", "list")):
        done = cli(env, *args)
        assert done.returncode == 0, done.stdout + done.stderr
        outputs[" ".join(args)] = done.stdout + done.stderr

    app = side_app(redis_url, database_url, data_dir)
    write_unique_images(tmp_path / "photos", 4)
    answers: list[httpx.Response] = []
    admin = {"X-API-Key": admin_key}
    user = {"Authorization": f"Bearer {user_key}"}
    api_log, worker_log, flower_log = (tmp_path / n for n in ("api.log", "worker.log", "fl.log"))
    with worker(env, worker_log, app), api(env, api_log) as base:
        http = httpx.Client(base_url=base, timeout=30)

        def call(method: str, path: str, **kwargs: object) -> httpx.Response:
            answer = http.request(method, path, **kwargs)  # type: ignore[arg-type]
            answers.append(answer)
            return answer

        # some work, so the dashboard, jobs and logs have content
        done = cli(env, "process", str(tmp_path / "photos"), "--no-wait")
        assert done.returncode == 0, done.stdout + done.stderr
        outputs["process"] = done.stdout + done.stderr
        job = call("POST", "/process/colors", json={"limit": 10}, headers=user)
        assert job.status_code == 202, job.text
        deadline = time.monotonic() + 60
        while call("GET", job.json()["status_url"], headers=user).json()["status"] not in (
            "completed",
            "failed",
        ):
            assert time.monotonic() < deadline
            time.sleep(0.3)
        good_jwt = jwt.encode(
            {"sub": "u1", "aud": "authenticated", "exp": int(time.time()) + 300},
            needles["jwt secret"],
            algorithm="HS256",
        )
        forged_jwt = jwt.encode(
            {"sub": "u1", "aud": "authenticated", "exp": int(time.time()) + 300},
            "not-the-secret-" + secrets.token_hex(16),
            algorithm="HS256",
        )
        none_jwt = jwt.encode({"sub": "u1", "exp": int(time.time()) + 300}, None, algorithm="none")
        assert call("GET", "/jobs", headers={"Authorization": f"Bearer {good_jwt}"}).is_success
        for bad in (forged_jwt, none_jwt, "mdm_" + secrets.token_urlsafe(32)):
            assert (
                call("GET", "/jobs", headers={"Authorization": f"Bearer {bad}"}).status_code == 401
            )
        for path in ("/health", "/ready", "/openapi.json", "/docs", "/dashboard"):
            assert call("GET", path).status_code == 200, path
        for path in (
            "/jobs/celery/dashboard",
            "/jobs/celery/workers",
            "/jobs/celery/queues",
            "/jobs/celery/active-tasks",
            "/jobs",
            "/scenes",
            "/objects",
        ):
            assert call("GET", path, headers=user).status_code == 200, path
        assert call("GET", "/keys", headers=admin).status_code == 200
        assert call("GET", "/keys", headers=user).status_code == 403
        assert call("GET", f"/jobs/{uuid.uuid4()}", headers=user).status_code == 404
        assert call("POST", "/process/colors", json={"limit": -1}, headers=user).status_code == 422
        assert call("GET", "/scenes/not-a-uuid", headers=user).status_code == 422
        purge = call("POST", "/jobs/celery/purge-queue/nope", headers=admin)
        assert purge.status_code == 404

        # (d) the dashboard: the page holds no data; its data needs a credential in a header
        page = call("GET", "/dashboard").text
        assert "location.hash" in page or "#key" in page
        assert call("GET", "/jobs/celery/dashboard").status_code == 401
        in_url = call("GET", f"/jobs/celery/dashboard?key={burned_key}&api_key={burned_key}")
        assert in_url.status_code == 401  # a key in the URL (logs, history) is not accepted
        dashboard = call("GET", "/jobs/celery/dashboard", headers=user).json()
        assert dashboard["jobs"]["counts"]["completed"] >= 1

        # (e) CORS: the configured origin only
        preflight = {"Access-Control-Request-Method": "GET"}
        evil = http.options("/jobs", headers={"Origin": "https://evil.example", **preflight})
        assert "access-control-allow-origin" not in evil.headers
        evil_get = call("GET", "/jobs", headers={"Origin": "https://evil.example", **user})
        assert "access-control-allow-origin" not in evil_get.headers
        good = http.options("/jobs", headers={"Origin": origin, **preflight})
        assert good.status_code == 200
        assert good.headers["access-control-allow-origin"] == origin
        good_get = call("GET", "/jobs", headers={"Origin": origin, **user})
        assert good_get.headers["access-control-allow-origin"] == origin

        # errors while a dependency is down carry reasons, never credentials
        redis_server.stop()
        try:
            assert call("GET", "/ready").status_code == 503
            assert call("GET", "/jobs/celery/queues", headers=user).status_code == 503
            refused = call("POST", "/process/colors", json={"limit": 1}, headers=user)
            assert refused.status_code == 503, refused.text
        finally:
            redis_server.start()
            redis_lib.Redis(port=redis_server.port).config_set("requirepass", redis_password)
        pg.stop()
        try:
            down = call("GET", "/ready")
            assert down.status_code == 503 and down.json()["down"] == ["database"], down.text
            assert call("GET", "/jobs", headers=user).status_code >= 500
        finally:
            pg.start()

        # (d) Flower: basic auth required, and no start without a password
        port = free_port()
        flower_argv = [sys.executable, "-m", "modomo.cli", "flower", "--port", str(port)]
        with process(flower_argv, env, flower_log) as child:
            wait_http(f"http://127.0.0.1:{port}/", child, flower_log)
            anonymous = httpx.get(f"http://127.0.0.1:{port}/", timeout=10)
            assert anonymous.status_code == 401
            wrong = httpx.get(f"http://127.0.0.1:{port}/", auth=("admin", "guess"), timeout=10)
            assert wrong.status_code == 401
            authed = httpx.get(
                f"http://127.0.0.1:{port}/api/workers",
                auth=("admin", needles["flower password"]),
                timeout=30,
            )
            assert authed.status_code == 200, authed.text
            answers.append(authed)
            assert httpx.get(f"http://127.0.0.1:{port}/api/workers", timeout=10).status_code == 401
        no_password = {k: v for k, v in env.items() if k != "MODOMO_FLOWER_PASSWORD"}
        refused_start = cli(no_password, "flower", "--port", str(free_port()))
        assert refused_start.returncode == 2
        assert "MODOMO_FLOWER_PASSWORD" in refused_start.stdout + refused_start.stderr
        http.close()

    # (b) nothing anywhere holds a secret
    texts = {
        "api log": api_log.read_text(errors="replace"),
        "worker log": worker_log.read_text(errors="replace"),
        "flower log": flower_log.read_text(errors="replace"),
        **outputs,
    }
    for answer in answers:
        where = f"{answer.request.method} {answer.request.url.path} -> {answer.status_code}"
        texts[where] = answer.text + "\n" + str(dict(answer.headers))
    assert texts["api log"] and texts["worker log"], "the logs were captured"
    leaks = _scan(texts, needles)
    assert not leaks, leaks

    # (c) keys are stored as digests only; no table holds a secret
    engine = create_engine(database_url)
    with engine.connect() as connection:
        keys = connection.execute(text("SELECT key_hash, prefix FROM api_keys")).all()
        assert len(keys) == 3
        assert {row.key_hash for row in keys} == {
            hashlib.sha256(k.encode()).hexdigest() for k in (admin_key, user_key, burned_key)
        }
        assert all(re.fullmatch(r"[0-9a-f]{64}", row.key_hash) for row in keys)
        tables = connection.execute(
            text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        ).scalars()
        dump = {
            table: "\n".join(connection.execute(text(f'SELECT t::text FROM "{table}" t')).scalars())
            for table in tables
        }
    engine.dispose()
    needles["burned key"] = burned_key
    assert not _scan(dump, needles), _scan(dump, needles)
