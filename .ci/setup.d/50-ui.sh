#!/usr/bin/env bash
# Debian's chromium for the control room's browser test (Playwright drives it through
# executable_path=/usr/bin/chromium; `playwright install` cannot download browsers here).
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  echo "chromium present: $(/usr/bin/chromium --version 2>/dev/null || echo unknown version)"
  exit 0
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
/usr/bin/chromium --version
