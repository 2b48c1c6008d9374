#!/usr/bin/env bash
# Serving: wrk (load generator of `make bench-serve`) and Debian's prometheus (the serving tests
# start a real Prometheus that scrapes the API). Idempotent: installs only what is missing.
set -euo pipefail
need=()
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# The Debian package may start its own service; the tests run their own instances.
if command -v systemctl >/dev/null 2>&1; then systemctl stop prometheus 2>/dev/null || true; fi
echo "wrk: $(command -v wrk); prometheus: $(prometheus --version 2>&1 | head -1)"
