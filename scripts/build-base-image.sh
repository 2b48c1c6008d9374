#!/usr/bin/env bash
# Build a local stand-in for docker.io/library/python:3.11-slim-bookworm from Debian
# bookworm packages and tag it with that name, so `podman build --pull=never` works
# on a machine that reaches no container registry. The Dockerfiles stay standard:
# on a machine with a registry the real image is pulled instead.
# Needs root, debootstrap and podman. Idempotent: does nothing when the image exists.
set -euo pipefail
IMAGE=${STANDIN_IMAGE:-docker.io/library/python:3.11-slim-bookworm}
# the mirror this machine's apt already uses (DEBIAN_MIRROR overrides; empty: debootstrap's default)
MIRROR=${DEBIAN_MIRROR:-$( (grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources; grep -hs '^deb ' /etc/apt/sources.list; true) \
  | awk '{for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) {print $i; exit}}' | head -1)}
: "${CONTAINERS_CONF:=$(cd "$(dirname "$0")/.." && pwd)/images/containers.conf}"
export CONTAINERS_CONF
if podman image exists "$IMAGE"; then echo "$IMAGE exists"; exit 0; fi
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
R=$work/rootfs
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
  bookworm "$R" ${MIRROR:+"$MIRROR"} > "$work/debootstrap.log" 2>&1 || { tail -50 "$work/debootstrap.log"; exit 1; }
cp /etc/ssl/certs/ca-certificates.crt "$R/etc/ssl/certs/ca-certificates.crt"  # trust what the host trusts
rm -f "$R"/usr/lib/python3.11/EXTERNALLY-MANAGED
ln -sf python3 "$R/usr/bin/python"; ln -sf pip3 "$R/usr/bin/pip"
rm -rf "$R"/var/cache/apt/archives/*.deb "$R"/var/lib/apt/lists/*
tar -C "$R" -c . | podman import \
  --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' - "$IMAGE"
echo "built stand-in $IMAGE"
