"""Side-by-side benchmark: the SAME Python code on Python Veltix 3.3.0 and on veltix_rs, plus
pyzmq (PUSH/PULL with a Python receive loop, REQ/REP) as the library a Python user would pick
instead. Server and clients in one process over loopback, as Veltix's own benchmark does.

    python side_by_side.py --impl veltix|veltix_rs|zmq [--socket-core threading] [--runs 3] [--json FILE]
    python side_by_side.py --impl ... --only memory [--mem-clients 200] [--json FILE]

Scenarios (every message is delivered to a Python handler that counts it):
  burst   one client sends N x 64 B back to back; rate = N / (time until the last arrived)
  stress  C clients, each on its own thread, send M x 32 B at once; rate = C*M / time
  ping    sequential ping_server() round trips (veltix: PING/PONG; zmq: n/a)
  reqrep  sequential send_and_wait() of 32 B answered by a Python route (zmq: REQ/REP)
  memory  RSS growth per connected client (both ends in this process), over 200 clients; ONLY
          with --only memory, i.e. in a fresh process that ran nothing else (see memory_fresh)

Memory is never measured after the other scenarios: by then the heap has grown (freed memory
is reused by the new connections) and veltix_rs's process-wide handler pool and runtime are
already up, so the RSS growth of N new clients says little (issue 13). scripts/bench-python.sh
runs `--only memory` as separate processes and merges the result into the summary.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import statistics
import sys
import threading
import time
from typing import Any, Callable

T = 120.0


def rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


# ── Veltix (3.3.0 or veltix_rs: identical code) ──────────────────────────────


class VeltixBench:
    def __init__(self, module: str, socket_core: str | None) -> None:
        self.vx = importlib.import_module(module)
        self.name = module
        vx = self.vx
        self.core = {} if socket_core is None else {"socket_core": vx.SocketCore[socket_core.upper()]}
        if module == "veltix":
            vx.Logger.get_instance(vx.LoggerConfig(level=vx.LogLevel.ERROR))
        else:
            import logging

            logging.getLogger("veltix_rs").setLevel(logging.ERROR)
        self.MOVE = vx.MessageType(401, "move")
        self.ECHO = vx.MessageType(402, "echo")

    def server(self, on_move: Callable[[], None]) -> tuple[Any, int]:
        vx = self.vx
        s = vx.Server(vx.ServerConfig(host="127.0.0.1", port=0, max_connection=-1, **self.core))

        @s.route(self.MOVE)
        def move(client, response):
            on_move()

        @s.route(self.ECHO)
        def echo(client, response):
            reply = vx.Request(self.ECHO, response.content)
            reply.respond(response)  # (3.3.0's respond() returns None: no chaining)
            s.send(reply, client)

        s.start()
        port = s.port if self.name == "veltix_rs" else s.socket._sock.getsockname()[1]
        return s, port

    def client(self, port: int) -> Any:
        vx = self.vx
        c = vx.Client(vx.ClientConfig(server_addr="127.0.0.1", port=port, **self.core))
        assert c.connect(), "connect failed"
        return c

    def counter(self, target: int) -> tuple[Callable[[], None], threading.Event, list[float]]:
        done = threading.Event()
        lock = threading.Lock()
        n = [0]
        last = [0.0]

        def hit() -> None:
            with lock:
                n[0] += 1
                if n[0] == target:
                    last[0] = time.perf_counter()
                    done.set()

        return hit, done, last

    def burst(self, count: int, size: int = 64) -> dict:
        hit, done, last = self.counter(count)
        s, port = self.server(hit)
        c = self.client(port)
        req = self.vx.Request(self.MOVE, b"x" * size)
        t0 = time.perf_counter()
        for _ in range(count):
            c.send(req)
        sent = time.perf_counter()
        assert done.wait(T), "burst: not everything arrived"
        out = {"count": count, "send_rate": count / (sent - t0), "recv_rate": count / (last[0] - t0)}
        c.disconnect()
        s.close_all()
        return out

    def stress(self, clients: int, msgs: int) -> dict:
        hit, done, last = self.counter(clients * msgs)
        s, port = self.server(hit)
        cs = [self.client(port) for _ in range(clients)]
        go = threading.Barrier(clients + 1)
        req = self.vx.Request(self.MOVE, b"x" * 32)

        def blast(c: Any) -> None:
            go.wait()
            for _ in range(msgs):
                c.send(req)

        ts = [threading.Thread(target=blast, args=(c,)) for c in cs]
        for t in ts:
            t.start()
        go.wait()
        t0 = time.perf_counter()
        for t in ts:
            t.join()
        assert done.wait(T), "stress: not everything arrived"
        out = {"clients": clients, "msgs": msgs, "rate": clients * msgs / (last[0] - t0)}
        for c in cs:
            c.disconnect()
        s.close_all()
        return out

    def latency(self, pings: int, reqreps: int) -> dict:
        s, port = self.server(lambda: None)
        c = self.client(port)
        for _ in range(20):
            c.ping_server()
        rtts = []
        for _ in range(pings):
            t0 = time.perf_counter()
            assert c.ping_server(timeout=5.0) is not None
            rtts.append((time.perf_counter() - t0) * 1e6)
        rr = []
        body = b"y" * 32
        for _ in range(reqreps):
            t0 = time.perf_counter()
            r = c.send_and_wait(self.vx.Request(self.ECHO, body), timeout=5.0)
            rr.append((time.perf_counter() - t0) * 1e6)
            assert r is not None and r.content == body
        c.disconnect()
        s.close_all()
        return {"ping_p50_us": pct(rtts, 50), "ping_p99_us": pct(rtts, 99),
                "reqrep_p50_us": pct(rr, 50), "reqrep_p99_us": pct(rr, 99),
                "reqrep_per_s": reqreps / (sum(rr) / 1e6)}

    def round_trip(self, c: Any, body: bytes) -> None:
        r = c.send_and_wait(self.vx.Request(self.ECHO, body), timeout=T)
        assert r is not None and r.content == body, "memory: no echo"

    def memory(self, n: int) -> dict:
        # Warm-up: one server and one client (connected, one round trip, disconnected), so the
        # one-time costs (runtime, handler-pool threads, first-use allocations) are paid.
        s, port = self.server(lambda: None)
        c = self.client(port)
        self.round_trip(c, b"warm-up")
        c.disconnect()
        s.close_all()
        s, port = self.server(lambda: None)
        gc.collect()
        before = rss()
        cs = [self.client(port) for _ in range(n)]
        connected = rss()
        # Every client really connected (handshake done) and both ends used once.
        for i, c in enumerate(cs):
            self.round_trip(c, b"m%d" % i)
        gc.collect()
        after = rss()
        for c in cs:
            c.disconnect()
        s.close_all()
        return {"clients": n, "rss_before": before, "rss_connected": connected, "rss_after": after,
                "per_client_bytes": (after - before) / n}


# ── pyzmq ────────────────────────────────────────────────────────────────────


class ZmqBench:
    name = "zmq"

    def __init__(self) -> None:
        import zmq

        self.zmq = zmq
        self.ctx = zmq.Context.instance()

    def _pull(self, target: int, handler: Callable[[bytes], None]) -> tuple[Any, int, threading.Event, list[float]]:
        pull = self.ctx.socket(self.zmq.PULL)
        port = pull.bind_to_random_port("tcp://127.0.0.1")
        done = threading.Event()
        last = [0.0]

        def loop() -> None:
            for _ in range(target):
                handler(pull.recv())
            last[0] = time.perf_counter()
            done.set()

        threading.Thread(target=loop, daemon=True).start()
        return pull, port, done, last

    def burst(self, count: int, size: int = 64) -> dict:
        seen = [0]

        def handler(m: bytes) -> None:
            seen[0] += 1

        pull, port, done, last = self._pull(count, handler)
        push = self.ctx.socket(self.zmq.PUSH)
        push.connect(f"tcp://127.0.0.1:{port}")
        msg = b"x" * size
        t0 = time.perf_counter()
        for _ in range(count):
            push.send(msg)
        sent = time.perf_counter()
        assert done.wait(T)
        push.close(0)
        pull.close(0)
        return {"count": count, "send_rate": count / (sent - t0), "recv_rate": count / (last[0] - t0)}

    def stress(self, clients: int, msgs: int) -> dict:
        pull, port, done, last = self._pull(clients * msgs, lambda m: None)
        pushes = []
        for _ in range(clients):
            p = self.ctx.socket(self.zmq.PUSH)
            p.connect(f"tcp://127.0.0.1:{port}")
            pushes.append(p)
        go = threading.Barrier(clients + 1)

        def blast(p: Any) -> None:
            go.wait()
            for _ in range(msgs):
                p.send(b"x" * 32)

        ts = [threading.Thread(target=blast, args=(p,)) for p in pushes]
        for t in ts:
            t.start()
        go.wait()
        t0 = time.perf_counter()
        for t in ts:
            t.join()
        assert done.wait(T)
        for p in pushes:
            p.close(0)
        pull.close(0)
        return {"clients": clients, "msgs": msgs, "rate": clients * msgs / (last[0] - t0)}

    def latency(self, pings: int, reqreps: int) -> dict:
        rep = self.ctx.socket(self.zmq.REP)
        port = rep.bind_to_random_port("tcp://127.0.0.1")
        stop = threading.Event()

        def serve() -> None:
            while not stop.is_set():
                if rep.poll(100):
                    rep.send(rep.recv())

        th = threading.Thread(target=serve, daemon=True)
        th.start()
        req = self.ctx.socket(self.zmq.REQ)
        req.connect(f"tcp://127.0.0.1:{port}")
        body = b"y" * 32
        for _ in range(20):
            req.send(body)
            req.recv()
        rr = []
        for _ in range(reqreps):
            t0 = time.perf_counter()
            req.send(body)
            assert req.recv() == body
            rr.append((time.perf_counter() - t0) * 1e6)
        stop.set()
        th.join()
        req.close(0)
        rep.close(0)
        return {"ping_p50_us": None, "ping_p99_us": None, "reqrep_p50_us": pct(rr, 50),
                "reqrep_p99_us": pct(rr, 99), "reqrep_per_s": reqreps / (sum(rr) / 1e6)}

    def _router(self) -> tuple[Any, int]:
        router = self.ctx.socket(self.zmq.ROUTER)
        router.setsockopt(self.zmq.RCVTIMEO, int(T * 1000))
        return router, router.bind_to_random_port("tcp://127.0.0.1")

    def _dealer(self, port: int) -> Any:
        d = self.ctx.socket(self.zmq.DEALER)
        d.setsockopt(self.zmq.RCVTIMEO, int(T * 1000))
        d.connect(f"tcp://127.0.0.1:{port}")
        return d

    def _round_trip(self, router: Any, d: Any, body: bytes) -> None:
        d.send(body)
        ident, got = router.recv_multipart()
        assert got == body
        router.send_multipart([ident, got])
        assert d.recv() == body

    def memory(self, n: int) -> dict:
        # Warm-up, as for Veltix: one ROUTER and one DEALER, one round trip, closed.
        router, port = self._router()
        d = self._dealer(port)
        self._round_trip(router, d, b"warm-up")
        d.close(0)
        router.close(0)
        router, port = self._router()
        gc.collect()
        before = rss()
        socks = [self._dealer(port) for _ in range(n)]
        connected = rss()
        # Every connection really up and used once in both directions.
        for i, d in enumerate(socks):
            self._round_trip(router, d, b"m%d" % i)
        gc.collect()
        after = rss()
        for d in socks:
            d.close(0)
        router.close(0)
        return {"clients": n, "rss_before": before, "rss_connected": connected, "rss_after": after,
                "per_client_bytes": (after - before) / n}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--impl", required=True, choices=["veltix", "veltix_rs", "zmq"])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--burst", type=int, default=100_000)
    p.add_argument("--stress-clients", type=int, default=100)
    p.add_argument("--stress-msgs", type=int, default=1000)
    p.add_argument("--pings", type=int, default=5000)
    p.add_argument("--reqreps", type=int, default=5000)
    p.add_argument("--mem-clients", type=int, default=200)
    p.add_argument("--only", choices=["memory"], default=None,
                   help="memory: only the memory scenario, in this fresh process (after a warm-up)")
    p.add_argument("--socket-core", default=None, help="threading|async|rust (default: the library's)")
    p.add_argument("--json", default=None)
    a = p.parse_args()
    b: Any = ZmqBench() if a.impl == "zmq" else VeltixBench(a.impl, a.socket_core)
    if a.only == "memory":
        memory_only(a, b)
    runs: list[dict] = []
    b.burst(min(a.burst, 10_000))  # warm-up
    for _ in range(a.runs):
        r = {"burst": b.burst(a.burst), "stress": b.stress(a.stress_clients, a.stress_msgs),
             "latency": b.latency(a.pings, a.reqreps)}
        runs.append(r)

    def med(path: list[str]) -> float | None:
        vals = []
        for r in runs:
            v: Any = r
            for k in path:
                v = v[k]
            if v is not None:
                vals.append(v)
        return statistics.median(vals) if vals else None

    summary = {
        "burst_msgs_per_s": med(["burst", "recv_rate"]),
        "stress_msgs_per_s": med(["stress", "rate"]),
        "ping_p50_us": med(["latency", "ping_p50_us"]),
        "ping_p99_us": med(["latency", "ping_p99_us"]),
        "reqrep_p50_us": med(["latency", "reqrep_p50_us"]),
        "reqrep_p99_us": med(["latency", "reqrep_p99_us"]),
        # Not measured here (see the module doc): `--only memory` in a fresh process.
        "memory_per_client_bytes": None,
    }
    finish(a, {"impl": a.impl, "python": sys.version.split()[0], "cpus_allowed": len(os.sched_getaffinity(0)),
               "args": vars(a), "summary": summary, "runs": runs})


def memory_only(a: argparse.Namespace, b: Any) -> None:
    """The memory scenario alone, in this process that ran nothing else (and exits after)."""
    mem = b.memory(a.mem_clients)
    finish(a, {"impl": a.impl, "python": sys.version.split()[0], "cpus_allowed": len(os.sched_getaffinity(0)),
               "args": vars(a), "fresh_process": True,
               "summary": {"memory_per_client_bytes": mem["per_client_bytes"]}, "memory": mem})


def finish(a: argparse.Namespace, out: dict) -> None:
    print(json.dumps(out["summary"], indent=1))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    sys.stdout.flush()
    os._exit(0)  # Python Veltix's threads are not all daemon/joinable


if __name__ == "__main__":
    main()
