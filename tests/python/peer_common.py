"""Shared plumbing for the Python Veltix test peers (peer3.py, peer16.py).

The peers are driven by the Rust integration tests (crates/veltix/tests/support/python.rs)
through a line protocol:

* stdout: one JSON object per line, flushed. Either an event ({"event": ...}) or
  the reply to a command ({"reply": <cmd id>, "ok": bool, ...}).
* stdin: one JSON command per line ({"id": N, "cmd": "...", ...}). Every command
  gets exactly one reply line.
* stderr: everything else (Veltix logs, tracebacks).

IMPORTANT: call ``setup_stdio()`` before importing veltix. It moves the real
stdout to a private file descriptor and points fd 1 (and sys.stdout) at stderr,
so nothing the library prints (its Logger defaults to sys.stdout) can corrupt
the protocol stream.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import threading
import time
import traceback

_out = None
_out_lock = threading.Lock()

# Type codes registered (explicitly) in both peers: 200..=210, 250..=253 (the chat commands of
# `veltix serve --cluster`: a peer drops frames of types it has no MessageType for), 10000, 65535.
USER_CODES = list(range(200, 211)) + list(range(250, 254)) + [10000, 65535]

HEX_LIMIT = 4096


def setup_stdio() -> None:
    """Reserve the real stdout for protocol lines; send everything else to stderr."""
    global _out
    if _out is not None:
        return
    sys.stdout.flush()
    fd = os.dup(1)
    os.dup2(2, 1)
    _out = os.fdopen(fd, "w", encoding="utf-8", buffering=1)
    sys.stdout = sys.stderr


def emit(obj: dict) -> None:
    """Write one JSON line to the protocol stream (thread-safe, flushed)."""
    line = json.dumps(obj, separators=(",", ":"))
    with _out_lock:
        _out.write(line + "\n")
        _out.flush()


def log(msg: str) -> None:
    print(f"[peer] {msg}", file=sys.stderr, flush=True)


def describe(content: bytes) -> dict:
    """len / sha256 / hex (hex only for small payloads) of some content."""
    d = {"len": len(content), "sha256": hashlib.sha256(content).hexdigest()}
    if len(content) <= HEX_LIMIT:
        d["hex"] = content.hex()
    return d


def pattern_seq(n: int) -> bytes:
    """bytes(i % 251 for i in range(n)), built quickly for multi-MiB sizes."""
    block = bytes(range(251))
    reps, rest = divmod(n, 251)
    return block * reps + block[:rest]


class PayloadSpec:
    """A decoded payload spec: exactly one of hex / text / json / pattern, plus an
    optional "prefix_hex" prepended to the bytes (e.g. to describe an echo reply)."""

    def __init__(self, spec) -> None:
        if not isinstance(spec, dict):
            raise ValueError(f"payload must be an object, got {spec!r}")
        keys = [k for k in ("hex", "text", "json", "pattern") if k in spec]
        if len(keys) != 1:
            raise ValueError(f"payload needs exactly one of hex/text/json/pattern: {spec!r}")
        self.kind = keys[0]
        self.value = spec[self.kind]
        if self.kind == "hex":
            self.content = bytes.fromhex(self.value)
        elif self.kind == "text":
            self.content = self.value.encode("utf-8")
        elif self.kind == "json":
            # Same bytes as veltix.utils.encoding.encode_json (3.3.0 Request(json=...)).
            self.content = json.dumps(self.value).encode("utf-8")
        else:
            if self.value != "seq":
                raise ValueError(f"unknown pattern {self.value!r} (only 'seq')")
            self.content = pattern_seq(int(spec["len"]))
        if spec.get("prefix_hex"):
            if self.kind in ("text", "json"):
                raise ValueError("prefix_hex only applies to hex/pattern payloads")
            self.content = bytes.fromhex(spec["prefix_hex"]) + self.content


def payload_from(cmd: dict) -> PayloadSpec:
    return PayloadSpec(cmd.get("payload", {"hex": ""}))


def base_parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog)
    p.add_argument("role", choices=["server", "client"])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--max-connections", type=int, default=-1)
    p.add_argument("--echo", action="store_true")
    p.add_argument("--retry", type=int, default=0)
    p.add_argument("--retry-delay", type=float, default=1.0)
    p.add_argument("--max-message-size", type=int, default=64 * 1024 * 1024)
    p.add_argument("--buffer-size", type=int, default=None)
    p.add_argument("--workers", type=int, default=None, help="callback pool size (max_workers)")
    p.add_argument("--handshake-timeout", type=float, default=None)
    p.add_argument("--log-level", default="INFO")
    return p


class Registry:
    """Maps ClientInfo objects to small integer indexes (0, 1, 2... in order of first sight)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_idx: dict[int, object] = {}
        self._next = 0

    def idx_of(self, info) -> int:
        with self._lock:
            for i, other in self._by_idx.items():
                if other is info:
                    return i
            i = self._next
            self._next += 1
            self._by_idx[i] = info
            return i

    def known_idx(self, info):
        with self._lock:
            for i, other in self._by_idx.items():
                if other is info:
                    return i
            return None

    def get(self, idx: int):
        with self._lock:
            info = self._by_idx.get(int(idx))
        if info is None:
            raise CommandError(f"unknown client index {idx}")
        return info


class CommandError(Exception):
    pass


def run_command_loop(handlers: dict, on_eof) -> None:
    """Read commands from stdin until EOF or a handler asks to exit.

    handlers: name -> callable(cmd) -> dict (extra reply fields; may contain "ok").
    A handler may raise CommandError (reply ok:false with the message) or any
    other exception (same, plus a traceback on stderr). Commands run one at a
    time in order, unless the command carries "async": true, in which case it
    runs on its own thread (its reply may then overtake later commands' replies).
    on_eof(): called when stdin closes; the process then exits 0.
    """

    handlers = dict(handlers)
    # Available in every peer: the len/sha256/hex of a payload spec, so a driver
    # without sha256 can compare what a peer received with what it meant to send.
    handlers.setdefault("digest", lambda cmd: describe(payload_from(cmd).content))

    def run_one(cmd: dict) -> None:
        cid = cmd.get("id")
        name = cmd.get("cmd")
        reply = {"reply": cid}
        try:
            handler = handlers.get(name)
            if handler is None:
                raise CommandError(f"unknown command {name!r}")
            extra = handler(cmd) or {}
            reply["ok"] = True
            reply.update(extra)
        except CommandError as e:
            reply["ok"] = False
            reply["error"] = str(e)
        except Exception as e:  # noqa: BLE001 - report everything to the driver
            traceback.print_exc(file=sys.stderr)
            reply["ok"] = False
            reply["error"] = f"{type(e).__name__}: {e}"
        emit(reply)

    for raw in sys.stdin:
        raw = raw.strip()
        if not raw:
            continue
        try:
            cmd = json.loads(raw)
        except json.JSONDecodeError as e:
            emit({"event": "bad_command", "error": str(e), "line": raw[:200]})
            continue
        if cmd.get("cmd") == "close":
            run_one(cmd)
            finish(0)
        if cmd.get("async"):
            threading.Thread(target=run_one, args=(cmd,), daemon=True).start()
        else:
            run_one(cmd)

    try:
        on_eof()
    finally:
        finish(0)


def finish(code: int) -> None:
    """Flush and leave immediately (library threads are not always daemon/joinable)."""
    try:
        with _out_lock:
            _out.flush()
    except Exception:  # noqa: BLE001
        pass
    sys.stderr.flush()
    os._exit(code)


def timed(fn):
    """(result, elapsed_ms) of fn()."""
    t0 = time.perf_counter()
    r = fn()
    return r, (time.perf_counter() - t0) * 1000.0
