#!/usr/bin/env bash
# A/B of the reply passes (a4cf11b) against f01e123: alternating binaries, 4 rounds, reqrep
# 64 in flight on one connection, 1,000,000 requests x 3 runs per invocation, both runtimes.
# A = target/bench-ab/base-target/release/veltix (built by scripts/bench-ab.sh f01e123),
# B = target/release/veltix at a4cf11b. Writes A|B-<api>-<round>.json next to this script.
set -euo pipefail
cd "$(dirname "$0")/../../.."
out=docs/bench/reply-passes
for i in 1 2 3 4; do
  for api in async-current-thread async; do
    for b in A B; do
      bin=target/release/veltix
      [ "$b" = A ] && bin=target/bench-ab/base-target/release/veltix
      "$bin" bench reqrep --count 1000000 --in-flight 64 --runs 3 --reqrep-api "$api" \
        --json "$out/$b-$api-$i.json" >/dev/null 2>&1
    done
  done
done
python3 - "$out" <<'PY'
import json, glob, statistics, sys
out = sys.argv[1]
for api in ["async-current-thread", "async"]:
    row = {}
    for b in "AB":
        v = [json.load(open(f))["scenarios"][0]["results"]["throughput"]
             for f in sorted(glob.glob(f"{out}/{b}-{api}-[0-9].json"))]
        row[b] = v
    a, b = statistics.median(row["A"]), statistics.median(row["B"])
    print(f"{api:22} A {[round(x) for x in row['A']]} median {a:.0f}")
    print(f"{'':22} B {[round(x) for x in row['B']]} median {b:.0f}  B/A {b/a:.2f}")
PY
