#!/usr/bin/env bash
# `make compose-smoke`: the Compose deployment for real on this host (RELIABILITY.md has a run).
#
# 1. Docker: Debian's docker.io, docker-compose and debootstrap when missing, dockerd (with
#    DOCKERD_ARGS) when none is running. Docker picks overlay2 where the kernel has it; with
#    vfs (no copy-on-write) every layer and container is a full copy, and the AI image (torch
#    with its CUDA wheels, ~9 GB) does not fit in 80 GB of disk.
# 2. Base images: when the usual ones cannot be pulled (no registry), built locally by
#    scripts/offline-images.sh (Debian by debootstrap; Redis, PostgreSQL and SeaweedFS from
#    Debian's packages and PyPI; uv from PyPI).
# 3. scripts/compose_smoke.py: builds `modomo` and `modomo-ai`, runs the stack with two AI
#    workers on the S3 profile, jobs through the API, an AI worker container killed mid-job,
#    then tears it all down. Each step's time is printed.
#
# Needs root, the project's environment (`make setup`) and about 40 GB of disk. About 15
# minutes on 2 cores from nothing, a third of it building the AI image.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
log=${SMOKE_LOG:-/var/tmp/modomo-compose-smoke}
mkdir -p "$log"
start=$SECONDS
say() { printf '[%6ds] %s\n' "$((SECONDS - start))" "$*"; }

missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v docker-compose >/dev/null || missing+=(docker-compose)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if ((${#missing[@]})); then
  say "installing ${missing[*]} (Debian's packages)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >"$log/apt.log" 2>&1 \
    || { tail -20 "$log/apt.log"; exit 1; }
fi

# A client that builds with BuildKit: one with the buildx plugin, or Debian's 20.10 client,
# whose DOCKER_BUILDKIT=1 uses the daemon's own BuildKit (a newer client without buildx
# refuses to build).
DOCKER=docker
if ! docker buildx version >/dev/null 2>&1; then
  for client in /usr/bin/docker $(type -ap docker); do
    major=$("$client" version --format '{{.Client.Version}}' 2>/dev/null | cut -d. -f1) || true
    if [[ -n "$major" && "$major" -lt 23 ]]; then DOCKER=$client; break; fi
  done
fi
export DOCKER DOCKER_BUILDKIT=1

if ! "$DOCKER" info >/dev/null 2>&1; then
  say "starting dockerd ${DOCKERD_ARGS:-}"
  # shellcheck disable=SC2086  # DOCKERD_ARGS is a list of options
  nohup dockerd ${DOCKERD_ARGS:-} >"$log/dockerd.log" 2>&1 &
  for _ in $(seq 60); do "$DOCKER" info >/dev/null 2>&1 && break; sleep 1; done
  "$DOCKER" info >/dev/null 2>&1 || { tail -20 "$log/dockerd.log"; exit 1; }
fi
driver=$("$DOCKER" info --format '{{.Driver}}')
root=$("$DOCKER" info --format '{{.DockerRootDir}}')
free_gb=$(($(df -Pk "$root" | awk 'NR == 2 {print $4}') / 1048576))
say "Docker's storage driver: $driver; $free_gb GB free in $root"
if [[ "$driver" == vfs ]]; then
  echo "warning: the vfs storage driver copies every layer: the AI image needs far more disk" >&2
fi
if ((free_gb < 40)); then
  echo "error: $free_gb GB free in $root; the images and containers need about 40 GB" >&2
  exit 1
fi

images="$log/images.env"
if timeout 60 "$DOCKER" pull -q python:3.11-slim-bookworm >/dev/null 2>&1; then
  say "the usual base images can be pulled"
  : >"$images"
else
  say "no image registry: building the base images locally (scripts/offline-images.sh)"
  bash scripts/offline-images.sh "$images"
fi
say "base images ready"

exec "${PYTHON:-.venv/bin/python}" scripts/compose_smoke.py --images "$images" --log "$log" "$@"
