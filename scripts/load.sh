#!/usr/bin/env bash
# Full load run (CI runs a 1,000-connection version of it): CONNECTIONS concurrent connections
# (default 10,000) held on one server, MESSAGES sequence-numbered messages per round (default
# 1,000,000), checked on both ends for zero loss, zero duplication and in-order handling;
# several rounds on the same server to show whether its memory accumulates.
#
# Usage: scripts/load.sh [CONNECTIONS] [MESSAGES]
#   VELTIX_LOAD_ROUNDS    rounds of fresh connections on the same server (default 3)
#   VELTIX_LOAD_SEPARATE  1 (default): the server runs in its own process (its RSS is the
#                         server's alone; each process needs one fd per connection);
#                         0: server and clients in one process (two fds per connection)
#
# The test is `full_load` in crates/veltix/tests/load.rs (ignored by default). It raises
# RLIMIT_NOFILE itself; if the hard limit is too low it uses fewer connections and says so.
set -euo pipefail
cd "$(dirname "$0")/.."

export VELTIX_LOAD_CONNECTIONS=${1:-10000}
export VELTIX_LOAD_MESSAGES=${2:-1000000}
export VELTIX_LOAD_ROUNDS=${VELTIX_LOAD_ROUNDS:-3}
export VELTIX_LOAD_SEPARATE=${VELTIX_LOAD_SEPARATE:-1}
[[ "$VELTIX_LOAD_CONNECTIONS" =~ ^[0-9]+$ && "$VELTIX_LOAD_MESSAGES" =~ ^[0-9]+$ ]] || {
    sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
    exit 2
}

echo "==> load: ${VELTIX_LOAD_CONNECTIONS} connections, ${VELTIX_LOAD_MESSAGES} messages per round, ${VELTIX_LOAD_ROUNDS} rounds"
echo "==> RLIMIT_NOFILE: soft $(ulimit -Sn), hard $(ulimit -Hn); ephemeral ports $(tr '\t' '-' </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo '?')"
cargo test --release -p veltix --test load -- --ignored --exact full_load --nocapture --test-threads=1
