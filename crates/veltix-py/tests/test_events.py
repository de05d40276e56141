"""Bus events fed by the core's connection observer (FEATURES.md §10): ProtocolEvent.PING /
PONG / HANDSHAKE_START / HANDSHAKE_DONE / HANDSHAKE_FAIL, ServerEvent.CLIENT_REJECTED,
ErrorEvent.CONNECTION_REFUSED, ErrorEvent.HANDLER and ErrorEvent.ACCEPT, with 3.3.0's payloads.
(ErrorEvent.ACCEPT needs a failing accept(): the test starves a child process of descriptors.)"""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
import zlib

import pytest

import veltix_rs as vx
from veltix_rs.events import ErrorEvent, ProtocolEvent, ServerEvent

from conftest import ECHO, T, Inbox, wait_until

HANDSHAKE = [ProtocolEvent.HANDSHAKE_START, ProtocolEvent.HANDSHAKE_DONE, ProtocolEvent.HANDSHAKE_FAIL]


def record(bus, events: list) -> Inbox:
    box = Inbox()
    bus.subscribe(events, lambda e, p: box.put((e, p)))
    return box


def test_handshake_events_on_both_sides_and_before_on_connect(echo_server, make_client):
    seen: list = []
    echo_server.bus.subscribe(HANDSHAKE + [ServerEvent.ON_CONNECT], lambda e, p: seen.append((e, p)))
    c = make_client(echo_server.port)
    mine: list = []
    c.bus.subscribe(HANDSHAKE, lambda e, p: mine.append((e, p)))
    assert c.connect()
    # Delivered before connect() returns.
    assert [e for e, _ in mine] == [ProtocolEvent.HANDSHAKE_START, ProtocolEvent.HANDSHAKE_DONE]
    assert mine[0][1] == {"role": "client"}
    assert set(mine[1][1]) == {"role", "peer_version"} and mine[1][1]["role"] == "client"
    assert isinstance(mine[1][1]["peer_version"], str) and mine[1][1]["peer_version"]
    wait_until(lambda: len(seen) == 3, what="server handshake events and ON_CONNECT")
    assert [e for e, _ in seen] == [ProtocolEvent.HANDSHAKE_START, ProtocolEvent.HANDSHAKE_DONE, ServerEvent.ON_CONNECT]
    assert seen[0][1] == {"role": "server"}
    assert seen[1][1]["role"] == "server" and seen[1][1]["peer_version"]


def test_ping_and_pong_events_on_the_answering_side(echo_server, make_client):
    srv = record(echo_server.bus, [ProtocolEvent.PING, ProtocolEvent.PONG])
    c = make_client(echo_server.port)
    cli = record(c.bus, [ProtocolEvent.PING, ProtocolEvent.PONG])
    assert c.connect()
    assert c.ping_server(timeout=T) is not None
    (e1, ping), (e2, pong) = srv.take(2)
    assert (e1, e2) == (ProtocolEvent.PING, ProtocolEvent.PONG)
    assert ping == {"request_id": ping["request_id"], "from": "client"}
    assert isinstance(ping["request_id"], int)
    assert pong == {"request_id": ping["request_id"]}
    # The server pings: now the client receives the PING and sends the PONG.
    wait_until(lambda: len(echo_server.clients) == 1)
    assert echo_server.ping_client(echo_server.clients[0], timeout=T) is not None
    (e1, ping), (e2, pong) = cli.take(2)
    assert (e1, e2) == (ProtocolEvent.PING, ProtocolEvent.PONG)
    assert ping == {"request_id": ping["request_id"], "from": "server"}
    assert pong == {"request_id": ping["request_id"]}
    assert srv.empty(), "a PONG received is not an event (3.3.0)"


def test_server_full_events_and_the_clients_handshake_fail(make_server, make_client):
    s = make_server(max_connection=1)
    box = record(s.bus, [ErrorEvent.CONNECTION_REFUSED, ServerEvent.CLIENT_REJECTED])
    s.start()
    first = make_client(s.port)
    assert first.connect()
    second = make_client(s.port)
    fails = record(second.bus, [ProtocolEvent.HANDSHAKE_FAIL])
    with pytest.raises(vx.ServerFullError):
        second.connect()
    (e1, refused), (e2, rejected) = box.take(2)
    assert (e1, e2) == (ErrorEvent.CONNECTION_REFUSED, ServerEvent.CLIENT_REJECTED)
    addr = refused["addr"]
    assert isinstance(addr, tuple) and addr[0] == "127.0.0.1" and isinstance(addr[1], int)
    assert refused == {"max_client": 1, "current": 1, "addr": addr}
    assert rejected == {"max_client": 1, "current": 1, "reason": "server_full", "addr": addr}
    assert fails.get() == (ProtocolEvent.HANDSHAKE_FAIL, {"role": "client", "reason": "server_full"})


def test_server_handshake_fail_on_a_bad_hello(echo_server):
    box = record(echo_server.bus, [ProtocolEvent.HANDSHAKE_FAIL])
    with socket.create_connection(("127.0.0.1", echo_server.port), timeout=T) as raw:
        raw.sendall(b"\x00\x04nope")
        assert box.get() == (ProtocolEvent.HANDSHAKE_FAIL, {"role": "server", "reason": "recv_failed"})


def _recv_exact(s: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        assert chunk, "server closed during the handshake"
        out += chunk
    return out


def _recv_hs(s: socket.socket) -> dict:
    (n,) = struct.unpack(">H", _recv_exact(s, 2))
    return json.loads(_recv_exact(s, n))


def test_a_corrupt_frame_is_an_error_handler_event(echo_server):
    box = record(echo_server.bus, [ErrorEvent.HANDLER])
    with socket.create_connection(("127.0.0.1", echo_server.port), timeout=T) as raw:
        hello = _recv_hs(raw)
        body = json.dumps({"v": "3.3.0", "pv": hello["pv"], "meta": {}}).encode()
        raw.sendall(struct.pack(">H", len(body)) + body)
        assert _recv_hs(raw) == {"result": "ok"}
        content = b"x"
        bad_crc = (zlib.crc32(content) ^ 1).to_bytes(4, "big")
        raw.sendall(b"VX" + struct.pack(">BHI", 0, ECHO.code, len(content)) + bad_crc + b"\x00\x01" + content)
        event, payload = box.get()
        me = raw.getsockname()
    assert event == ErrorEvent.HANDLER
    assert set(payload) == {"error", "source"}
    assert "crc" in payload["error"].lower()
    assert payload["source"] == str((me[0], me[1]))


# Runs in a child process: a server whose descriptor limit leaves room for two connections, so
# the third accept() fails with EMFILE. Prints the port, then each ACCEPT payload.
_STARVED_SERVER = r"""
import json, os, resource, sys, threading
import veltix_rs as vx
from veltix_rs.events import ErrorEvent
s = vx.Server(vx.ServerConfig(host="127.0.0.1", port=0))
seen = threading.Event()
def on_accept(event, payload):
    print("ACCEPT " + json.dumps(payload), flush=True)
    seen.set()
s.bus.subscribe(ErrorEvent.ACCEPT, on_accept)
s.start()
used = len(os.listdir("/proc/self/fd"))
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (used + 2, hard))
print("PORT %d" % s.port, flush=True)
seen.wait(60)
sys.stdin.readline()
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
s.close_all()
"""


def test_a_failing_accept_is_an_accept_error_event():
    child = subprocess.Popen([sys.executable, "-c", _STARVED_SERVER], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    socks = []
    try:
        assert child.stdout is not None and child.stdin is not None
        line = child.stdout.readline()
        assert line.startswith("PORT "), line
        port = int(line.split()[1])
        # Connections complete in the kernel's backlog; the server's accept() of the third (or
        # so) fails with EMFILE, which the core retries with a back-off and reports.
        for _ in range(8):
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=T))
        line = child.stdout.readline()
        assert line.startswith("ACCEPT "), line
        payload = json.loads(line[len("ACCEPT "):])
        assert set(payload) == {"error"} and "Too many open files" in payload["error"]
        child.stdin.write("\n")
        child.stdin.flush()
        assert child.wait(T) == 0
    finally:
        for sock in socks:
            sock.close()
        if child.poll() is None:
            child.kill()
            child.wait(T)
