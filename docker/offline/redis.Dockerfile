# Redis from Debian's package, for machines that reach no image registry
# (scripts/offline-images.sh); the Compose file's command and health check work unchanged.
ARG BASE_IMAGE=modomo-offline/debian:bookworm
FROM ${BASE_IMAGE} AS redis
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends redis-server \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /data
WORKDIR /data
EXPOSE 6379
CMD ["redis-server"]
