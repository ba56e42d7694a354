"""The Compose deployment end to end, as separate hosts would run it (`make compose-smoke`).

Run by ``scripts/compose-smoke.sh`` once Docker and the base images are ready. In a fresh
folder (``--log``) it writes the project a Docker host without GPUs runs:

- ``docker-compose.yml``: ``docker-compose.celery.yml`` with three changes for this host. The
  AI worker's GPU reservation is dropped (Docker refuses to start a container that reserves
  an NVIDIA device on a host without one); ``/models`` is a read-only bind mount of the
  repo's test models (the fixture detector that ``scripts/train_fixture_detector.py`` trained,
  and tiny random-weight SAM 2.1 / Depth Anything / ZoeDepth from
  ``scripts/build_random_models.py``: the weights cannot be downloaded here); and no Modomo
  container mounts the shared ``modomo-data`` volume, so containers share nothing but Redis,
  PostgreSQL and the S3 store (SeaweedFS, profile ``s3``) over the network, as separate hosts
  would.
- ``.env``: fresh secrets, the S3 settings of the README's "shared S3 artifact store", and
  time limits short enough that a lost worker's batch comes back within minutes.

Then, each step timed: build the two images, ``up`` with ``--scale celery-ai-worker=2``, wait
for every health check, check the migrations, create the bucket and an API key as the README
says, ingest photos (``modomo process``, detection only), a colour job and a detection job
through the API with exact counts, Flower refusing a request without credentials, a second
detection job during which one AI worker container is SIGKILLed (a lost host) and which still
completes exactly, ``docker-compose ps`` all healthy again, and ``down -v``.

Exits 1 naming the first check that failed, after printing the containers' logs tails.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import yaml

REPO = Path(__file__).resolve().parents[1]
PROJECT = "modomo-smoke"
AI = "celery-ai-worker"
AI_REPLICAS = 2
PHOTOS = 24
PHOTO_SIZE = 1024  # pixels, square: the fixture detector's synthetic rooms
API_PORT = 18000
FLOWER_PORT = 15555
BUCKET = "modomo"
# A batch of 4 scenes takes a few seconds; a killed worker's batch comes back from Redis after
# the visibility timeout (kombu's restore runs every 10 s on the surviving worker).
LIMITS = {
    "MODOMO_BATCH_SIZE": "4",
    "MODOMO_TASK_SOFT_TIME_LIMIT": "100",
    "MODOMO_TASK_TIME_LIMIT": "120",
    "MODOMO_VISIBILITY_TIMEOUT": "150",
}


class SmokeFailure(Exception):
    """A check of the smoke run failed; the message says which."""


def docker() -> str:
    """The docker client that builds with BuildKit (chosen by compose-smoke.sh)."""
    return os.environ.get("DOCKER", "docker")


def run(
    argv: list[str], *, cwd: Path | None = None, timeout: float = 3600, log: Path | None = None
) -> str:
    """Run a command; its stdout, or SmokeFailure with the tail of its output."""
    done = subprocess.run(
        argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=os.environ
    )
    if log is not None:
        log.write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-25:])
        raise SmokeFailure(f"`{' '.join(argv[:4])} …` exited {done.returncode}:\n{tail}")
    return done.stdout


class Steps:
    """Times each step and prints it as it ends: ``[  123 s] step (12.3 s)``."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.done: list[tuple[str, float]] = []

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        began = time.monotonic()
        print(f"[{began - self.start:6.0f} s] {name} …", flush=True)
        yield
        took = time.monotonic() - began
        self.done.append((name, took))
        print(f"[{time.monotonic() - self.start:6.0f} s]   done in {took:.1f} s", flush=True)

    def table(self) -> str:
        lines = ["| step | seconds |", "|---|---|"]
        lines += [f"| {name} | {took:.0f} |" for name, took in self.done]
        lines.append(f"| total | {time.monotonic() - self.start:.0f} |")
        return "\n".join(lines)


def wait_for(what: str, check: Callable[[], Any], timeout: float, every: float = 2.0) -> Any:
    """Call ``check`` until it returns something truthy; SmokeFailure after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise SmokeFailure(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


class _NoAliases(yaml.SafeDumper):
    """Writes repeated blocks out in full, so the written file reads on its own."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


class Stack:
    """The smoke project: its folder, compose file and .env, and commands on it."""

    def __init__(self, folder: Path, images: dict[str, str]) -> None:
        self.folder = folder
        self.images = images
        self.file = folder / "docker-compose.yml"
        self.secrets = {
            "REDIS_PASSWORD": secrets.token_hex(16),
            "POSTGRES_PASSWORD": secrets.token_hex(16),
            "FLOWER_PASSWORD": secrets.token_hex(16),
            "S3_ACCESS_KEY": secrets.token_hex(12),
            "S3_SECRET_KEY": secrets.token_hex(24),
        }

    # --- the project folder ---------------------------------------------------------------

    def write(self, models: Path) -> None:
        """docker-compose.yml (see the module docstring) and .env."""
        compose = yaml.safe_load((REPO / "docker-compose.celery.yml").read_text())
        services = compose["services"]
        for name, service in services.items():
            if "volumes" in service and str(service.get("image", "")).startswith("${MODOMO"):
                service["volumes"] = [
                    v for v in service["volumes"] if not v.startswith("modomo-data:")
                ]
                if not service["volumes"]:
                    del service["volumes"]
            service.pop("build", None)  # built by this script, with the local base images
            if name == AI:
                service["deploy"].pop("resources")
                service["volumes"] = [
                    v for v in service["volumes"] if not v.startswith("modomo-models:")
                ] + [f"{models}:/models:ro"]
        # the x- blocks were merged into the services when the file was read
        compose = {k: v for k, v in compose.items() if not k.startswith("x-")}
        self.file.write_text(yaml.dump(compose, Dumper=_NoAliases, sort_keys=False, width=100))
        env = {
            **self.secrets,
            "COMPOSE_PROFILES": "postgres,s3",
            "MODOMO_IMAGE": "modomo",
            "MODOMO_AI_IMAGE": "modomo-ai",
            "MODOMO_TAG": "smoke",
            "API_PORT": str(API_PORT),
            "FLOWER_PORT": str(FLOWER_PORT),
            "AI_WORKERS": str(AI_REPLICAS),
            "WORKER_CONCURRENCY": "2",
            "API_WORKERS": "1",
            # the README's shared S3 artifact store
            "MODOMO_ARTIFACT_URL": f"s3://{BUCKET}/artifacts",
            "FSSPEC_S3_ENDPOINT_URL": "http://seaweedfs:8333",
            "FSSPEC_S3_KEY": self.secrets["S3_ACCESS_KEY"],
            "FSSPEC_S3_SECRET": self.secrets["S3_SECRET_KEY"],
            # no GPU here; the test models (random weights: test plumbing only)
            "MODOMO_DEVICE": "cpu",
            "MODOMO_DETECTOR_WEIGHTS": "/models/fixture_detector.pt",
            "MODOMO_DETECTOR_IMAGE_SIZE": "256",
            "MODOMO_SEGMENTER_WEIGHTS": "/models/sam2",
            "MODOMO_DEPTH_WEIGHTS": "/models/depth_anything",
            "MODOMO_DEPTH_FALLBACK_WEIGHTS": "/models/zoedepth",
            **LIMITS,
            **{k: v for k, v in self.images.items() if k != "BASE_IMAGE" and k != "UV_IMAGE"},
        }
        (self.folder / ".env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))

    # --- commands -------------------------------------------------------------------------

    def compose(self, *args: str, timeout: float = 900, log: str | None = None) -> str:
        """``docker-compose -p modomo-smoke -f docker-compose.yml ARGS`` in the folder."""
        argv = ["docker-compose", "-p", PROJECT, "-f", str(self.file), *args]
        return run(argv, cwd=self.folder, timeout=timeout, log=self.folder / log if log else None)

    def containers(self) -> list[dict[str, Any]]:
        """Every container of the project (``docker inspect``), stopped ones included."""
        ids = run(
            [docker(), "ps", "-aq", "--filter", f"label=com.docker.compose.project={PROJECT}"]
        ).split()
        return json.loads(run([docker(), "inspect", *ids])) if ids else []

    def unhealthy(self) -> list[str]:
        """Containers not yet as they should be: running and healthy, or migrate exited 0."""
        wrong = []
        for c in self.containers():
            service = c["Config"]["Labels"]["com.docker.compose.service"]
            state = c["State"]
            if service == "migrate":
                ok = state["Status"] == "exited" and state["ExitCode"] == 0
            else:
                ok = state["Status"] == "running" and state.get("Health", {}).get("Status") == (
                    "healthy"
                )
            if not ok:
                health = state.get("Health", {}).get("Status", "-")
                wrong.append(f"{c['Name'].lstrip('/')} ({state['Status']}, {health})")
        return wrong

    def wait_healthy(self, timeout: float) -> None:
        last: list[str] = []

        def check() -> bool:
            nonlocal last
            last = self.unhealthy()
            return not last

        try:
            wait_for("every health check", check, timeout, every=5)
        except SmokeFailure as exc:
            raise SmokeFailure(f"{exc}: {', '.join(last)}") from None

    def exec(self, service: str, *argv: str, timeout: float = 300) -> str:
        return self.compose("exec", "-T", service, *argv, timeout=timeout)

    def stored(self) -> int:
        """How many objects the S3 bucket holds, counted from inside the API container."""
        script = f"import fsspec; print(len(fsspec.filesystem('s3').find('{BUCKET}')))"
        return int(self.exec("api", "python", "-c", script).strip())

    def state(self, container: str) -> str:
        """A container's state as Docker reports it, e.g. ``exited (137)``."""
        state = json.loads(run([docker(), "inspect", container]))[0]["State"]
        return f"{state['Status']} ({state['ExitCode']})"

    def logs_tail(self) -> str:
        try:
            return self.compose("logs", "--no-color", "--tail", "30", timeout=120)
        except SmokeFailure as exc:
            return str(exc)


class Api:
    """The stack's API on loopback, as a user with an admin key."""

    def __init__(self, key: str) -> None:
        self.http = httpx.Client(
            base_url=f"http://127.0.0.1:{API_PORT}",
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )

    def post(self, path: str, body: dict[str, Any]) -> str:
        """POST a job-creating request; the job's id."""
        response = self.http.post(path, json=body)
        if response.status_code != 202:
            raise SmokeFailure(f"POST {path}: {response.status_code} {response.text[:300]}")
        return str(response.json()["job_id"])

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.http.get(f"/jobs/{job_id}")
        response.raise_for_status()
        return dict(response.json())

    def wait_job(self, job_id: str, timeout: float) -> dict[str, Any]:
        """The job once it has ended (completed, failed, cancelled, expired)."""

        def ended() -> dict[str, Any] | None:
            job = self.job(job_id)
            return job if job["status"] in {"completed", "failed", "cancelled", "expired"} else None

        return dict(wait_for(f"job {job_id}", ended, timeout))

    def scene_ids(self) -> list[str]:
        response = self.http.get("/scenes", params={"limit": 200})
        response.raise_for_status()
        return [item["id"] for item in response.json()["items"]]


def exact(job: dict[str, Any], total: int, what: str) -> str:
    """SmokeFailure unless the job completed with every scene counted once and none failed."""
    got = (job["status"], job["total"], job["processed"], job["failed"], job.get("pending"))
    if got != ("completed", total, total, 0, 0):
        failures = [f"{f['stage']}: {f['error']}" for f in job.get("failures", [])][:5]
        raise SmokeFailure(
            f"{what}: status/total/processed/failed/pending {got}, wanted "
            f"('completed', {total}, {total}, 0, 0); failures: {failures}"
        )
    return f"{what}: completed, {job['processed']}/{job['total']} processed, 0 failed, 0 pending"


# --- inputs -----------------------------------------------------------------------------


def _script(name: str) -> ModuleType:
    """Another of this folder's scripts, imported as a module."""
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def build_models(folder: Path) -> Path:
    """The fixture detector and tiny random-weight SAM 2.1 / depth models, readable by the
    containers' uid 10001."""
    models = folder / "models"
    _script("build_random_models").build(models, "tiny")
    shutil.copy(REPO / "tests" / "fixtures" / "fixture_detector.pt", models)
    for path in [models, *models.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return models


def write_photos(folder: Path) -> Path:
    """PHOTOS synthetic rooms (sofas, plants, TVs, lamps) as JPEGs, the fixture detector's
    world, drawn by scripts/train_fixture_detector.py."""
    import numpy as np
    from PIL import Image

    module = _script("train_fixture_detector")
    photos = folder / "photos"
    photos.mkdir()
    photos.chmod(0o755)
    rng = np.random.default_rng(2026)
    for index in range(PHOTOS):
        rgb, _, _ = module.make_scene(rng, PHOTO_SIZE)
        path = photos / f"room-{index:02d}.jpg"
        Image.fromarray(rgb).save(path, quality=90)
        path.chmod(0o644)
    return photos


# --- the run ----------------------------------------------------------------------------


def build_images(steps: Steps, images: dict[str, str], log: Path) -> None:
    args = [f"--build-arg={k}={v}" for k, v in images.items() if k in {"BASE_IMAGE", "UV_IMAGE"}]
    for tag, extras in (("modomo:smoke", "s3"), ("modomo-ai:smoke", "ai,s3")):
        with steps(f"build {tag} (EXTRAS={extras})"):
            run(
                [docker(), "build", "--progress=plain", "-t", tag, *args,
                 f"--build-arg=EXTRAS={extras}", str(REPO)],
                timeout=5400,
                log=log / f"build-{tag.split(':')[0]}.log",
            )  # fmt: skip


def smoke(steps: Steps, stack: Stack, photos: Path) -> list[str]:
    """The checks after the images are built; the lines for RELIABILITY.md."""
    found: list[str] = []
    with steps(f"up -d --scale {AI}={AI_REPLICAS} (profiles postgres, s3)"):
        stack.compose("up", "-d", "--no-build", "--scale", f"{AI}={AI_REPLICAS}", timeout=1800)
    with steps("every health check passes (migrate exited 0)"):
        stack.wait_healthy(900)
    with steps("migrations at head"):
        current = stack.exec("api", "modomo", "db", "current").strip()
        versions = REPO / "src" / "modomo" / "db" / "migrations" / "versions"
        head = max(path.name.split("_")[0] for path in versions.glob("[0-9]*.py"))
        if current != head:
            raise SmokeFailure(f"the database is at revision {current}, the code's head {head}")
        found.append(f"migrations: the database at revision {current}, the code's head")
    with steps("bucket and API key (the README's commands)"):
        stack.exec(
            "api", "python", "-c", f"import fsspec; fsspec.filesystem('s3').mkdir('{BUCKET}')"
        )
        out = stack.exec("api", "modomo", "keys", "create", "smoke", "--role", "admin")
        match = re.search(r"mdm_[A-Za-z0-9_\-]+", out)
        if match is None:
            raise SmokeFailure(f"no key in `modomo keys create`'s output: {out[:300]}")
        api = Api(match.group(0))
    with steps(f"ingest {PHOTOS} photos into s3:// (modomo process --pipeline detect)"):
        stack.compose(
            "run", "--rm", "-T", "-v", f"{photos}:/photos:ro", "api",
            "modomo", "process", "/photos", "--pipeline", "detect", "--show", "0",
            timeout=1200, log="ingest.log",
        )  # fmt: skip
        scene_ids = api.scene_ids()
        if len(scene_ids) != PHOTOS:
            raise SmokeFailure(f"{len(scene_ids)} scenes in the catalogue, wanted {PHOTOS}")
        found.append(f"ingest: {len(scene_ids)} scenes, {stack.stored()} objects in s3://{BUCKET}")
    with steps("colour job through the API (POST /process/colors)"):
        job = api.wait_job(api.post("/process/colors", {}), 600)
        found.append(exact(job, PHOTOS, "colour job"))
    with steps("detection job through the API (POST /detect/process)"):
        job = api.wait_job(api.post("/detect/process", {"scene_ids": scene_ids}), 1200)
        found.append(exact(job, PHOTOS, "detection job"))
        objects = api.http.get("/scenes", params={"has_objects": True, "limit": 1}).json()
        found.append(f"scenes with detected objects: {objects['total']}/{PHOTOS}")
        found.append(f"s3://{BUCKET} after it: {stack.stored()} objects (images, depth maps)")
    with steps("Flower refuses a request without credentials"):
        bare = httpx.get(f"http://127.0.0.1:{FLOWER_PORT}/", timeout=30)
        authed = httpx.get(
            f"http://127.0.0.1:{FLOWER_PORT}/",
            auth=("admin", stack.secrets["FLOWER_PASSWORD"]),
            timeout=30,
        )
        if bare.status_code != 401 or authed.status_code != 200:
            raise SmokeFailure(f"Flower: {bare.status_code} without, {authed.status_code} with")
        found.append("Flower: 401 without credentials, 200 with")
    with steps("second detection job, one AI worker container SIGKILLed mid-job"):
        job_id = api.post("/detect/process", {"scene_ids": scene_ids})
        wait_for(
            "the job's first scenes",
            lambda: 0 < api.job(job_id)["processed"] < PHOTOS,
            600,
            every=0.5,
        )
        victim = next(
            c["Name"].lstrip("/")
            for c in stack.containers()
            if c["Config"]["Labels"]["com.docker.compose.service"] == AI
        )
        before = api.job(job_id)["processed"]
        run([docker(), "kill", "--signal", "KILL", victim])
        killed_at = time.monotonic()
        job = api.wait_job(job_id, 1200)
        found.append(
            f"{victim} SIGKILLed with {before}/{PHOTOS} scenes processed; "
            + exact(job, PHOTOS, "the job")
            + f", {time.monotonic() - killed_at:.0f} s after the kill (the batch it held came"
            f" back after the visibility timeout, {LIMITS['MODOMO_VISIBILITY_TIMEOUT']} s); the"
            f" killed container stayed down meanwhile: {stack.state(victim)}"
        )
    with steps(f"back to {AI_REPLICAS} AI workers, every container healthy"):
        stack.compose("up", "-d", "--no-build", "--scale", f"{AI}={AI_REPLICAS}", timeout=1800)
        stack.wait_healthy(900)
        ps = stack.compose("ps")
        print(ps, flush=True)
        found.append("docker-compose ps:\n" + ps.rstrip())
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, required=True, help="NAME=image lines")
    parser.add_argument("--log", type=Path, required=True, help="folder for the run's files")
    parser.add_argument("--keep", action="store_true", help="leave the stack up at the end")
    args = parser.parse_args()
    # dockerd answers slowly while vfs copies an image's layers (docker-compose's default: 60 s)
    os.environ.setdefault("COMPOSE_HTTP_TIMEOUT", "600")
    os.environ.setdefault("TQDM_DISABLE", "1")  # transformers' progress bars, building models
    images = dict(
        line.split("=", 1) for line in args.images.read_text().splitlines() if "=" in line
    )
    folder = args.log / "project"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    steps = Steps()
    stack = Stack(folder, images)
    ok = False
    try:
        build_images(steps, images, args.log)
        with steps("test models and photos"):
            stack.write(build_models(folder))
            photos = write_photos(folder)
        found = smoke(steps, stack, photos)
        ok = True
    except (SmokeFailure, httpx.HTTPError, subprocess.TimeoutExpired) as exc:
        print(f"\nFAILED: {exc}\n", flush=True)
        print(stack.logs_tail() if stack.file.exists() else "", flush=True)
    finally:
        if not args.keep and stack.file.exists():
            with steps("down -v"):
                try:
                    stack.compose("down", "-v", "--remove-orphans", timeout=600)
                except SmokeFailure as exc:
                    print(exc, flush=True)
    if not ok:
        sys.exit(1)
    print("\n## compose smoke: passed\n")
    print("\n".join(f"- {line}" if "\n" not in line else line for line in found))
    print()
    print(steps.table())


if __name__ == "__main__":
    main()
