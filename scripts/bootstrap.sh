#!/usr/bin/env bash
# Create ./.venv (or $VENV) and install the toolkit into it, fast on machines that carry a local torch.
#   scripts/bootstrap.sh [EXTRAS]      e.g. scripts/bootstrap.sh test
# An existing torch (in the venv or the system site-packages) is kept. Otherwise TORCH_SPEC is
# installed: by default torch==2.13.0 when a local wheel of it is at hand (seconds), else plain
# "torch" from the package index. Set TORCH_SPEC to choose, e.g. TORCH_SPEC="torch==2.5.1".
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
EXTRAS="${1:-}"
PIP_QUIET="${PIP_QUIET:--q}"

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv --system-site-packages "$VENV"
fi
PY="$VENV/bin/python"

if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  spec="${TORCH_SPEC:-}"
  if [ -z "$spec" ]; then
    if "$PY" -m pip install --dry-run --no-index --no-deps -q torch==2.13.0 >/dev/null 2>&1; then
      spec="torch==2.13.0"
    else
      spec="torch"
    fi
  fi
  echo "bootstrap: installing $spec"
  "$PY" -m pip install $PIP_QUIET "$spec" 2>&1 | grep -v "^WARNING: Location" || true
  "$PY" -c "import torch" || { echo "bootstrap: torch failed to install" >&2; exit 1; }
fi

target="."
[ -n "$EXTRAS" ] && target=".[$EXTRAS]"
stamp="$VENV/.mtlmeta-installed-${EXTRAS:-core}"
if [ ! -f "$stamp" ] || [ setup.py -nt "$stamp" ]; then
  echo "bootstrap: installing mtlmeta $target"
  "$PY" -m pip install $PIP_QUIET -e "$target" 2>&1 | grep -v "^WARNING: Location" || true
  "$PY" -c "import mtl, meta" || { echo "bootstrap: mtlmeta failed to install" >&2; exit 1; }
  touch "$stamp"
fi
