#!/usr/bin/env bash
# Coverage-guided fuzzing of veltix-proto (stream decoder, handshakes, sans-I/O connection) with libFuzzer, on STABLE
# Rust. No nightly and no cargo-fuzz needed: the targets in fuzz/ are built by plain `cargo build`
# with the same SanitizerCoverage flags cargo-fuzz passes (`cargo fuzz build -s none`); the
# libfuzzer-sys crate compiles libFuzzer itself with the C++ compiler (g++). There is no
# AddressSanitizer on stable; veltix-proto is `#![forbid(unsafe_code)]`, so panics, overflow
# checks and debug assertions (all enabled here) are what the fuzzer catches.
#
# Usage:
#   scripts/fuzz.sh --ci               build, then share $FUZZ_CI_TOTAL_SECONDS (60) s evenly
#                                      between the targets (or $FUZZ_CI_SECONDS s each, if set)
#   scripts/fuzz.sh TARGET [SECONDS]   run one target (decoder | handshake | connection), default 600 s
#   scripts/fuzz.sh --build            build only
#   scripts/fuzz.sh --repro TARGET FILE  run one input (e.g. a crash from fuzz/artifacts/)
# Extra libFuzzer options can be passed in FUZZ_ARGS (e.g. FUZZ_ARGS="-jobs=2 -workers=2").
# Exits non-zero when a target crashes; the crashing input is written to fuzz/artifacts/TARGET/.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FUZZ="$ROOT/fuzz"
TARGETS=(decoder handshake connection)

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
    exit 2
}

need() {
    command -v "$1" >/dev/null 2>&1 || { echo "fuzz.sh: $1 is required ($2)" >&2; exit 1; }
}

HOST=""
build() {
    need cargo "install Rust (stable) with rustup"
    need c++ "libfuzzer-sys compiles libFuzzer: apt-get install g++"
    HOST=$(rustc -vV | sed -n 's/^host: //p')
    local flags=(
        -Cpasses=sancov-module
        -Cllvm-args=-sanitizer-coverage-level=4
        -Cllvm-args=-sanitizer-coverage-inline-8bit-counters
        -Cllvm-args=-sanitizer-coverage-pc-table
        -Cllvm-args=-sanitizer-coverage-trace-compares
        --cfg fuzzing
        -Cdebug-assertions
        -Coverflow-checks
    )
    case "$HOST" in *-linux-*) flags+=(-Cllvm-args=-sanitizer-coverage-stack-depth) ;; esac
    echo "==> building fuzz targets (${TARGETS[*]}) for $HOST"
    # --target keeps RUSTFLAGS away from build scripts; fuzz/ has its own target dir and lock file.
    (cd "$FUZZ" && RUSTFLAGS="${flags[*]}" cargo build --release --target "$HOST" --bins)
}

bin() { echo "$FUZZ/target/$HOST/release/$1"; }

# Seed corpora are generated from the captured protocol vectors (not committed).
seed() {
    local vectors="$ROOT/crates/veltix-proto/tests/data/vectors.json"
    if ! command -v python3 >/dev/null 2>&1; then
        echo "fuzz.sh: python3 not found, starting without seed corpora" >&2
        mkdir -p "$FUZZ/corpus/decoder" "$FUZZ/corpus/handshake" "$FUZZ/corpus/connection"
        return
    fi
    python3 - "$vectors" "$FUZZ/corpus" <<'PY'
import hashlib, json, os, sys
vectors, out = sys.argv[1], sys.argv[2]
v = json.load(open(vectors))
def put(target, data):
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    name = "seed-" + hashlib.sha1(data).hexdigest()[:16]
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)
streams = {1: [], 3: []}
for e in v:
    g = e["generation"]
    if e["kind"] == "frame":
        streams[g].append(bytes.fromhex(e["frame_hex"]))
    elif e["kind"] == "buffer_case":
        streams[g].append(bytes.fromhex(e["input_hex"]))
        limit = e["max_message_size"]
        if limit <= 255:  # small-limit mode: [mode | 2, limit, piece seed]
            put("decoder", bytes([(g == 1) | 2, limit, 7]) + bytes.fromhex(e["input_hex"]))
    elif e["kind"] == "session":
        for k in ("S->C_hex", "C->S_hex"):
            if e[k]:
                streams[g].append(bytes.fromhex(e[k]))
    elif e["kind"] == "handshake":
        put("handshake", bytes([0, 5]) + bytes.fromhex(e["bytes_hex"]))
def script(stream, extra=b""):
    # connection target: feed commands of up to 32 bytes each (cmd = (n - 1) * 8).
    out = bytearray()
    for i in range(0, len(stream), 32):
        piece = stream[i:i + 32]
        out.append((len(piece) - 1) * 8)
        out += piece
    return bytes(out) + extra
for g, items in streams.items():
    cmode = 1 if g == 1 else 0
    for i, s in enumerate(items[:40]):
        put("connection", bytes([cmode | (2 * (i % 2)), 1 + i]) + script(s))
    # Requests, a PING, clock advances (keep-alive on), then the captured traffic and EOF.
    put("connection", bytes([cmode | 4, 5]) + bytes([5 + 8 * 10, 6 + 8 * 3, 4 + 8 * 20]) + script(b"".join(items)) + bytes([4 + 8 * 31, 7]))
for g, items in streams.items():
    mode = 1 if g == 1 else 0
    for i, s in enumerate(items):
        put("decoder", bytes([mode, 0, 1 + i % 200]) + s)           # one stream, pieces
        put("decoder", bytes([mode | 8, 0, 0]) + s)                   # 1-byte pieces, batched
    put("decoder", bytes([mode, 0, 3]) + b"".join(items))             # everything at once
    put("decoder", bytes([mode | 4, 0, 9]) + b"".join(items))         # with known_types
# Crafted resync input: a bad-CRC Gen 3 header every 15 bytes, each declaring a frame that ends
# inside the stream (Python's resync rule hashes it over and over; ours stays linear).
crafted = bytearray(8000)
for i in range(0, len(crafted) - 15, 15):
    size = (len(crafted) - i - 15) // 2
    crafted[i:i + 15] = b"VX\x00\x00\xc8" + size.to_bytes(4, "big") + b"\xde\xad\xbe\xef\x00\x00"
put("decoder", bytes([0, 0, 3]) + bytes(crafted))
put("decoder", bytes([8, 0, 0]) + bytes(crafted))
put("decoder", bytes([16, 0, 3]) + bytes(range(64)))                 # structured mode
put("decoder", bytes([17, 0, 0]) + bytes(range(64)))
hs = {e["name"]: bytes.fromhex(e["bytes_hex"]) for e in v if e["kind"] == "handshake"}
tail = bytes.fromhex(next(e["frame_hex"] for e in v if e["kind"] == "frame" and e["generation"] == 3))
put("handshake", bytes([0, 0]) + hs["server_hello"] + hs["server_ack"] + tail)
put("handshake", bytes([1, 3]) + hs["server_ack"] + tail)  # mode 1: hello is prepended
put("handshake", bytes([0, 9]) + hs["client_hello"] + tail)
put("handshake", bytes([0, 2]) + hs["server_hello_frame"] + tail)
put("handshake", bytes([0, 4]) + hs["client_hello_ack_frame"] + tail)
PY
}

run() {
    local target=$1 seconds=$2
    local b
    b=$(bin "$target")
    [[ -x "$b" ]] || { echo "fuzz.sh: $b was not built" >&2; exit 1; }
    mkdir -p "$FUZZ/corpus/$target" "$FUZZ/artifacts/$target"
    echo "==> fuzzing $target for ${seconds}s"
    # shellcheck disable=SC2086
    "$b" "$FUZZ/corpus/$target" \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=8192 \
        -dict="$FUZZ/veltix.dict" -print_final_stats=1 \
        -artifact_prefix="$FUZZ/artifacts/$target/" ${FUZZ_ARGS:-}
}

case "${1:-}" in
    --ci)
        build
        seed
        status=0
        # The CI budget is a total: adding a target does not make CI longer.
        per_target=${FUZZ_CI_SECONDS:-$(( ${FUZZ_CI_TOTAL_SECONDS:-60} / ${#TARGETS[@]} ))}
        for t in "${TARGETS[@]}"; do
            run "$t" "$per_target" || { status=$?; echo "fuzz.sh: $t FAILED (exit $status); see fuzz/artifacts/$t/" >&2; }
        done
        exit "$status"
        ;;
    --build)
        build
        ;;
    --repro)
        [[ $# -eq 3 && -f "$3" ]] || usage
        build
        "$(bin "$2")" "$3"
        ;;
    "" | -h | --help)
        usage
        ;;
    -*)
        usage
        ;;
    *)
        [[ " ${TARGETS[*]} " == *" $1 "* ]] || { echo "fuzz.sh: unknown target $1 (have: ${TARGETS[*]})" >&2; exit 2; }
        [[ "${2:-600}" =~ ^[0-9]+$ ]] || usage
        build
        seed
        run "$1" "${2:-600}"
        ;;
esac
