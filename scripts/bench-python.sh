#!/usr/bin/env bash
# Side-by-side benchmark of issue 13: the same Python code (crates/veltix-py/bench/side_by_side.py)
# on Python Veltix 3.3.0 and on veltix_rs, plus pyzmq, in one invocation. Each side at its best:
# Python Veltix pinned to one CPU with its THREADING core (its best on 2 cores); veltix_rs with its
# default (RUST) core both on all CPUs and pinned to one (pinned is its best on 2 cores); pyzmq
# both ways. The table gives the ratio to 3.3.0 of both veltix_rs runs.
# Writes docs/bench/python-side-by-side.json (or $1) and prints a table.
#
# Memory per connected client is measured in FRESH processes (side_by_side.py --only memory:
# a warm-up of one server + one client, then 200 clients, each connected and used for one round
# trip), MEM_RUNS (default 3) per impl, alternating between impls, with the same pinning as that
# impl's other scenarios; the median goes to summary.memory_per_client_bytes, the raw runs to
# results.<impl>.memory. Measured after burst/stress/latency in the same process it would be
# hidden by the grown heap and the already running handler pool (issue 13).
#
#   bash scripts/bench-python.sh [OUT.json] [extra side_by_side.py args, e.g. --runs 5]
#   bash scripts/bench-python.sh --memory-only [OUT.json] [extra side_by_side.py args]
#       only the fresh-process memory runs (veltix 3.3.0 pinned, veltix_rs, pyzmq);
#       writes docs/bench/python-memory-fresh.json (or OUT.json)
set -euo pipefail
cd "$(dirname "$0")/.."
CMDLINE=$(printf ' %q' bash scripts/bench-python.sh "$@")
CMDLINE=${CMDLINE# }
MODE=full
if [ "${1:-}" = --memory-only ]; then
  MODE=memory
  shift
fi
if [ "$MODE" = memory ]; then
  OUT=${1:-docs/bench/python-memory-fresh.json}
else
  OUT=${1:-docs/bench/python-side-by-side.json}
fi
shift || true
MEM_RUNS=${MEM_RUNS:-3}

bash scripts/setup-python.sh
bash scripts/setup-python-pkg.sh >/dev/null

B=crates/veltix-py/bench/side_by_side.py
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
load() { cut -d' ' -f1-3 /proc/loadavg; }
LOAD_BEFORE=$(load)

# The impls: NAME PIN(yes|no) PYTHON IMPL [args...]
VELTIX=(veltix-3.3.0-pinned yes target/py/veltix-3.3.0/bin/python veltix --socket-core threading)
VELTIX_RS=(veltix_rs no target/py/veltix-rs/bin/python veltix_rs)
# veltix_rs pinned to one CPU too: on 2 vCPUs it is its best for every scenario (the GIL
# serialises the Python side anyway, and cross-CPU wake-ups are expensive on this VM).
VELTIX_RS_PINNED=(veltix_rs-pinned yes target/py/veltix-rs/bin/python veltix_rs)
PYZMQ=(pyzmq no target/py/veltix-rs/bin/python zmq)
PYZMQ_PINNED=(pyzmq-pinned yes target/py/veltix-rs/bin/python zmq)

bench() { # OUT.json PIN PYTHON IMPL [args...]
  local out=$1 pin=$2 py=$3 impl=$4
  if [ "$pin" = yes ]; then
    taskset -c 0 "$py" "$B" --impl "$impl" --json "$out" "${@:5}" >/dev/null
  else
    "$py" "$B" --impl "$impl" --json "$out" "${@:5}" >/dev/null
  fi
}

run() { # NAME PIN PYTHON IMPL [args...]
  echo "== $1 (load $(load))" >&2
  bench "$TMP/$1.json" "${@:2}"
}

runmem() { # ROUND NAME PIN PYTHON IMPL [args...]: one fresh process, memory only
  local i=$1 name=$2
  load >"$TMP/$name.mem$i.load"
  echo "== $name memory, fresh process $i (load $(cat "$TMP/$name.mem$i.load"))" >&2
  bench "$TMP/$name.mem$i.json" "${@:3}" --only memory
}

EXTRA=("$@")
if [ "$MODE" = full ]; then
  NAMES="veltix-3.3.0-pinned veltix_rs veltix_rs-pinned pyzmq pyzmq-pinned"
  run "${VELTIX[@]}" "${EXTRA[@]}"
  run "${VELTIX_RS[@]}" "${EXTRA[@]}"
  run "${VELTIX_RS_PINNED[@]}" "${EXTRA[@]}"
  run "${PYZMQ[@]}" "${EXTRA[@]}"
  run "${PYZMQ_PINNED[@]}" "${EXTRA[@]}"
  for i in $(seq "$MEM_RUNS"); do
    runmem "$i" "${VELTIX[@]}" "${EXTRA[@]}"
    runmem "$i" "${VELTIX_RS[@]}" "${EXTRA[@]}"
    runmem "$i" "${VELTIX_RS_PINNED[@]}" "${EXTRA[@]}"
    runmem "$i" "${PYZMQ[@]}" "${EXTRA[@]}"
    runmem "$i" "${PYZMQ_PINNED[@]}" "${EXTRA[@]}"
  done
else
  NAMES="veltix-3.3.0-pinned veltix_rs pyzmq"
  for i in $(seq "$MEM_RUNS"); do
    runmem "$i" "${VELTIX[@]}" "${EXTRA[@]}"
    runmem "$i" "${VELTIX_RS[@]}" "${EXTRA[@]}"
    runmem "$i" "${PYZMQ[@]}" "${EXTRA[@]}"
  done
fi

mkdir -p "$(dirname "$OUT")"
target/py/veltix-rs/bin/python - "$TMP" "$OUT" "$(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo -dirty)" \
  "$LOAD_BEFORE" "$(load)" "$MODE" "$MEM_RUNS" "$CMDLINE" $NAMES <<'PY'
import json, os, sys, platform, datetime, statistics
tmp, out, commit, load_before, load, mode, mem_runs, cmdline, *names = sys.argv[1:]
mem_runs = int(mem_runs)
MEM_NOTE = ("memory_per_client_bytes: median over fresh processes that ran nothing else "
            "(side_by_side.py --only memory: warm-up of one server + one client connected, one round "
            "trip, disconnected; then RSS growth over N clients, each connected and used for one "
            "send_and_wait / REQ-REP round trip, divided by N; both ends in the process), alternating "
            "between impls, same pinning as the impl's other scenarios")

def memory(name):
    runs = []
    for i in range(1, mem_runs + 1):
        r = json.load(open(os.path.join(tmp, f"{name}.mem{i}.json")))
        m = dict(r["memory"], load=open(os.path.join(tmp, f"{name}.mem{i}.load")).read().strip(),
                 cpus_allowed=r["cpus_allowed"], python=r["python"])
        runs.append(m)
    return {"fresh_process": True, "per_client_bytes_median": statistics.median(m["per_client_bytes"] for m in runs),
            "runs": runs}

doc = {"commit": commit, "date_utc": datetime.datetime.utcnow().isoformat(timespec="seconds"),
       "load_before": load_before, "load_after": load, "cpus": os.cpu_count(),
       "python": platform.python_version(), "command": cmdline, "memory_note": MEM_NOTE}
if mode == "full":
    res = {n: json.load(open(os.path.join(tmp, n + ".json"))) for n in names}
    for n in names:
        res[n]["memory"] = memory(n)
        res[n]["summary"]["memory_per_client_bytes"] = res[n]["memory"]["per_client_bytes_median"]
    doc["results"] = res
    rows = [("burst_msgs_per_s", "burst to a Python handler, msg/s", True),
            ("stress_msgs_per_s", "stress (100 clients x 1000), msg/s", True),
            ("ping_p50_us", "ping p50, us", False), ("ping_p99_us", "ping p99, us", False),
            ("reqrep_p50_us", "request/response p50, us", False), ("reqrep_p99_us", "request/response p99, us", False),
            ("memory_per_client_bytes", "memory per connected client (fresh process), bytes", False)]
else:
    res = {n: {"summary": {"memory_per_client_bytes": memory(n)["per_client_bytes_median"]}, "memory": memory(n)}
           for n in names}
    doc["results"] = {n: res[n]["memory"] for n in names}
    doc["summary"] = {n: {"memory_per_client_bytes": res[n]["summary"]["memory_per_client_bytes"]} for n in names}
    rows = [("memory_per_client_bytes", "memory per connected client (fresh process), bytes", False)]
json.dump(doc, open(out, "w"), indent=1)
py = res["veltix-3.3.0-pinned"]["summary"]
# Ratios to 3.3.0 (pinned, its best): veltix_rs unpinned, and pinned when measured.
sides = [n for n in ("veltix_rs", "veltix_rs-pinned") if n in names]
print("| metric | " + " | ".join(names) + " | " + " | ".join(f"{n} vs 3.3.0" for n in sides) + " |")
print("|---|" + "---|" * (len(names) + len(sides)))
for key, label, higher in rows:
    vals = [res[n]["summary"][key] for n in names]
    ratios = []
    for n in sides:
        a, b = res[n]["summary"][key], py[key]
        ratios.append("" if a is None or b is None else (f"{a / b:.1f}x" if higher else f"{a / b:.2f}x"))
    print(f"| {label} | " + " | ".join("n/a" if v is None else f"{v:,.0f}" if v >= 100 else f"{v:.1f}" for v in vals) + " | " + " | ".join(ratios) + " |")
if mode == "memory":
    for n in names:
        print(n, "per-run bytes:", ", ".join(f"{m['per_client_bytes']:,.0f}" for m in res[n]["memory"]["runs"]))
PY
