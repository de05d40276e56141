#!/usr/bin/env bash
# Side-by-side benchmark of issue 13: the same Python code (crates/veltix-py/bench/side_by_side.py)
# on Python Veltix 3.3.0 and on veltix_rs, plus pyzmq, in one invocation. Each side at its best:
# Python Veltix pinned to one CPU with its THREADING core (its best on 2 cores), veltix_rs on all
# CPUs with its default (RUST) core, pyzmq both ways.
# Writes docs/bench/python-side-by-side.json (or $1) and prints a table.
#
#   bash scripts/bench-python.sh [OUT.json] [extra side_by_side.py args, e.g. --runs 5]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-docs/bench/python-side-by-side.json}
shift || true

bash scripts/setup-python.sh
bash scripts/setup-python-pkg.sh >/dev/null

B=crates/veltix-py/bench/side_by_side.py
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
load() { cut -d' ' -f1-3 /proc/loadavg; }

run() { # NAME PIN(yes|no) PYTHON IMPL
  local name=$1 pin=$2 py=$3 impl=$4
  echo "== $name (load $(load))" >&2
  if [ "$pin" = yes ]; then
    taskset -c 0 "$py" "$B" --impl "$impl" --json "$TMP/$name.json" "${@:5}" >/dev/null
  else
    "$py" "$B" --impl "$impl" --json "$TMP/$name.json" "${@:5}" >/dev/null
  fi
}

EXTRA=("$@")
# Python Veltix at its best on 2 cores: pinned to one CPU, THREADING core (see BENCHMARKS.md).
run veltix-3.3.0-pinned yes target/py/veltix-3.3.0/bin/python veltix --socket-core threading "${EXTRA[@]}"
run veltix_rs no target/py/veltix-rs/bin/python veltix_rs "${EXTRA[@]}"
run pyzmq no target/py/veltix-rs/bin/python zmq "${EXTRA[@]}"
run pyzmq-pinned yes target/py/veltix-rs/bin/python zmq "${EXTRA[@]}"

mkdir -p "$(dirname "$OUT")"
target/py/veltix-rs/bin/python - "$TMP" "$OUT" "$(git rev-parse --short HEAD)" "$(load)" <<'PY'
import json, os, sys, platform, datetime
tmp, out, commit, load = sys.argv[1:5]
names = ["veltix-3.3.0-pinned", "veltix_rs", "pyzmq", "pyzmq-pinned"]
res = {n: json.load(open(os.path.join(tmp, n + ".json"))) for n in names}
doc = {"commit": commit, "date_utc": datetime.datetime.utcnow().isoformat(timespec="seconds"),
       "load_after": load, "cpus": os.cpu_count(), "python": platform.python_version(),
       "command": "bash scripts/bench-python.sh", "results": res}
json.dump(doc, open(out, "w"), indent=1)
py = res["veltix-3.3.0-pinned"]["summary"]
rows = [("burst_msgs_per_s", "burst to a Python handler, msg/s", True),
        ("stress_msgs_per_s", "stress (100 clients x 1000), msg/s", True),
        ("ping_p50_us", "ping p50, us", False), ("ping_p99_us", "ping p99, us", False),
        ("reqrep_p50_us", "request/response p50, us", False), ("reqrep_p99_us", "request/response p99, us", False),
        ("memory_per_client_bytes", "memory per connection, bytes", False)]
print("| metric | " + " | ".join(names) + " | veltix_rs vs 3.3.0 |")
print("|---|" + "---|" * (len(names) + 1))
for key, label, higher in rows:
    vals = [res[n]["summary"][key] for n in names]
    a, b = vals[1], py[key]
    ratio = "" if a is None or b is None else (f"{a / b:.1f}x" if higher else f"{a / b:.2f}x")
    print(f"| {label} | " + " | ".join("n/a" if v is None else f"{v:,.0f}" if v >= 100 else f"{v:.1f}" for v in vals) + f" | {ratio} |")
PY
