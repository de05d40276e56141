#!/usr/bin/env bash
# Creates target/py/veltix-rs: a virtualenv with maturin, pytest and pyzmq (from PyPI) and the
# veltix_rs package built from crates/veltix-py (`pip install ./crates/veltix-py`, the command a
# user runs). Needs Python >= 3.11 with venv/pip, a Rust toolchain, and PyPI access.
#
# Idempotent: the tools are installed once (marker .tools-complete); the package is rebuilt on
# every run (cargo's incremental build in target/ makes that quick when nothing changed).
# Serialised with flock. Override the interpreter with PYTHON=/path/to/python3.x.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=target/py/veltix-rs
mkdir -p target/py
exec 8>target/py/.setup-pkg.lock
if command -v flock >/dev/null 2>&1; then
  flock 8
fi

pick_python() {
  if [ -n "${PYTHON:-}" ]; then
    echo "$PYTHON"
    return
  fi
  local c
  for c in python3.11 python3.12 python3.13 python3.14 python3; do
    if command -v "$c" >/dev/null 2>&1 &&
      "$c" -c 'import sys, venv; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
      echo "$c"
      return
    fi
  done
  echo "setup-python-pkg.sh: no Python >= 3.11 with venv found (set PYTHON=...)" >&2
  exit 1
}

pip_in() {
  "$VENV/bin/python" -m pip --disable-pip-version-check --no-input "$@"
}

if [ ! -f "$VENV/.tools-complete" ] || ! "$VENV/bin/python" -c 'import maturin, pytest, zmq' 2>/dev/null; then
  py=$(pick_python)
  echo "setup-python-pkg.sh: creating $VENV with $py" >&2
  rm -rf "$VENV"
  if ! "$py" -m venv "$VENV" 2>/dev/null; then
    # Some distributions ship python without ensurepip: borrow the system pip.
    rm -rf "$VENV"
    "$py" -m venv --without-pip --system-site-packages "$VENV"
  fi
  pip_in install --quiet --upgrade pip
  pip_in install --quiet "maturin>=1.7,<2" "pytest>=8" "pyzmq>=26" psutil
  touch "$VENV/.tools-complete"
fi

# The package, exactly as a user installs it. The build shares target/ with the workspace.
export CARGO_TARGET_DIR="$PWD/target"
export PATH="$PWD/$VENV/bin:$PATH"
pip_in install --quiet --no-build-isolation --force-reinstall --no-deps ./crates/veltix-py
"$VENV/bin/python" -c 'import veltix_rs, veltix_rs._native; print("veltix_rs", veltix_rs.__version__, "installed in", "'"$VENV"'")'
