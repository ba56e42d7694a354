# One image recipe for every Modomo service (the README's Deployment section).
#
#   docker build -t modomo .                              API, general and scraping workers,
#                                                         beat, Flower, migrations (no torch)
#   docker build -t modomo-ai --build-arg EXTRAS=ai .     AI workers (torch, transformers,
#                                                         ultralytics)
#   EXTRAS is a comma-separated list of pyproject.toml extras ("ai,s3", "s3", ...).
#
# GPU approach: one slim Python base for both images. The torch wheels that uv.lock pins
# from PyPI bring their own CUDA runtime, cuDNN and NCCL as nvidia-* wheels, so the AI image
# needs no nvidia/cuda base: on the host, the NVIDIA Container Toolkit mounts the driver
# (libcuda, nvidia-smi) into the container at start. The host driver must support the CUDA
# version those wheels were built for (CUDA 13: driver 580 or newer).
#
# BuildKit is required (cache mounts): Docker Engine 23+ and `docker compose` use it, and
# DOCKER_BUILDKIT=1 turns it on in Docker 20.10. No `# syntax=` line, so that BuildKit's own
# Dockerfile frontend builds it, with no image to pull.
#
# A host that reaches no image registry passes locally built base and uv images:
# scripts/offline-images.sh makes them (Debian by debootstrap, uv from its PyPI wheel), and
# scripts/compose-smoke.sh builds with them.

ARG BASE_IMAGE=python:3.11-slim-bookworm
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.8

# --- uv: the pinned uv binaries (UV_VERSION in the Makefile) ------------------------------
FROM ${UV_IMAGE} AS uv

# --- builder: resolve nothing, install exactly uv.lock into /app/.venv ------------------
FROM ${BASE_IMAGE} AS builder

COPY --from=uv /uv /uvx /bin/

# Extras of pyproject.toml to install, comma-separated: "" for the API and CPU workers, "ai"
# for AI workers (torch, transformers, ultralytics); e.g. "ai,s3" adds more.
ARG EXTRAS=""

ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=0 \
    UV_PROJECT_ENVIRONMENT=/app/.venv

WORKDIR /app
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Dependencies first, without the project: this layer is rebuilt only when the lock changes.
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    read -r -a extras <<<"${EXTRAS//,/ }" \
    && uv sync --locked --no-dev --no-install-project --no-editable "${extras[@]/#/--extra=}"

# Then the project itself, installed into the venv as a regular (non-editable) package.
COPY pyproject.toml uv.lock README.md ./
COPY src ./src
RUN --mount=type=cache,target=/root/.cache/uv \
    read -r -a extras <<<"${EXTRAS//,/ }" \
    && uv sync --locked --no-dev --no-editable "${extras[@]/#/--extra=}"

# --- runtime: the base image, two shared libraries, the venv ---------------------------
FROM ${BASE_IMAGE} AS runtime

ARG EXTRAS=""
LABEL org.opencontainers.image.title="modomo" \
      org.opencontainers.image.description="Interior photographs to ML training datasets" \
      org.opencontainers.image.licenses="MIT" \
      io.modomo.extras="${EXTRAS}"

# opencv-python (a core dependency) loads libGL and GLib when it is imported. Debian's
# security updates are wanted here, so the versions are left to the distribution.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

# A fixed, unprivileged uid/gid (10001) that owns only the data, model and lock folders;
# named volumes mounted there start out owned by it.
RUN groupadd --system --gid 10001 modomo \
    && useradd --system --uid 10001 --gid modomo --create-home --home-dir /home/modomo \
       --shell /usr/sbin/nologin modomo \
    && mkdir -p /data /models /gpu-locks \
    && chown modomo:modomo /data /models /gpu-locks

# The original scraper's entry points (`celery -A celery_app`, `uvicorn main_refactored:app`)
# and its imports (`from tasks.color_tasks import …`); flowerconfig.py gives
# `celery -A celery_app flower` basic auth on loopback, as `modomo flower`. Before the venv,
# which holds the project and so changes more often.
COPY celery_app.py main_refactored.py flowerconfig.py /app/
COPY tasks /app/tasks
COPY models /app/models
# The venv stays owned by root: the service cannot modify its own code.
COPY --from=builder /app/.venv /app/.venv

ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MODOMO_DATA_DIR=/data \
    MODOMO_MODEL_DIR=/models \
    HF_HOME=/models/huggingface \
    YOLO_CONFIG_DIR=/home/modomo/.config/Ultralytics

WORKDIR /app
USER 10001:10001

# No ENTRYPOINT: the compose services run `modomo <command>` (and `docker compose run
# SERVICE modomo ...` works as written). Health checks live in docker-compose.celery.yml.
CMD ["modomo", "--help"]
