#!/usr/bin/env bash
# System packages only the full test suite needs (`make test`), installed when missing.
#
# The dashboard test drives Debian's chromium (Playwright's own browser download cannot be used
# offline): install it if we may (root with apt-get); else that test skips and says how.
set -euo pipefail
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[test-deps] installing Debian's chromium (for tests/test_dashboard.py)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null \
      || echo "[test-deps] note: could not install chromium; tests/test_dashboard.py will skip"
  else
    echo "[test-deps] note: no chromium on PATH (not root or no apt-get); tests/test_dashboard.py will skip." \
      "Install it with: sudo apt-get install chromium"
  fi
fi
