"""docker-compose.celery.yml and .env.example: read as YAML and checked for what the
deployment relies on, and (where docker-compose is installed) validated by Compose itself.

No Docker daemon is needed: nothing is started.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from modomo.celery_app import QUEUES
from modomo.cli import AI_QUEUES, GENERAL_QUEUES
from tests.support import REPO

COMPOSE_FILE = REPO / "docker-compose.celery.yml"
ENV_EXAMPLE = REPO / ".env.example"
SECRETS = (
    "REDIS_PASSWORD",
    "POSTGRES_PASSWORD",
    "FLOWER_PASSWORD",
    "S3_ACCESS_KEY",
    "S3_SECRET_KEY",
)
DEPENDENCIES = ("redis", "postgres", "seaweedfs")
ONE_SHOT = {"migrate"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]  # type: ignore[no-any-return]


def modomo_argv(service: dict[str, Any]) -> list[str]:
    """The `modomo ...` command line a service runs: a plain list, or the `exec modomo ...`
    line of an `sh -c` script (the AI worker claims its GPU first)."""
    command = service.get("command") or []
    if isinstance(command, str):
        command = shlex.split(command)
    if command[:2] == ["sh", "-c"]:
        lines = [line.strip() for line in command[2].splitlines()]
        execs = [line for line in lines if line.startswith("exec modomo ")]
        assert len(execs) == 1, f"one `exec modomo ...` line expected in {command[2]!r}"
        return shlex.split(execs[0])[1:]
    return [str(part) for part in command]


def worker_options(argv: list[str]) -> dict[str, Any]:
    """Queues, concurrency and name of a `modomo worker` command, as cli.worker reads them."""
    assert argv[:2] == ["modomo", "worker"], argv
    options: dict[str, Any] = {"ai": False, "queues": None, "concurrency": None, "name": None}
    args = iter(argv[2:])
    for arg in args:
        if arg == "--ai":
            options["ai"] = True
        elif arg in ("-Q", "--queues"):
            options["queues"] = next(args)
        elif arg in ("-c", "--concurrency"):
            options["concurrency"] = next(args)
        elif arg in ("-n", "--hostname"):
            options["name"] = next(args)
    queues = options["queues"] or (AI_QUEUES if options["ai"] else GENERAL_QUEUES)
    options["queues"] = set(queues.split(","))
    if options["ai"] and options["concurrency"] is None:
        options["concurrency"] = "1"  # what `modomo worker --ai` does
    return options


def workers(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    found = {}
    for name, service in services.items():
        argv = modomo_argv(service) if "command" in service else []
        if argv[:2] == ["modomo", "worker"]:
            found[name] = worker_options(argv)
    return found


def env_example_names() -> set[str]:
    """Names assigned in .env.example, set or commented out (`NAME=` or `# NAME=`)."""
    return set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), re.M))


# --- queues and workers ---------------------------------------------------------------------


def test_every_queue_has_a_consumer(services: dict[str, dict[str, Any]]) -> None:
    consumed = set().union(*(w["queues"] for w in workers(services).values()))
    assert set(QUEUES) - consumed == set(), "queues no service consumes"
    assert consumed - set(QUEUES) == set(), "queues Modomo does not route to"


def test_the_expected_workers_exist(services: dict[str, dict[str, Any]]) -> None:
    assert set(workers(services)) == {
        "celery-worker",
        "celery-ai-worker",
        "celery-scraping-worker",
    }
    assert modomo_argv(services["celery-beat"]) == ["modomo", "beat"]
    assert services["migrate"]["command"][-1].strip().endswith("exec modomo db upgrade")


def test_ai_worker_runs_one_process_per_gpu(services: dict[str, dict[str, Any]]) -> None:
    ai = services["celery-ai-worker"]
    options = workers(services)["celery-ai-worker"]
    assert options["ai"] and options["concurrency"] == "1"
    assert set(AI_QUEUES.split(",")) <= options["queues"]
    assert "--warmup" in modomo_argv(ai)
    assert ai["deploy"]["replicas"] == "${AI_WORKERS:-1}"
    devices = ai["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    # every replica sees every GPU, so it must pick one: the claim sets CUDA_VISIBLE_DEVICES
    script = ai["command"][2]
    assert "flock -n 9" in script and 'export CUDA_VISIBLE_DEVICES="$$gpu"' in script
    assert any(volume.endswith(":/gpu-locks") for volume in ai["volumes"])
    assert ai["environment"]["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert "utility" in ai["environment"]["NVIDIA_DRIVER_CAPABILITIES"]  # nvidia-smi


def _claim_script(services: dict[str, dict[str, Any]], tmp_path: Path) -> Path:
    """The AI worker's start script as its shell sees it ($$ -> $), with the lock folder in
    tmp_path and `modomo worker` replaced by a report of the GPU it got (and, with HOLD, a
    pause that keeps its lock)."""
    script = services["celery-ai-worker"]["command"][2].replace("$$", "$")
    script = script.replace("/gpu-locks/", f"{tmp_path}/locks/")
    lines = [
        'echo "CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-}"; exec sleep "${HOLD:-0}"'
        if line.startswith("exec modomo worker")
        else line
        for line in script.splitlines()
    ]
    (tmp_path / "locks").mkdir()
    path = tmp_path / "start.sh"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_ai_worker_replicas_claim_different_gpus(
    services: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    """Two GPUs (a stub nvidia-smi), three replicas: GPU 0, GPU 1, and a clear refusal."""
    script = _claim_script(services, tmp_path)
    stub = tmp_path / "bin" / "nvidia-smi"
    stub.parent.mkdir()
    stub.write_text('#!/bin/sh\nprintf "0\\n1\\n"\n')
    stub.chmod(0o755)
    env = {"PATH": f"{stub.parent}:{os.environ['PATH']}"}
    first, second = (
        subprocess.Popen(
            ["sh", str(script)], env={**env, "HOLD": "60"}, stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    )
    try:
        assert first.stdout is not None and second.stdout is not None
        got = {first.stdout.readline().strip(), second.stdout.readline().strip()}
        assert got == {"AI worker on GPU 0", "AI worker on GPU 1"}
        third = subprocess.run(
            ["sh", str(script)], env=env, capture_output=True, text=True, timeout=30
        )
        assert third.returncode == 1
        assert "every GPU (0,1) has an AI worker already" in third.stderr
        pinned = subprocess.run(
            ["sh", str(script)],
            env={**env, "CUDA_VISIBLE_DEVICES": "1"},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert "CUDA_VISIBLE_DEVICES=1" in pinned.stdout
    finally:
        for process in (first, second):
            process.kill()
            process.wait()
            assert process.stdout is not None
            process.stdout.close()


def test_ai_worker_start_script_passes_shellcheck(
    services: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    script = _claim_script(services, tmp_path)
    done = subprocess.run(
        [shellcheck, "--shell=sh", str(script)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout


def test_ai_worker_is_offline_with_the_model_cache(services: dict[str, dict[str, Any]]) -> None:
    ai = services["celery-ai-worker"]
    assert ai["environment"]["HF_HUB_OFFLINE"] == "1"
    assert ai["environment"]["YOLO_OFFLINE"] == "1"
    assert ai["environment"]["MODOMO_MODEL_DIR"] == "/models"
    assert "modomo-models:/models" in ai["volumes"]


def test_the_scraping_worker_runs_one_at_a_time(services: dict[str, dict[str, Any]]) -> None:
    options = workers(services)["celery-scraping-worker"]
    assert options["queues"] == {"scraping", "import"}
    assert options["concurrency"] == "1"
    # it imports datasets from the hub: not offline
    assert "HF_HUB_OFFLINE" not in services["celery-scraping-worker"]["environment"]


# --- health checks ----------------------------------------------------------------------


def test_every_long_running_service_has_a_healthcheck(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, service in services.items():
        if name in ONE_SHOT:
            assert service.get("restart") == "no", name
            continue
        check = service.get("healthcheck")
        assert check and check.get("test") and not check.get("disable"), name


def test_worker_healthchecks_ping_their_own_worker(services: dict[str, dict[str, Any]]) -> None:
    for name, options in workers(services).items():
        node = options["name"]
        assert node and node.endswith("@%h"), f"{name}: give the worker a -n NAME@%h"
        test = " ".join(services[name]["healthcheck"]["test"])
        prefix = node.removesuffix("@%h")
        assert f"inspect ping -d {prefix}@$$HOSTNAME" in test, name


def test_names_of_workers_differ(services: dict[str, dict[str, Any]]) -> None:
    names = [options["name"] for options in workers(services).values()]
    assert len(names) == len(set(names))


# --- network exposure and secrets ---------------------------------------------------------


def test_nothing_is_published_beyond_loopback_but_the_api_if_asked(
    services: dict[str, dict[str, Any]],
) -> None:
    for name in DEPENDENCIES:
        assert "ports" not in services[name], f"{name} must not publish ports"
        assert "expose" not in services[name]
    for name, service in services.items():
        for port in service.get("ports", []):
            assert isinstance(port, str), f"{name}: use the short HOST_IP:HOST:CONTAINER form"
            if name == "api":
                assert port.startswith("${API_BIND:-127.0.0.1}:"), port
            else:
                assert port.startswith("127.0.0.1:"), f"{name} publishes {port}"
    assert {name for name, s in services.items() if "ports" in s} == {"api", "flower"}


def test_flower_and_redis_require_their_passwords(services: dict[str, dict[str, Any]]) -> None:
    flower = services["flower"]
    assert re.fullmatch(
        r"\$\{FLOWER_PASSWORD:\?[^}]+\}", flower["environment"]["MODOMO_FLOWER_PASSWORD"]
    )
    assert "--address" in modomo_argv(flower)  # reachable through its published port
    redis = services["redis"]
    assert "--requirepass" in redis["command"]
    password = redis["command"][redis["command"].index("--requirepass") + 1]
    assert password.startswith("${REDIS_PASSWORD:?")
    assert redis["environment"]["REDISCLI_AUTH"].startswith("${REDIS_PASSWORD:?")
    assert "--appendonly" in redis["command"]
    url = services["api"]["environment"]["REDIS_URL"]
    assert url.startswith("redis://:${REDIS_PASSWORD:?") and url.endswith("@redis:6379/0")


# --- database and start-up order ------------------------------------------------------------


def test_postgres_is_optional(services: dict[str, dict[str, Any]]) -> None:
    """The bundled PostgreSQL sits in a profile, and nothing depends on it directly, so with
    the profile off (Supabase) both Compose versions still accept the file."""
    assert services["postgres"]["profiles"] == ["postgres"]
    for name, service in services.items():
        assert "postgres" not in (service.get("depends_on") or {}), name
    env = services["api"]["environment"]
    assert env["DATABASE_URL"] == "${DATABASE_URL:-postgresql://modomo@postgres:5432/modomo}"
    assert env["PGPASSWORD"] == "${POSTGRES_PASSWORD:-}"
    assert "postgres" in re.findall(r"^COMPOSE_PROFILES=(.*)$", ENV_EXAMPLE.read_text(), re.M)


def test_modomo_services_start_after_the_migrations(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, service in services.items():
        if name in (*DEPENDENCIES, *ONE_SHOT, "flower"):
            continue
        depends = service["depends_on"]
        assert depends["migrate"] == {"condition": "service_completed_successfully"}, name
        assert depends["redis"] == {"condition": "service_healthy"}, name
    assert services["flower"]["depends_on"]["redis"] == {"condition": "service_healthy"}


def test_services_share_the_data_volume(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    for name, service in services.items():
        if name not in DEPENDENCIES:
            assert "modomo-data:/data" in service["volumes"], name
            assert service["environment"]["MODOMO_DATA_DIR"] == "/data", name
    assert {"modomo-data", "modomo-models", "redis-data", "postgres-data"} <= set(
        compose["volumes"]
    )


# --- images -----------------------------------------------------------------------------


def test_images_and_builds_are_consistent(services: dict[str, dict[str, Any]]) -> None:
    """Two images from the one Dockerfile: the CPU one (no extras but BUILD_EXTRAS) for
    everything but the AI worker, the AI one (EXTRAS=ai,...) for it; one image name is never
    built two ways."""
    builds: dict[str, dict[str, Any]] = {}
    for name, service in services.items():
        if name in DEPENDENCIES:
            assert "build" not in service, name
            continue
        build = service["build"]
        assert build["context"] == "." and "dockerfile" not in build, name
        assert builds.setdefault(service["image"], build) == build, service["image"]
        extras = build["args"]["EXTRAS"]
        expected = "${BUILD_EXTRAS:-}"
        assert extras == ("ai," + expected if name == "celery-ai-worker" else expected), name
        assert service.get("init") is True, f"{name}: init reaps the worker's children"
    assert len(builds) == 2
    assert (REPO / "Dockerfile").is_file()


# --- .env.example -----------------------------------------------------------------------


def test_env_example_defines_every_compose_variable() -> None:
    text = COMPOSE_FILE.read_text()
    # ${NAME...} that Compose interpolates ($$ is a literal $ for the container's shell)
    used = set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)", text))
    assert used, "no variables found: the pattern is wrong"
    assert used - env_example_names() == set()


def test_env_example_names_every_setting() -> None:
    """Every setting of modomo.config (its MODOMO_ name and legacy alias) is in .env.example."""
    from pydantic import AliasChoices

    from modomo.config import Settings

    text = ENV_EXAMPLE.read_text()
    missing = []
    for field in Settings.model_fields.values():
        alias = field.validation_alias
        assert isinstance(alias, AliasChoices)
        for choice in alias.choices:
            if not re.search(rf"\b{re.escape(str(choice))}\b", text):
                missing.append(str(choice))
    assert missing == []


def test_env_example_holds_no_secrets() -> None:
    values = dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", ENV_EXAMPLE.read_text(), re.M))
    for name in SECRETS:
        assert values[name] == "", f"{name} must be empty in .env.example"
    for name, value in values.items():
        if re.search(r"PASSWORD|SECRET|TOKEN|KEY", name):
            assert value == "", name
    assert set(values) == {
        "COMPOSE_PROJECT_NAME",
        "COMPOSE_FILE",
        "COMPOSE_PROFILES",
        *SECRETS,
    }, "everything else stays commented out, at its default"


# --- Compose itself -----------------------------------------------------------------------


def _project(tmp_path: Path, **env: str) -> Path:
    """A copy of the compose file with a .env made from .env.example as the docs say."""
    shutil.copy(COMPOSE_FILE, tmp_path / COMPOSE_FILE.name)
    text = ENV_EXAMPLE.read_text()
    for name in SECRETS:
        text = re.sub(rf"^{name}=$", f"{name}=dummy-{name.lower()}", text, flags=re.M)
    for name, value in env.items():
        text = re.sub(rf"^#?\s*{name}=.*$", f"{name}={value}", text, flags=re.M)
    (tmp_path / ".env").write_text(text)
    return tmp_path / COMPOSE_FILE.name


def _compose_commands() -> list[list[str]]:
    commands = []
    if shutil.which("docker-compose"):
        commands.append(["docker-compose"])
    if shutil.which("docker"):
        done = subprocess.run(
            ["docker", "compose", "version"], capture_output=True, text=True, timeout=30
        )
        if done.returncode == 0:
            commands.append(["docker", "compose"])
    return commands


def _config(command: list[str], file: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(file.parent)}
    return subprocess.run(
        [*command, "-f", str(file), "config", "-q"],
        cwd=file.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def compose_commands() -> list[list[str]]:
    commands = _compose_commands()
    if not commands:
        pytest.skip(
            "neither docker-compose nor `docker compose` is installed "
            "(apt-get install docker-compose): Compose's own validation is skipped"
        )
    return commands


@pytest.mark.parametrize(
    "profiles", ["postgres", "", "postgres,s3"], ids=["bundled-postgres", "supabase", "s3"]
)
def test_compose_accepts_the_file(
    compose_commands: list[list[str]], tmp_path: Path, profiles: str
) -> None:
    file = _project(
        tmp_path,
        COMPOSE_PROFILES=profiles,
        **({} if profiles else {"DATABASE_URL": "postgresql://u:p@db.example.com:5432/postgres"}),
    )
    for command in compose_commands:
        done = _config(command, file)
        assert done.returncode == 0, f"{' '.join(command)} config: {done.stderr}"


# the two marked :? (POSTGRES_PASSWORD and the s3 profile's keys are not: see the file)
@pytest.mark.parametrize("secret", ["REDIS_PASSWORD", "FLOWER_PASSWORD"])
def test_compose_refuses_to_run_without_the_secrets(
    compose_commands: list[list[str]], tmp_path: Path, secret: str
) -> None:
    file = _project(tmp_path)
    env = file.parent / ".env"
    env.write_text(re.sub(rf"^{secret}=.*$", f"{secret}=", env.read_text(), flags=re.M))
    for command in compose_commands:
        done = _config(command, file)
        assert done.returncode != 0
        assert f"set {secret} in .env" in done.stderr
