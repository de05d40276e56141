#!/usr/bin/env bash
# Creates the Python peers' virtualenvs used by the interop tests:
#
#   target/py/veltix-3.3.0/bin/python   (veltix==3.3.0, psutil)
#   target/py/veltix-1.6.9/bin/python   (veltix==1.6.9, psutil)
#
# Idempotent and fast when already installed (it only checks that each venv
# imports the right veltix version). Safe to run concurrently (flock); a venv
# is only trusted once it carries the .complete marker written at the very
# end, so an interrupted run is redone instead of leaving a broken venv.
#
# Needs Python >= 3.11 (veltix 3.3.0 requires it) with the venv module, and
# PyPI access. Override the interpreter with PYTHON=/path/to/python3.x.
set -euo pipefail
cd "$(dirname "$0")/.."

ROOT=target/py
mkdir -p "$ROOT"

pick_python() {
  if [ -n "${PYTHON:-}" ]; then
    echo "$PYTHON"
    return
  fi
  local c
  for c in python3.11 python3.12 python3.13 python3.14 python3; do
    if command -v "$c" >/dev/null 2>&1 &&
      "$c" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
      echo "$c"
      return
    fi
  done
  echo "setup-python.sh: no Python >= 3.11 found (set PYTHON=...)" >&2
  exit 1
}

CHECK='import sys, importlib.metadata as md, veltix; sys.exit(md.version("veltix") != sys.argv[1])'

# imports DIR VERSION: the venv at DIR imports veltix VERSION.
imports() {
  [ -x "$1/bin/python" ] && "$1/bin/python" -c "$CHECK" "$2" >/dev/null 2>&1
}

# ok DIR VERSION: a finished venv at DIR that imports veltix VERSION.
ok() {
  [ -f "$1/.complete" ] && imports "$1" "$2"
}

mk() {
  local version=$1
  shift
  local dir="$ROOT/veltix-$version"
  ok "$dir" "$version" && return 0

  local py
  py=$(pick_python)
  echo "setup-python.sh: creating $dir with $py" >&2
  rm -rf "$dir"
  if ! "$py" -m venv "$dir" 2>/dev/null; then
    # Some distributions ship python without ensurepip; fall back to a venv
    # that borrows the system pip.
    rm -rf "$dir"
    "$py" -m venv --without-pip --system-site-packages "$dir"
  fi
  "$dir/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    "veltix==$version" "$@"
  imports "$dir" "$version" || {
    echo "setup-python.sh: $dir does not import veltix $version" >&2
    exit 1
  }
  touch "$dir/.complete"
}

# Serialise concurrent runs (several test binaries may call this at once).
exec 9>"$ROOT/.setup.lock"
if command -v flock >/dev/null 2>&1; then
  flock 9
fi

mk 3.3.0 psutil
mk 1.6.9 psutil
