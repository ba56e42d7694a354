"""`make compose-smoke`'s static side: the project it writes for a Docker host without GPUs,
and the offline base images (hadolint, and that they cover every image the Compose file
names). The run itself builds images for half an hour, too slow for `make test`:
RELIABILITY.md has its output."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.test_compose import _compose_commands, _config
from tests.deploy.test_dockerfile import _hadolint
from tests.support import REPO, load_script

OFFLINE = REPO / "docker" / "offline"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, str]]:
    """The compose file and .env that compose_smoke.py writes, with the offline images."""
    smoke = load_script("compose_smoke")
    folder = tmp_path_factory.mktemp("smoke")
    models = folder / "models"
    models.mkdir()
    images = {
        "BASE_IMAGE": "modomo-offline/debian:bookworm",
        "UV_IMAGE": "modomo-offline/uv:0.13.8",
        "REDIS_IMAGE": "modomo-offline/redis:7",
        "POSTGRES_IMAGE": "modomo-offline/postgres:15",
        "SEAWEEDFS_IMAGE": "modomo-offline/seaweedfs:4.48",
    }
    stack = smoke.Stack(folder, images)
    stack.write(models)
    compose = yaml.safe_load(stack.file.read_text())
    env = dict(line.split("=", 1) for line in (folder / ".env").read_text().splitlines() if line)
    return compose, env


def test_the_smoke_project_is_the_compose_file_for_a_host_without_gpus(
    project: tuple[dict[str, Any], dict[str, str]],
) -> None:
    compose, env = project
    original = yaml.safe_load((REPO / "docker-compose.celery.yml").read_text())
    services = compose["services"]
    assert set(services) == set(original["services"])
    ai = services["celery-ai-worker"]
    assert "resources" not in ai["deploy"], "no NVIDIA reservation on a host without GPUs"
    assert (
        ai["deploy"]["replicas"] == original["services"]["celery-ai-worker"]["deploy"]["replicas"]
    )
    assert any(v.endswith(":/models:ro") for v in ai["volumes"])
    for name, service in services.items():
        # unchanged: commands and health checks are what production runs
        assert service.get("command") == original["services"][name].get("command"), name
        assert service.get("healthcheck") == original["services"][name].get("healthcheck"), name
        # separate hosts: Modomo's containers share nothing but the network services
        assert not any(v.startswith("modomo-data:") for v in service.get("volumes", [])), name
    assert env["COMPOSE_PROFILES"] == "postgres,s3"
    assert env["MODOMO_ARTIFACT_URL"].startswith("s3://")
    assert env["FSSPEC_S3_KEY"] == env["S3_ACCESS_KEY"]
    assert env["REDIS_IMAGE"] == "modomo-offline/redis:7"


def test_compose_accepts_the_smoke_project(
    project: tuple[dict[str, Any], dict[str, str]], tmp_path: Path
) -> None:
    commands = _compose_commands()
    if not commands:
        pytest.skip("neither docker-compose nor `docker compose` is installed")
    compose, env = project
    file = tmp_path / "docker-compose.yml"
    file.write_text(yaml.safe_dump(compose))
    (tmp_path / ".env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    for command in commands:
        done = _config(command, file)
        assert done.returncode == 0, f"{' '.join(command)} config: {done.stderr}"


def test_offline_images_stand_in_for_every_image_the_compose_file_pulls() -> None:
    """Every image of the Compose file is Modomo's own (built) or named by a variable that
    scripts/offline-images.sh writes."""
    script = (REPO / "scripts" / "offline-images.sh").read_text()
    written = set(re.findall(r'"([A-Z_]+)=\$', script))
    assert {"BASE_IMAGE", "UV_IMAGE"} <= written  # the Dockerfile's build arguments
    services = yaml.safe_load((REPO / "docker-compose.celery.yml").read_text())["services"]
    for name, service in services.items():
        variable = re.fullmatch(
            r"\$\{([A-Z_]+):-[^}]+\}(:\$\{MODOMO_TAG:-latest\})?", service["image"]
        )
        assert variable, f"{name}: {service['image']} cannot be replaced"
        if not variable.group(1).startswith("MODOMO_"):
            assert variable.group(1) in written, name


@pytest.mark.parametrize("dockerfile", sorted(OFFLINE.glob("*.Dockerfile")), ids=lambda p: p.name)
def test_offline_dockerfiles_pass_hadolint(dockerfile: Path) -> None:
    import subprocess

    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint is not installed")
    done = subprocess.run(
        [hadolint, "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    "script",
    [
        "scripts/compose-smoke.sh",
        "scripts/offline-images.sh",
        "docker/offline/postgres-entrypoint.sh",
    ],
)
def test_smoke_scripts_pass_shellcheck(script: str) -> None:
    import shutil
    import subprocess

    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    done = subprocess.run(
        [shellcheck, str(REPO / script)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
