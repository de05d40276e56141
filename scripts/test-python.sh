#!/usr/bin/env bash
# Tests the veltix_rs Python package (crates/veltix-py): rustfmt and clippy of the extension
# crate (it is not a workspace member, so the workspace-wide checks do not cover it), then the
# pytest suite in the package's venv (scripts/setup-python-pkg.sh), including interop with the
# real Python Veltix 3.3.0 and 1.6.9 (scripts/setup-python.sh). Extra arguments go to pytest.
# A missing tool fails the run; nothing is skipped; "no tests collected" (exit 5) is a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup-python.sh
bash scripts/setup-python-pkg.sh

export CARGO_TARGET_DIR="$PWD/target"
cargo fmt --manifest-path crates/veltix-py/Cargo.toml --check
cargo clippy --release --manifest-path crates/veltix-py/Cargo.toml --all-targets -- -D warnings

set +e
target/py/veltix-rs/bin/python -m pytest crates/veltix-py/tests -p no:cacheprovider -q -rfE "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "test-python.sh: pytest collected no tests" >&2
  exit 1
fi
exit "$rc"
