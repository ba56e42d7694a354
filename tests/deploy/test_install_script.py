"""install-depth-anything-v2.sh: syntax, shellcheck, --help, the offline failure, the load
check on a cache that has the models, and the command its --docker mode runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.support import REPO

SCRIPT = REPO / "install-depth-anything-v2.sh"
OFFLINE_ADVICE = "Run this script on a machine"


def run(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_is_an_executable_bash_script() -> None:
    assert os.access(SCRIPT, os.X_OK)
    assert SCRIPT.read_text().startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in SCRIPT.read_text()
    done = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_shellcheck() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    done = subprocess.run([shellcheck, str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_help() -> None:
    done = run("--help")
    assert done.returncode == 0
    assert done.stdout.startswith("Usage: install-depth-anything-v2.sh")
    for word in ("--docker", "MODOMO_MODEL_DIR", "depth depth_fallback"):
        assert word in done.stdout


def test_bad_usage() -> None:
    done = run("--nope")
    assert done.returncode == 2 and "unknown argument" in done.stderr
    assert run("--timeout", "soon").returncode == 2


@pytest.mark.parametrize(
    "network",
    [
        {"HF_HUB_OFFLINE": "1"},
        # nothing listens on port 9 of loopback: the reachability check fails at once
        {"HF_HUB_OFFLINE": "", "HF_ENDPOINT": "http://127.0.0.1:9"},
    ],
    ids=["HF_HUB_OFFLINE", "unreachable"],
)
def test_without_network_it_says_where_to_run_it(tmp_path: Path, network: dict[str, str]) -> None:
    cache = tmp_path / "models"
    started = time.monotonic()
    done = run(env={"MODOMO_MODEL_DIR": str(cache), **network}, timeout=60)
    assert done.returncode == 3, done.stdout + done.stderr
    assert time.monotonic() - started < 30
    assert OFFLINE_ADVICE in done.stderr
    assert "with internet access" in done.stderr
    assert f"MODOMO_MODEL_DIR, here {cache}" in done.stderr
    assert "depth depth_fallback not in the cache" in done.stderr or "not reachable" in done.stderr


def test_models_in_place_are_not_downloaded_and_are_loaded(
    tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    """Local weight folders (here small random checkpoints) count as present: no download,
    straight to the CPU load check, which must pass, offline."""
    done = run(
        env={
            "MODOMO_MODEL_DIR": str(tmp_path / "models"),
            "MODOMO_DEPTH_WEIGHTS": str(tiny_models["depth_anything"]),
            "MODOMO_DEPTH_FALLBACK_WEIGHTS": str(tiny_models["zoedepth"]),
            "HF_HUB_OFFLINE": "1",
        },
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "nothing to download" in done.stdout
    assert "depth: " in done.stdout and "(relative_inverse_depth," in done.stdout
    assert "depth_fallback: " in done.stdout and "(metres," in done.stdout
    assert f"depth models ready in {tmp_path / 'models'}" in done.stdout


def test_docker_mode_runs_itself_in_the_ai_worker_image(tmp_path: Path) -> None:
    """--docker pipes this script into `docker compose run` of the AI worker, with the
    offline switches lifted and no dependencies started (a stub docker records the call)."""
    calls = tmp_path / "calls"
    stub = tmp_path / "bin" / "docker"
    stub.parent.mkdir()
    stub.write_text(
        "#!/usr/bin/env bash\n"
        f'echo "$*" >> "{calls}"\n'
        'if [[ "$*" == *" run "* ]]; then cat > "' + str(tmp_path / "stdin") + '"; fi\n'
    )
    stub.chmod(0o755)
    path = f"{stub.parent}:{os.environ['PATH']}"
    done = run("--docker", "--timeout", "60", env={"PATH": path})
    assert done.returncode == 0, done.stderr
    version, command = calls.read_text().splitlines()
    assert version == "compose version"
    assert command == (
        f"compose -f {REPO}/docker-compose.celery.yml run --rm --no-deps -T "
        "-e HF_HUB_OFFLINE=0 -e YOLO_OFFLINE=0 "
        "celery-ai-worker bash -s -- --timeout 60"
    )
    assert (tmp_path / "stdin").read_text() == SCRIPT.read_text()
