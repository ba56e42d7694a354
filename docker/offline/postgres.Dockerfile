# PostgreSQL 15 from Debian's packages, for machines that reach no image registry
# (scripts/offline-images.sh). postgres-entrypoint.sh does what the official image's
# entrypoint does with POSTGRES_USER, POSTGRES_DB and POSTGRES_PASSWORD on first start.
ARG BASE_IMAGE=modomo-offline/debian:bookworm
FROM ${BASE_IMAGE} AS postgres
# The package would create a cluster in /var/lib/postgresql/15/main: the entrypoint makes
# its own in the volume instead.
# hadolint ignore=DL3008
RUN mkdir -p /etc/postgresql-common/createcluster.d \
    && echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.d/modomo.conf \
    && apt-get update \
    && apt-get install -y --no-install-recommends postgresql-15 \
    && rm -rf /var/lib/apt/lists/*
COPY postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint.sh
ENV PATH=/usr/lib/postgresql/15/bin:$PATH \
    PGDATA=/var/lib/postgresql/data
EXPOSE 5432
STOPSIGNAL SIGINT
ENTRYPOINT ["/bin/sh", "/usr/local/bin/postgres-entrypoint.sh"]
