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
EXTRAS=${DOTSEG_EXTRAS:-dev}  # `make run` asks for fast: only what running needs
# One stamp per extras set: `make run` needs dotseg[fast], the test targets dotseg[dev] (which
# includes fast), so a venv made for the tests also serves `make run`.
digest="$(cat pyproject.toml scripts/setup_env.sh | sha256sum | cut -c1-16)"
stamp="$VENV/.dotseg-installed-$EXTRAS"
want="$digest-$EXTRAS"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
if [ "$EXTRAS" = fast ] && [ -f "$VENV/.dotseg-installed-dev" ] && [ "$(cat "$VENV/.dotseg-installed-dev")" = "$digest-dev" ]; then
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
