#!/usr/bin/env bash
# Creates the Python peers' virtualenvs under target/py (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
mk() {
  local dir=$1; shift
  if [ ! -x "$dir/bin/python" ] || ! "$dir/bin/python" -c "import veltix" 2>/dev/null; then
    rm -rf "$dir"
    "$PY" -m venv "$dir"
    "$dir/bin/python" -m pip install --quiet --disable-pip-version-check "$@"
  fi
}
mk target/py/veltix-3.3.0 "veltix==3.3.0" psutil
mk target/py/veltix-1.6.9 "veltix==1.6.9" psutil
