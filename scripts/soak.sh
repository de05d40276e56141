#!/usr/bin/env bash
# Soak: `veltix serve` (echo mode) under a churn of clients for MINUTES (default 30), sampling
# the server's RSS and open file descriptors; fails on sustained growth. CI never runs it.
#
# Usage: scripts/soak.sh [MINUTES]
#   SOAK_SAMPLE_SECS  sampling period (default 5)
#   SOAK_WORKERS      client threads churning at once (default 8)
#
# The churn is the ignored test `soak_churn` in crates/veltix-cli/tests/faults.rs: each worker
# loops connect -> 1..200 verified echoes (send_and_wait and pipelined, up to 512 B) ->
# sometimes a ping -> disconnect or drop; every tenth round is a hostile peer instead (garbage
# handshake, half a frame then EOF, silent connect-and-close).
#
# Verdict (samples during the churn; the first 20 % are warm-up and ignored):
#   RSS:  median of the last third <= median of the first third x 1.25 + 16 MiB
#   fds:  median of the last third <= median of the first third + 32
#   idle: after the churn, the fd count returns to its idle value (+4) within 30 s
# Samples go to target/soak/samples.csv, the server's log to target/soak/serve.err.
set -euo pipefail
cd "$(dirname "$0")/.."

MINUTES=${1:-30}
[[ "$MINUTES" =~ ^[0-9]+$ && "$MINUTES" -gt 0 ]] || { echo "usage: $0 [MINUTES]" >&2; exit 2; }
SAMPLE=${SOAK_SAMPLE_SECS:-5}
WORKERS=${SOAK_WORKERS:-8}
SECS=$((MINUTES * 60))
TARGET=${CARGO_TARGET_DIR:-target}
OUT=target/soak
mkdir -p "$OUT"

echo "==> building (release)"
cargo build --release -p veltix-cli --bins --quiet
cargo test --release -p veltix-cli --test faults --no-run --quiet 2>/dev/null || \
    cargo test --release -p veltix-cli --test faults --no-run

SERVER_PID=""
CHURN_PID=""
cleanup() {
    [[ -n "$CHURN_PID" ]] && kill "$CHURN_PID" 2>/dev/null || true
    [[ -n "$SERVER_PID" ]] && kill "$SERVER_PID" 2>/dev/null || true
}
trap cleanup EXIT

"$TARGET/release/veltix" serve --port 0 --mode echo >"$OUT/serve.out" 2>"$OUT/serve.err" &
SERVER_PID=$!
for _ in $(seq 1 100); do
    grep -q '^listening on ' "$OUT/serve.out" 2>/dev/null && break
    sleep 0.1
done
ADDR=$(sed -n 's/^listening on //p' "$OUT/serve.out")
[[ -n "$ADDR" ]] || { echo "soak: veltix serve did not start" >&2; cat "$OUT/serve.err" >&2; exit 1; }

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$SERVER_PID/status"; }
fds() { ls "/proc/$SERVER_PID/fd" | wc -l; }
threads() { awk '/^Threads:/ {print $2}' "/proc/$SERVER_PID/status"; }

IDLE_RSS=$(rss_kb)
IDLE_FDS=$(fds)
echo "==> server $ADDR (pid $SERVER_PID): idle RSS ${IDLE_RSS} KiB, ${IDLE_FDS} fds"
echo "==> churning for ${MINUTES} min with ${WORKERS} workers, sampling every ${SAMPLE} s"

VELTIX_SOAK_ADDR=$ADDR VELTIX_SOAK_SECS=$SECS VELTIX_SOAK_WORKERS=$WORKERS \
    cargo test --release -p veltix-cli --test faults --quiet -- --ignored --exact soak_churn \
    --nocapture >"$OUT/churn.out" 2>&1 &
CHURN_PID=$!

echo "t_s,rss_kb,fds,threads" >"$OUT/samples.csv"
T0=$(date +%s)
while kill -0 "$CHURN_PID" 2>/dev/null; do
    kill -0 "$SERVER_PID" 2>/dev/null || { echo "soak: the server died" >&2; exit 1; }
    echo "$(( $(date +%s) - T0 )),$(rss_kb),$(fds),$(threads)" >>"$OUT/samples.csv"
    sleep "$SAMPLE"
done
set +e
wait "$CHURN_PID"
CHURN_STATUS=$?
set -e
CHURN_PID=""
SUMMARY=$(grep -o '@@ soak.*' "$OUT/churn.out" | head -1 || true)

# Idle again: the fds must come back.
IDLE_OK=0
for _ in $(seq 1 300); do
    if [[ $(fds) -le $((IDLE_FDS + 4)) ]]; then IDLE_OK=1; break; fi
    sleep 0.1
done
END_RSS=$(rss_kb)
END_FDS=$(fds)

VERDICT=$(awk -F, -v idle_rss="$IDLE_RSS" '
    function median(a, n,   i, j, t) {
        for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
        return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    NR > 1 { n++; rss[n] = $2; fd[n] = $3; if ($2 > max) max = $2 }
    END {
        w = int(n / 5); m = n - w; k = int(m / 3)
        if (k < 1) { print "FAIL too few samples (" n ")"; exit }
        for (i = 1; i <= k; i++) { r1[i] = rss[w + i]; f1[i] = fd[w + i]; r3[i] = rss[n - k + i]; f3[i] = fd[n - k + i] }
        a = median(r1, k); b = median(r3, k); c = median(f1, k); d = median(f3, k)
        ok = (b <= a * 1.25 + 16384) && (d <= c + 32)
        printf "%s samples=%d rss_first_third_median_kb=%d rss_last_third_median_kb=%d rss_max_kb=%d fds_first_third_median=%d fds_last_third_median=%d\n", ok ? "PASS" : "FAIL", n, a, b, max, c, d
    }' "$OUT/samples.csv")

echo "==> churn: ${SUMMARY:-no summary} (exit $CHURN_STATUS)"
echo "==> samples: $VERDICT"
echo "==> after the churn: RSS ${END_RSS} KiB, ${END_FDS} fds (idle before: ${IDLE_RSS} KiB, ${IDLE_FDS} fds)"
echo "==> server warnings logged: $(grep -c WARN "$OUT/serve.err" || true)"

status=0
[[ $CHURN_STATUS -eq 0 ]] || { echo "soak: FAILED: the churn reported errors (see $OUT/churn.out)" >&2; status=1; }
[[ $VERDICT == PASS* ]] || { echo "soak: FAILED: sustained growth" >&2; status=1; }
[[ $IDLE_OK -eq 1 ]] || { echo "soak: FAILED: fds did not return to idle" >&2; status=1; }
kill -TERM "$SERVER_PID"
wait "$SERVER_PID" || { echo "soak: FAILED: veltix serve did not exit cleanly" >&2; status=1; }
SERVER_PID=""
[[ $status -eq 0 ]] && echo "soak: OK"
exit $status
