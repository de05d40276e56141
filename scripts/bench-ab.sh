#!/usr/bin/env bash
# Before/after benchmark of two revisions, alternating binaries in one session:
#
#   bash scripts/bench-ab.sh BASE_REV [scenarios...]        (default scenarios: all)
#
# Builds BASE_REV (release) in a temporary git worktree under target/bench-ab/base with its own
# target dir (target/bench-ab/base-target, kept between calls so a second run is incremental),
# and the current tree (release, the usual target/). Then runs `veltix bench` ROUNDS times per
# binary, alternating A B A B ... (A = BASE_REV, B = current tree), so slow drifts of a shared
# machine hit both sides alike. Writes every JSON to OUT (default target/bench-ab/out), then
# prints `veltix bench --compare` of the first A/B pair and a B/A table of the medians over
# rounds of each scenario's headline numbers (> 1 means B is higher; for times lower is better).
#
# Environment: ROUNDS (default 3), RUNS (runs per invocation, default 3), OUT, BENCH_ARGS (extra
# arguments for every `veltix bench` call, e.g. "--against raw").
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -lt 1 ]; then
  echo "usage: $0 BASE_REV [scenarios...]" >&2
  exit 2
fi
BASE_REV=$1
shift
SCENARIOS=("$@")
[ ${#SCENARIOS[@]} -gt 0 ] || SCENARIOS=(all)
ROUNDS=${ROUNDS:-3}
RUNS=${RUNS:-3}
ROOT=$PWD/target/bench-ab
OUT=${OUT:-$ROOT/out}
BASE_WT=$ROOT/base
BASE_TARGET=$ROOT/base-target
mkdir -p "$ROOT" "$OUT"

base_sha=$(git rev-parse --verify "$BASE_REV^{commit}")
head_sha=$(git rev-parse --short HEAD)
dirty=$(git status --porcelain --untracked-files=no | head -1)

cleanup() { git worktree remove --force "$BASE_WT" >/dev/null 2>&1 || true; }
trap cleanup EXIT
cleanup
git worktree add --detach "$BASE_WT" "$base_sha" >/dev/null

echo "== building A = $BASE_REV ($base_sha) in $BASE_WT" >&2
(cd "$BASE_WT" && CARGO_TARGET_DIR=$BASE_TARGET cargo build --release -q -p veltix-cli)
echo "== building B = current tree ($head_sha${dirty:+, uncommitted changes})" >&2
cargo build --release -q -p veltix-cli

# Copies, so a rebuild during the session cannot swap a binary mid-run.
cp "$BASE_TARGET/release/veltix" "$ROOT/veltix-A"
cp target/release/veltix "$ROOT/veltix-B"

# known SIDE: the scenarios of $SCENARIOS that binary SIDE has (an older revision may lack a
# newer scenario such as `scale`; it then shows as "only in B").
known() {
  local help s
  help=$("$ROOT/veltix-$1" bench --help)
  for s in "${SCENARIOS[@]}"; do
    if grep -qE -- "^ +- $s:" <<<"$help"; then
      printf '%s\n' "$s"
    else
      echo "== veltix-$1 has no scenario $s: skipped on that side" >&2
    fi
  done
}
mapfile -t SC_A < <(known A)
mapfile -t SC_B < <(known B)
[ ${#SC_A[@]} -gt 0 ] && [ ${#SC_B[@]} -gt 0 ] || { echo "no scenario to run" >&2; exit 2; }

echo "== uptime before: $(uptime)" >&2
for r in $(seq 1 "$ROUNDS"); do
  for side in A B; do
    echo "== round $r/$ROUNDS: $side" >&2
    if [ "$side" = A ]; then sc=("${SC_A[@]}"); else sc=("${SC_B[@]}"); fi
    # shellcheck disable=SC2086
    "$ROOT/veltix-$side" bench "${sc[@]}" --runs "$RUNS" ${BENCH_ARGS:-} \
      --json "$OUT/$side-$r.json" >"$OUT/$side-$r.txt"
  done
done
echo "== uptime after: $(uptime)" >&2

echo
echo "A = $BASE_REV ($base_sha), B = $head_sha${dirty:+ (+ uncommitted changes)}; $ROUNDS rounds, alternating"
python3 - "$OUT" "$ROUNDS" <<'EOF'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def load(side):
    return [json.load(open(f"{out}/{side}-{r}.json")) for r in range(1, rounds + 1)]
A, B = load("A"), load("B")
def med(files, name, key):
    vals = []
    for f in files:
        for s in f["scenarios"]:
            if s["name"] == name and isinstance(s["results"].get(key), (int, float)):
                vals.append(s["results"][key])
    return statistics.median(vals) if vals else None
print(f"{'scenario':<10} {'metric':<24} {'A (median)':>12} {'B (median)':>12} {'B/A':>7}  better")
print("-" * 76)
worst = None
for s in B[0]["scenarios"]:
    for c in s["comparisons"]:
        a, b = med(A, s["name"], c["metric"]), med(B, s["name"], c["metric"])
        if a is None:
            print(f"{s['name']:<10} {c['metric']:<24} {'(only in B)':>12} {b:>12.6g}")
            continue
        if b is None or a == 0:
            print(f"{s['name']:<10} {c['metric']:<24} {'-' if a is None else a:>12} {'-' if b is None else b:>12} {'-':>7}")
            continue
        ratio = b / a
        gain = ratio if c["higher_is_better"] else 1 / ratio
        verdict = "B" if gain > 1.05 else ("A" if gain < 0.95 else "~")
        if worst is None or gain < worst[0]:
            worst = (gain, s["name"], c["metric"])
        print(f"{s['name']:<10} {c['metric']:<24} {a:>12.6g} {b:>12.6g} {ratio:>7.3f}  {verdict}")
if worst:
    print(f"worst for B: {worst[1]} {worst[2]}: {worst[0]:.3f}x of A (1.00 = same; < 0.95 = more than 5 % worse)")
EOF
echo "JSON and text output: $OUT" >&2
