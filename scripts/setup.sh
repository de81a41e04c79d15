#!/usr/bin/env bash
# Create .venv (if absent) and install genforge into it, with its test extra.
#
# torch is installed first and only when the venv has none, so a GPU user can
# bring their own build:  GENFORGE_TORCH="torch==2.5.1 --index-url https://download.pytorch.org/whl/cu121"
# Without GENFORGE_TORCH: a machine with nvidia-smi gets PyPI's default (CUDA)
# torch; any other machine gets a CPU-only build (never the CUDA wheels).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${GENFORGE_VENV:-.venv}

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@"; }

if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  if [ -n "${GENFORGE_TORCH:-}" ]; then
    # shellcheck disable=SC2086  # the variable holds a requirement plus pip options
    pip install $GENFORGE_TORCH
  elif command -v nvidia-smi >/dev/null 2>&1; then
    pip install "torch>=2.1"
  else
    pip install "torch==2.13.0+cpu" 2>/dev/null \
      || pip install torch --index-url https://download.pytorch.org/whl/cpu
  fi
fi
pip install -e ".[test]"
"$VENV/bin/python" -c "import torch, genforge; print(f'genforge {genforge.__version__} with torch {torch.__version__} in $VENV')"
