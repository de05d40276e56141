#!/usr/bin/env bash
# Runs every test of veltix-rs: unit, property, vector, loopback integration, interop with the
# real Python Veltix 3.3.0 and 1.6.9 (installed into target/ by scripts/setup-python.sh), and a
# short bounded fuzz run, and the veltix_rs Python package's checks and pytest suite
# (scripts/test-python.sh). The TLS interop tests go through stunnel, installed by
# scripts/setup-stunnel.sh. The cluster tests run against a real redis-server (installed by
# scripts/install-redis.sh). This is the command README.md and .ci/run use.
set -euo pipefail
cd "$(dirname "$0")/.."
# No module cycles in crates/veltix/src (issue #14): prints the graph, fails on a cycle.
python3 scripts/modgraph.py
bash scripts/setup-python.sh
bash scripts/setup-stunnel.sh
# The cluster tests (crates/veltix/tests/cluster.rs, crates/veltix-cli/tests/cluster.rs) need it.
bash scripts/install-redis.sh
cargo test --workspace --all-targets --release
cargo test --workspace --doc --release
bash scripts/test-python.sh
if [ -x scripts/fuzz.sh ]; then
  bash scripts/fuzz.sh --ci
fi
