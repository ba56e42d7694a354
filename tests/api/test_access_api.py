"""Issue 19's access findings against the real server and database: Hugging Face imports
take hub ids only, jobs belong to their creator, key prefixes are literal, and ``/ready``
names the component that is down and nothing more."""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest

from tests.api.conftest import JWT_SECRET, Keys
from tests.api.scenes import make_scenes
from tests.support import api_server, free_port

pytestmark = pytest.mark.services

IMPORT = "/import/huggingface-dataset"
LATER = {"countdown": 3600}  # scheduled: no worker ever runs these jobs


def key_id(key: str) -> str:
    from modomo.api.keys import lookup_key

    principal = lookup_key(key)
    assert principal is not None
    return principal.subject.removeprefix("key:")


@pytest.fixture
def other(api: str) -> Iterator[httpx.Client]:
    """A client with a second user key (user B; the session's user key is user A)."""
    from modomo.api.keys import create_key

    _, key = create_key(f"user b {secrets.token_hex(3)}", "user")
    with httpx.Client(base_url=api, headers={"X-API-Key": key}, timeout=30) as client:
        yield client


def jwt_client(api: str, sub: str) -> httpx.Client:
    token = jwt.encode(
        {"sub": sub, "aud": "authenticated", "exp": int(time.time()) + 300},
        JWT_SECRET,
        algorithm="HS256",
    )
    return httpx.Client(base_url=api, headers={"Authorization": f"Bearer {token}"}, timeout=30)


# --- finding 1: hub ids only ---------------------------------------------------------------


@pytest.mark.parametrize(
    "dataset",
    [
        "parquet",
        "csv",
        "json",
        "arrow",
        "imagefolder",
        "text",
        "webdataset",
        "pandas",
        "Parquet",
        "/etc",
        "/tmp/rooms.parquet",
        "~/datasets/rooms",
        "./rooms",
        "../../etc",
        "rooms",
    ],
)
def test_import_refuses_builder_names_and_local_paths(
    user: httpx.Client, admin: httpx.Client, dataset: str
) -> None:
    before = admin.get("/jobs", params={"type": "import", "limit": 1}).json()["total"]
    for answer in (
        user.post(IMPORT, json={"dataset": dataset, "limit": 1}),
        user.post(IMPORT, params={"dataset": dataset, "limit": 1}),  # the query form
    ):
        assert answer.status_code == 422, answer.text
        errors = answer.json()["detail"]
        assert any(error["loc"][-1] == "dataset" for error in errors), errors
    after = admin.get("/jobs", params={"type": "import", "limit": 1}).json()["total"]
    assert after == before  # no job was created


def test_import_names_why_a_builder_name_is_refused(user: httpx.Client) -> None:
    answer = user.post(IMPORT, json={"dataset": "parquet"})
    assert answer.status_code == 422
    assert "builder name" in answer.json()["detail"][0]["msg"]
    hub = user.post(IMPORT, json={"dataset": "owner/rooms", "limit": 1, **LATER})
    assert hub.status_code == 202, hub.text  # a hub id is taken (and scheduled)
    assert user.post(f"/jobs/{hub.json()['job_id']}/cancel").json()["status"] == "cancelled"


# --- finding 3: jobs belong to their creator -----------------------------------------------


def test_users_see_and_act_on_their_own_jobs_only(
    api: str,
    keys: Keys,
    user: httpx.Client,
    other: httpx.Client,
    admin: httpx.Client,
    tmp_path: Path,
) -> None:
    from modomo.jobs import create_job, dispatch_batches
    from modomo.tasks.detection_tasks import process_scenes_batch

    mine = user.post(IMPORT, json={"dataset": "owner/rooms", "limit": 1, **LATER})
    theirs = other.post(IMPORT, json={"dataset": "owner/other", "limit": 1, **LATER})
    assert mine.status_code == theirs.status_code == 202
    a_job, b_job = mine.json()["job_id"], theirs.json()["job_id"]
    a_record = user.get(f"/jobs/{a_job}").json()
    assert a_record["created_by"] == f"key:{key_id(keys.user)}"  # the form RLS and the API read

    # a job of A's with scenes (its batch waits in a queue nobody consumes)
    scenes = make_scenes(tmp_path, 2)
    with_scenes = create_job("colors", {}, created_by=a_record["created_by"])
    dispatch_batches(with_scenes, process_scenes_batch.s().set(queue="nobody"), scenes, 2)
    child = create_job("colors", {}, parent_id=with_scenes)  # a retry's or import's child

    unknown = uuid.uuid4()
    for job in (a_job, str(with_scenes), str(child)):
        for method, path in [
            ("GET", f"/jobs/{job}"),
            ("GET", f"/jobs/{job}/celery-status"),
            ("POST", f"/jobs/{job}/cancel"),
            ("POST", f"/jobs/{job}/retry"),
        ]:
            hidden = other.request(method, path)
            missing = other.request(method, path.replace(job, str(unknown)))
            assert hidden.status_code == missing.status_code == 404, (method, path, hidden.text)
            assert hidden.json()["detail"] == f"no job {job}"  # as for a job that does not exist
            assert missing.json()["detail"] == f"no job {unknown}"
        assert user.get(f"/jobs/{job}").status_code == 200
        assert admin.get(f"/jobs/{job}").status_code == 200
    assert user.get(f"/jobs/{a_job}").json()["status"] == "scheduled"  # B's cancel did nothing
    assert user.get(f"/jobs/{child}").json()["created_by"] == a_record["created_by"]
    # A may act on it: the retry passes the owner check (and is refused as still active)
    assert user.post(f"/jobs/{with_scenes}/retry").status_code == 409

    # lists: each user its own jobs, the admin everyone's
    def listed(client: httpx.Client) -> tuple[set[str], int]:
        page = client.get("/jobs", params={"limit": 200}).json()
        return {job["id"] for job in page["items"]}, page["total"]

    a_ids, a_total = listed(user)
    b_ids, b_total = listed(other)
    all_ids, all_total = listed(admin)
    assert {a_job, str(with_scenes), str(child)} <= a_ids and b_job not in a_ids
    assert b_ids == {b_job} and b_total == 1
    assert {a_job, b_job} <= all_ids and all_total >= a_total + b_total
    assert all(
        job["created_by"] == a_record["created_by"] for job in user.get("/jobs").json()["items"]
    )

    # scenes and objects filtered by another user's job: nothing, as for an unknown job
    assert user.get("/scenes", params={"job_id": str(with_scenes)}).json()["total"] == 2
    assert admin.get("/scenes", params={"job_id": str(with_scenes)}).json()["total"] == 2
    assert other.get("/scenes", params={"job_id": str(with_scenes)}).json()["total"] == 0
    assert other.get("/objects", params={"job_id": str(with_scenes)}).json()["total"] == 0

    # B cancels its own job; A's stays scheduled
    assert other.post(f"/jobs/{b_job}/cancel").json()["status"] == "cancelled"
    assert user.post(f"/jobs/{a_job}/cancel").json()["status"] == "cancelled"
    admin.post(f"/jobs/{with_scenes}/cancel")


def test_the_dashboard_shows_a_user_its_own_jobs(
    keys: Keys, user: httpx.Client, other: httpx.Client, admin: httpx.Client, tmp_path: Path
) -> None:
    from modomo.jobs import create_job

    mine = user.post(IMPORT, json={"dataset": "owner/dash", "limit": 1, **LATER}).json()["job_id"]
    theirs = other.post(IMPORT, json={"dataset": "owner/dash", "limit": 1, **LATER})
    b_job = theirs.json()["job_id"]
    create_job("colors", {})  # the CLI's: no creator, an admin's view only
    time.sleep(1.1)  # past the dashboard's one-second cache

    def view(client: httpx.Client) -> tuple[set[str], dict[str, int], list[dict]]:
        data = client.get("/jobs/celery/dashboard").json()
        return (
            {j["id"] for j in data["jobs"]["recent"]},
            data["jobs"]["counts"],
            data["active_tasks"],
        )

    a_recent, a_counts, a_tasks = view(user)
    b_recent, b_counts, _ = view(other)
    admin_recent, admin_counts, _ = view(admin)
    assert mine in a_recent and b_job not in a_recent
    assert b_recent == {b_job} and sum(b_counts.values()) == 1 and b_counts["scheduled"] == 1
    assert sum(admin_counts.values()) > sum(a_counts.values()) + sum(b_counts.values())
    assert {mine, b_job} <= admin_recent or len(admin_recent) == 10  # the ten most recent
    assert all("args" not in task and "kwargs" not in task for task in a_tasks)
    for client, job in ((user, mine), (other, b_job)):
        client.post(f"/jobs/{job}/cancel")


def test_exports_belong_to_their_creator(
    user: httpx.Client, other: httpx.Client, admin: httpx.Client
) -> None:
    answer = user.post("/exports", json={"format": "coco", **LATER})
    assert answer.status_code == 202, answer.text
    export = answer.json()["job_id"]
    assert user.get(f"/exports/{export}").status_code == 200
    assert admin.get(f"/exports/{export}").status_code == 200
    for path in (f"/exports/{export}", f"/exports/{export}/download"):
        hidden = other.get(path)
        assert hidden.status_code == 404 and hidden.json()["detail"] == f"no export {export}"
    # an export of another user's job's scenes: 404 naming the job, nothing created
    refused = other.post("/exports", json={"format": "coco", "job_id": export, **LATER})
    assert refused.status_code == 404 and refused.json()["detail"] == f"no job {export}"
    assert other.get("/jobs", params={"type": "export"}).json()["total"] == 0
    assert user.post(f"/jobs/{export}/cancel").json()["status"] == "cancelled"


def test_jwt_users_own_their_jobs_by_subject(api: str, user: httpx.Client) -> None:
    sub_a, sub_b = str(uuid.uuid4()), str(uuid.uuid4())
    with jwt_client(api, sub_a) as a, jwt_client(api, sub_b) as b:
        answer = a.post(IMPORT, json={"dataset": "owner/rooms", "limit": 1, **LATER})
        assert answer.status_code == 202, answer.text
        job = answer.json()["job_id"]
        # the bare subject: what Supabase's policy compares with auth.uid()::text
        assert a.get(f"/jobs/{job}").json()["created_by"] == sub_a
        assert b.get(f"/jobs/{job}").status_code == 404
        assert user.get(f"/jobs/{job}").status_code == 404
        assert b.get("/jobs").json()["total"] == 0
        assert [j["id"] for j in a.get("/jobs").json()["items"]] == [job]
        assert a.post(f"/jobs/{job}/cancel").json()["status"] == "cancelled"


# --- finding 5: key prefixes are literal ---------------------------------------------------


def active_keys(admin: httpx.Client) -> set[str]:
    return {key["id"] for key in admin.get("/keys").json()}


def test_key_prefix_wildcards_match_nothing(admin: httpx.Client) -> None:
    from modomo.api.keys import create_key

    for index in range(3):
        create_key(f"wildcard target {index}", "user")
    before = active_keys(admin)
    assert len(before) >= 5
    for prefix in ("%%%%%%%%", "________", "mdm_%%%%", "mdm_____", "mdm_%", "%", "_"):
        answer = admin.delete(f"/keys/{prefix}")
        assert answer.status_code == 404, (prefix, answer.text)
        assert "no active key matches" in answer.json()["detail"]
    assert active_keys(admin) == before  # nothing revoked


def test_a_real_prefix_revokes_exactly_one_key_and_a_shared_one_is_409(
    admin: httpx.Client,
) -> None:
    from modomo.api.keys import create_key, hash_key
    from modomo.db.models import ApiKey
    from modomo.db.session import session_scope

    record, key = create_key("revoke me", "user")
    keep, _ = create_key("keep me", "user")
    before = active_keys(admin)
    answer = admin.delete(f"/keys/{record['prefix']}")
    assert answer.status_code == 200, answer.text
    assert answer.json()["id"] == record["id"] and answer.json()["revoked_at"]
    assert active_keys(admin) == before - {record["id"]}
    assert admin.delete(f"/keys/{record['prefix']}").status_code == 404  # already revoked
    assert httpx.get(f"{admin.base_url}/jobs", headers={"X-API-Key": key}).status_code == 401

    # two keys whose prefixes share their first 8 characters: that much names neither
    shared = "mdm_" + secrets.token_hex(2)
    with session_scope() as session:
        for tail in ("aaaa", "bbbb"):
            session.add(
                ApiKey(
                    name=f"twin {tail}",
                    prefix=shared + tail,
                    key_hash=hash_key(tail + shared),
                    role="user",
                )
            )
    twins = active_keys(admin)
    ambiguous = admin.delete(f"/keys/{shared}")
    assert ambiguous.status_code == 409 and "2 active keys match" in ambiguous.json()["detail"]
    assert active_keys(admin) == twins and keep["id"] in twins
    assert admin.delete(f"/keys/{shared}aaaa").status_code == 200
    assert admin.delete(f"/keys/{shared}").status_code == 200  # now one matches


# --- finding 6: /ready names the component only --------------------------------------------


def test_ready_with_the_broker_down_names_it_and_nothing_else(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    log = tmp_path / "api.log"
    with api_server(log_path=log, MODOMO_BROKER_URL=f"redis://127.0.0.1:{port}/0") as base:
        answer = httpx.get(f"{base}/ready", timeout=30)
    assert answer.status_code == 503
    body = answer.json()
    assert body["ready"] is False and body["down"] == ["broker"], body
    assert body["checks"] == {"broker": "down", "database": "ok"}
    text = answer.text
    for leak in (str(port), "127.0.0.1", "redis", "Error", "refused", "Connection"):
        assert leak not in text, (leak, text)
    assert str(port) in log.read_text()  # the reason went to the log


def test_ready_says_ready(api: str) -> None:
    answer = httpx.get(f"{api}/ready")
    assert answer.status_code == 200
    assert answer.json() == {
        "ready": True,
        "status": "ready",
        "down": [],
        "checks": {"broker": "ok", "database": "ok"},
    }
