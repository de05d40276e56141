#!/usr/bin/env bash
# Runs every test of veltix-rs: unit, property, vector, loopback integration, interop with the
# real Python Veltix 3.3.0 and 1.6.9 (installed into target/ by scripts/setup-python.sh), cluster
# tests against a real redis-server (installed by scripts/install-redis.sh), and a
# short bounded fuzz run. This is the command README.md and .ci/run use.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-python.sh
# The cluster tests (crates/veltix/tests/cluster.rs) run against a real redis-server.
bash scripts/install-redis.sh
cargo test --workspace --all-targets --release
cargo test --workspace --doc --release
if [ -x scripts/fuzz.sh ]; then
  bash scripts/fuzz.sh --ci
fi
