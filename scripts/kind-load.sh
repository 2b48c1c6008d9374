#!/usr/bin/env bash
# Load local Docker images into the kind cluster through an archive: `docker save` then
# `kind load image-archive`. (`kind load docker-image` fails when Docker uses the containerd
# image store.) Images: the arguments, else $SKAFFOLD_IMAGE (skaffold's build hook sets it).
set -euo pipefail
CLUSTER=${KIND_CLUSTER:-rakuten}
if [ "$#" -eq 0 ]; then
  set -- "${SKAFFOLD_IMAGE:?give image references, or run as a skaffold build hook}"
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
docker save -o "$tmp/images.tar" "$@"
kind load image-archive --name "$CLUSTER" "$tmp/images.tar"
