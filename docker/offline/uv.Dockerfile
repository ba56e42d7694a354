# What ghcr.io/astral-sh/uv holds (/uv and /uvx), from uv's wheel on PyPI (put in the build
# context by scripts/offline-images.sh), for machines that reach no image registry.
FROM scratch AS uv
COPY uv uvx /
