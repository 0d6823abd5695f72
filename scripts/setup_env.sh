#!/usr/bin/env bash
# Creates (or refreshes) the project's virtual environment in .venv.
#
# torch goes in first and on its own: asked for as a bare dependency on a machine
# without CUDA, pip would resolve a multi-GB CUDA build. With torch==2.13.0 already
# installed, the project's `torch>=2.4` requirement is satisfied and pip adds nothing.
# Set DOTSEG_TORCH_PIP_ARGS to point pip at another torch build (e.g. a CPU index).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
EXTRAS=${DOTSEG_EXTRAS:-dev}
# The dashboard test drives Debian's chromium (Playwright's own browser download cannot be used
# offline): install it when missing, if we may (root with apt-get); else the test skips and says how.
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] installing Debian's chromium (for tests/test_dashboard.py)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null \
      || echo "[setup] note: could not install chromium; tests/test_dashboard.py will skip"
  else
    echo "[setup] note: no chromium on PATH (not root or no apt-get); tests/test_dashboard.py will skip." \
      "Install it with: sudo apt-get install chromium"
  fi
fi
stamp="$VENV/.dotseg-installed"
want="$(cat pyproject.toml scripts/setup_env.sh | sha256sum | cut -c1-16)-$EXTRAS"

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV with $($PY --version)"
  "$PY" -m venv "$VENV"
fi
# Hide pip's notes about unreachable local index folders some machines configure; keep real errors.
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "[setup] CUDA GPU found: installing torch==2.13.0 (CUDA build)"
  else
    echo "[setup] no CUDA GPU: installing torch==2.13.0 before anything else (CPU build where available)"
  fi
  # shellcheck disable=SC2086
  pip install -q ${DOTSEG_TORCH_PIP_ARGS:-} "torch==2.13.0"
fi
echo "[setup] installing dotseg[$EXTRAS] (editable)"
pip install -q -e ".[$EXTRAS]"
echo "$want" > "$stamp"
echo "[setup] ready: $VENV"
