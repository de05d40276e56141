"""Callback threads, ordering, the GIL, re-entrant calls from callbacks, exceptions in
callbacks, sharing objects between threads, Ctrl+C and interpreter exit."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading


import veltix_rs as vx
from veltix_rs.events import ErrorEvent

from conftest import ECHO, NOTE, T, Inbox, wait_until


def test_callbacks_run_on_the_handler_pool_in_arrival_order(make_server, make_client):
    s = make_server(max_workers=3)
    seen: dict[int, list[int]] = {}
    threads: dict[int, str] = {}
    lock = threading.Lock()
    done = threading.Event()
    n_clients, n = 4, 1500

    @s.route(NOTE)
    def note(client, msg):
        with lock:
            tid = threading.get_native_id()
            if tid not in threads:
                # The process-wide pool shared by every server and client names its threads.
                with open(f"/proc/self/task/{tid}/comm") as f:
                    threads[tid] = f.read().strip()
            seen.setdefault(client.thread_id, []).append(int(msg.text))
            if sum(len(v) for v in seen.values()) == n_clients * n:
                done.set()

    s.start()
    clients = [make_client(s.port) for _ in range(n_clients)]
    for c in clients:
        assert c.connect()

    def blast(c):
        for i in range(n):
            assert c.send(vx.Request(NOTE, text=str(i)))

    senders = [threading.Thread(target=blast, args=(c,)) for c in clients]
    for t in senders:
        t.start()
    for t in senders:
        t.join()
    assert done.wait(T)
    assert threading.get_native_id() not in threads
    assert threads and all(name.startswith("veltix-worker") for name in threads.values()), threads
    assert len(seen) == n_clients
    for per_client in seen.values():
        assert per_client == list(range(n))


def test_gil_is_released_while_send_and_wait_blocks(make_server, make_client):
    """The handler only answers once a Python thread has counted to N; that thread can only run
    if the main thread's send_and_wait released the GIL (otherwise: deadlock, then timeout)."""
    s = make_server()
    counted = threading.Event()

    @s.route(ECHO)
    def echo(client, msg):
        assert counted.wait(T)
        s.send(vx.Request(ECHO, b"ok").respond(msg), client)

    s.start()
    c = make_client(s.port)
    assert c.connect()
    progress = []

    def counter():
        for i in range(200_000):
            if i % 1000 == 0:
                progress.append(i)
        counted.set()

    t = threading.Thread(target=counter)
    reply_box = []
    waiter = threading.Thread(target=lambda: reply_box.append(c.send_and_wait(vx.Request(ECHO, b"?"), timeout=T)))
    waiter.start()
    t.start()
    waiter.join(T + 5)
    t.join(T)
    assert reply_box and reply_box[0] is not None and reply_box[0].content == b"ok"
    assert len(progress) == 200


def test_callbacks_may_call_blocking_apis(make_server, make_client):
    s = make_server(max_workers=2)
    results = Inbox()

    @s.route(ECHO)
    def echo(client, msg):
        # From inside a callback: request/response back to the same client, ping, broadcast.
        r = s.send_and_wait(vx.Request(NOTE, b"question"), client, timeout=T)
        rtt = s.ping_client(client, timeout=T)
        results.put((r.content if r else None, isinstance(rtt, float)))
        s.send(vx.Request(ECHO, b"done").respond(msg), client)

    close_now = vx.MessageType("close_now")
    s.route(close_now)(lambda client, msg: results.put(("closed", s.close_client(client))))
    s.start()
    c = make_client(s.port)
    c.route(NOTE)(lambda r: c.send(vx.Request(NOTE, b"answer").respond(r)))
    assert c.connect()
    reply = c.send_and_wait(vx.Request(ECHO, b"go"), timeout=T)
    assert reply is not None and reply.content == b"done"
    assert results.get() == (b"answer", True)
    assert c.send(vx.Request(close_now, b""))
    assert results.get() == ("closed", True)

    # close_all from inside a callback does not deadlock either.
    s2 = make_server()
    stop = vx.MessageType("stop_now")
    closed = threading.Event()
    s2.route(stop)(lambda client, msg: (s2.close_all(), closed.set()))
    s2.start()
    c2 = make_client(s2.port)
    assert c2.connect()
    assert c2.send(vx.Request(stop, b""))
    assert closed.wait(T)
    s2.wait_until_closed()


def test_client_callback_may_call_send_and_wait(echo_server, make_client):
    c = make_client(echo_server.port)
    out = Inbox()
    c.route(NOTE)(lambda r: out.put(c.send_and_wait(vx.Request(ECHO, b"inner"), timeout=T)))
    assert c.connect()
    wait_until(lambda: len(echo_server.clients) == 1)
    assert echo_server.send(vx.Request(NOTE, b"kick"), echo_server.clients[0])
    reply = out.get()
    assert reply is not None and reply.content == b"echo:inner"


def test_exception_in_callback_is_logged_and_the_server_goes_on(make_server, make_client, caplog):
    s = make_server(max_workers=1)
    errors = Inbox()
    s.bus.subscribe(ErrorEvent.CALLBACK, lambda e, p: errors.put(p))

    @s.route(ECHO)
    def echo(client, msg):
        if msg.content == b"boom":
            raise ValueError("kaboom")
        s.send(vx.Request(ECHO, msg.content).respond(msg), client)

    s.on_connect(lambda client: 1 / 0)
    s.start()
    c = make_client(s.port)
    with caplog.at_level(logging.ERROR, logger="veltix_rs"):
        assert c.connect()
        assert c.send(vx.Request(ECHO, b"boom"))
        reply = c.send_and_wait(vx.Request(ECHO, b"after"), timeout=T)
        assert reply is not None and reply.content == b"after"
        first = errors.get()
        second = errors.get()
    funcs = {first["func"], second["func"]}
    assert any("echo" in f for f in funcs)
    assert {"kaboom", "division by zero"} == {first["error"], second["error"]}
    records = [r for r in caplog.records if r.name == "veltix_rs" and r.exc_info]
    assert any(r.exc_info[0] is ValueError and r.exc_info[2] is not None for r in records)
    assert any(r.exc_info[0] is ZeroDivisionError for r in records)


def test_objects_are_shared_safely_between_threads(echo_server, make_client):
    c = make_client(echo_server.port)
    assert c.connect()
    bad = []

    def worker(k):
        for i in range(100):
            body = f"{k}-{i}".encode()
            r = c.send_and_wait(vx.Request(ECHO, body), timeout=T)
            if r is None or r.content != b"echo:" + body:
                bad.append((k, i, r))

    ts = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert bad == []


def _run(code: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout)


def test_interpreter_exit_with_running_server_and_client_does_not_hang():
    r = _run(
        """
        import veltix_rs as vx
        T = vx.MessageType(300, "t")
        s = vx.Server(vx.ServerConfig(host="127.0.0.1", port=0))
        s.route(T)(lambda c, m: s.send(vx.Request(T, m.content).respond(m), c))
        s.start()
        c = vx.Client(vx.ClientConfig(port=s.port))
        assert c.connect()
        for i in range(1000):
            c.send(vx.Request(T, b"x"))
        print("exiting", flush=True)
        """
    )
    assert r.returncode == 0, r.stderr
    assert "exiting" in r.stdout


def test_ctrl_c_in_wait_until_closed_closes_the_server():
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(
            """
            import veltix_rs as vx
            from veltix_rs.events import ServerEvent
            s = vx.Server(vx.ServerConfig(host="127.0.0.1", port=0))
            s.bus.subscribe(ServerEvent.STOPPED, lambda e, p: print("stopped", flush=True))
            import sys, threading
            s.start()
            main = threading.main_thread().ident

            def announce():
                # "ready" only once the main thread is inside wait_until_closed().
                ev = threading.Event()
                while True:
                    f = sys._current_frames().get(main)
                    names = []
                    while f is not None:
                        names.append(f.f_code.co_name)
                        f = f.f_back
                    if "wait_until_closed" in names:
                        print("ready", s.port, flush=True)
                        return
                    ev.wait(0.01)

            threading.Thread(target=announce, daemon=True).start()
            s.wait_until_closed()
            print("returned", s.is_running, flush=True)
            """)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("ready"), proc.stderr.read() if proc.stderr else line
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "stopped" in out and "returned False" in out


def test_interpreter_exit_waits_for_a_running_callback():
    """A callback still running Python code when the interpreter exits finishes before
    finalization (a worker re-entering a finalizing interpreter would be killed through Rust
    frames and abort the process)."""
    r = _run(
        """
        import atexit, threading
        import veltix_rs as vx
        T = vx.MessageType(300, "t")
        s = vx.Server(vx.ServerConfig(host="127.0.0.1", port=0))
        entered, release = threading.Event(), threading.Event()

        def h(c, m):
            entered.set()
            release.wait(60)
            total = sum(range(3_000_000))  # still in Python while the exit proceeds
            print("handler done", total > 0, flush=True)

        s.route(T)(h)
        s.start()
        c = vx.Client(vx.ClientConfig(port=s.port))
        assert c.connect() and c.send(vx.Request(T, b"x"))
        assert entered.wait(20)
        atexit.register(release.set)  # runs before veltix_rs's own exit hook (LIFO)
        print("exiting", flush=True)
        """
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["exiting", "handler done True"]


def test_a_backlog_is_delivered_in_batches_under_one_gil_acquisition_each(make_server, make_client):
    """While the handler is blocked, 640 messages queue up; they are then delivered in batches
    of up to 64 under one GIL acquisition each (not one acquisition per message)."""
    from veltix_rs import _native

    s = make_server(max_workers=1)
    entered, release, done = threading.Event(), threading.Event(), threading.Event()
    n = 641
    seen = []

    @s.route(NOTE)
    def note(client, msg):
        if not seen:
            entered.set()
            assert release.wait(T)
        seen.append(msg.content)
        if len(seen) == n:
            done.set()

    s.start()
    c = make_client(s.port)
    assert c.connect()
    assert c.send(vx.Request(NOTE, b"first"))
    assert entered.wait(T)  # the handler is blocked inside the first batch
    for i in range(n - 1):
        assert c.send(vx.Request(NOTE, str(i).encode()))
    assert c.send_and_wait(vx.Request(vx.PING, b""), timeout=T) is not None  # all reached the server
    before = _native.gil_acquisitions()
    release.set()
    assert done.wait(T)
    used = _native.gil_acquisitions() - before
    assert seen[1:] == [str(i).encode() for i in range(n - 1)]
    assert used <= 2 * ((n - 1) // 64 + 1) + 4, f"{used} GIL acquisitions for {n - 1} messages"


def test_ctrl_c_in_client_wait_until_closed_disconnects():
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(
            """
            import sys, threading
            import veltix_rs as vx
            s = vx.Server(vx.ServerConfig(host="127.0.0.1", port=0))
            s.start()
            c = vx.Client(vx.ClientConfig(port=s.port))
            c.on_disconnect(lambda st: print("state", st.permanent, st.reason.name, flush=True))
            assert c.connect()
            main = threading.main_thread().ident

            def announce():
                ev = threading.Event()
                while True:
                    f = sys._current_frames().get(main)
                    names = []
                    while f is not None:
                        names.append(f.f_code.co_name)
                        f = f.f_back
                    if "wait_until_closed" in names:
                        print("ready", flush=True)
                        return
                    ev.wait(0.01)

            threading.Thread(target=announce, daemon=True).start()
            c.wait_until_closed()
            print("returned", c.is_connected, flush=True)
            s.close_all()
            """)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline() == "ready\n"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "state True MANUAL" in out and "returned False" in out


def test_gil_is_released_while_connect_blocks():
    """A listener that never sends the handshake: connect() blocks until handshake_timeout; a
    Python thread must make progress meanwhile."""
    import socket

    with socket.socket() as lst:
        lst.bind(("127.0.0.1", 0))
        lst.listen()
        c = vx.Client(vx.ClientConfig(port=lst.getsockname()[1], handshake_timeout=1.0))
        go, stop = threading.Event(), threading.Event()
        ticks = [0]

        def count():
            go.wait(T)
            while not stop.is_set():
                ticks[0] += 1

        t = threading.Thread(target=count)
        t.start()
        try:
            go.set()
            assert c.connect() is False  # ~1 s in Rust; only counts if the GIL was released
        finally:
            stop.set()
            t.join(T)
        # About a second of counting is millions of iterations; holding the GIL for the
        # connect would leave at most one switch interval (5 ms) to the counter.
        assert ticks[0] > 200_000, f"the counting thread only ran {ticks[0]} iterations"


def test_a_pool_thread_with_a_kept_thread_state_exits_cleanly():
    """Regression test for the thread-exit path of src/tstate.rs (the Drop of `Kept`, fixed in
    f81b9f0: the old release sequence ended in a Py_FatalError when a pool thread that had run
    Python callbacks exited).

    Pool of 1 (VELTIX_HANDLER_THREADS=1). The server's KICK handler calls send_and_wait on a
    second client, so its pool thread waits in `blocking` and the pool starts a stand-in thread
    that runs the server's ECHO handler: two pool threads have run Python callbacks (each keeps
    a Python thread state). ECHO only answers once the main thread has seen both callbacks
    running at the same time on two distinct veltix-worker threads. Once things are quiet, one
    of the two threads is above the pool's size and exits after ~10 s idle: the subprocess polls
    /proc/self/task (60 s deadline) until one of them is gone, then runs callbacks again (on the
    remaining thread and on a fresh stand-in) and exits normally."""
    code = """
        import json, os, queue, threading, time
        import veltix_rs as vx

        T = 30.0
        KICK = vx.MessageType(301, "kick")
        ECHO = vx.MessageType(302, "echo")
        lock = threading.Lock()
        ran = {"kick": [], "echo": []}
        names = {}
        echo_running = threading.Event()
        go = threading.Event()
        kicked = queue.Queue()

        def tasks():
            return {int(t) for t in os.listdir("/proc/self/task")}

        def record(what):
            tid = threading.get_native_id()
            with open(f"/proc/self/task/{tid}/comm") as f:
                name = f.read().strip()
            with lock:
                ran[what].append(tid)
                names[tid] = name

        s = vx.Server(vx.ServerConfig(host="127.0.0.1", port=0))

        @s.route(KICK)
        def kick(client, msg):
            record("kick")
            r = c2.send_and_wait(vx.Request(ECHO, msg.content), timeout=T)
            kicked.put(None if r is None else r.content)

        @s.route(ECHO)
        def echo(client, msg):
            record("echo")
            echo_running.set()
            ok = go.wait(T)  # bounded: the main thread sets it once it saw both callbacks
            s.send(vx.Request(ECHO, (b"echo:" if ok else b"late:") + msg.content).respond(msg), client)

        s.start()
        c1 = vx.Client(vx.ClientConfig(server_addr="127.0.0.1", port=s.port))
        c2 = vx.Client(vx.ClientConfig(server_addr="127.0.0.1", port=s.port))
        assert c1.connect() and c2.connect()

        assert c1.send(vx.Request(KICK, b"one"))
        assert echo_running.wait(T), "the ECHO handler did not run while KICK was blocked"
        with lock:
            assert len(ran["kick"]) == 1 and len(ran["echo"]) == 1, ran
            pool = {ran["kick"][0], ran["echo"][0]}
        go.set()
        assert kicked.get(timeout=T) == b"echo:one"
        assert len(pool) == 2, f"KICK and ECHO ran on the same thread: {ran}"
        assert all(names[t].startswith("veltix-worker") for t in pool), names
        peak = len(tasks())

        # Quiet now: the thread above the pool's size exits after ~10 s idle.
        deadline = time.monotonic() + 60.0
        tick = threading.Event()
        while pool <= tasks() and time.monotonic() < deadline:
            tick.wait(0.05)
        gone = sorted(pool - tasks())
        after = len(tasks())
        print("EXITED " + json.dumps({"pool": sorted(pool), "gone": gone, "threads_peak": peak,
                                      "threads_after": after}), flush=True)
        assert gone, "no pool thread exited within 60 s"

        # The interpreter is fine: callbacks on the remaining thread and on a fresh stand-in.
        r = c2.send_and_wait(vx.Request(ECHO, b"two"), timeout=T)
        assert r is not None and r.content == b"echo:two", r
        assert c1.send(vx.Request(KICK, b"three"))
        assert kicked.get(timeout=T) == b"echo:three"
        with lock:
            print("AGAIN " + json.dumps({"kick": ran["kick"], "echo": ran["echo"]}), flush=True)
        c1.disconnect()
        c2.disconnect()
        s.close_all()
        print("done", flush=True)
        """
    env = dict(os.environ, VELTIX_HANDLER_THREADS="1")
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                       timeout=150, env=env)
    assert "Fatal Python error" not in r.stderr, r.stderr
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    lines = r.stdout.splitlines()
    exited = json.loads(next(line for line in lines if line.startswith("EXITED "))[len("EXITED "):])
    assert len(exited["pool"]) == 2 and len(exited["gone"]) == 1, exited
    assert exited["threads_after"] < exited["threads_peak"], exited
    again = json.loads(next(line for line in lines if line.startswith("AGAIN "))[len("AGAIN "):])
    assert len(again["kick"]) == 2 and len(again["echo"]) == 3, again
    assert lines[-1] == "done", lines
