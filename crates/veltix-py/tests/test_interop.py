"""Interop with the REAL Python Veltix as separate processes (venvs made by
scripts/setup-python.sh): a veltix_rs server with Veltix 3.3.0 clients and the reverse, and
``veltix_rs.v1`` (Gen 1 wire) with Veltix 1.6.9 in both directions."""

from __future__ import annotations

import pytest

import veltix_rs as vx
import veltix_rs.v1 as v1

from conftest import CODES, ECHO, NOTE, T, Inbox, wait_until
from peers import Peer


@pytest.fixture
def peers():
    made: list[Peer] = []

    def spawn(version: str, role: str, *args: str) -> Peer:
        p = Peer(version, role, *args)
        made.append(p)
        return p

    yield spawn
    for p in made:
        p.close()


def hexof(b: bytes) -> str:
    return b.hex()


def recv_with(peer: Peer, content: bytes) -> dict:
    """The peer's next "recv" event carrying ``content`` (earlier ones are skipped)."""
    while True:
        ev = peer.event("recv")
        if ev.get("hex") == content.hex():
            return ev


# ── 3.3.0 ─────────────────────────────────────────────────────────────────────


def test_rs_server_with_veltix_3_3_0_clients(make_server, peers):
    s = make_server()
    connected, got = Inbox(), Inbox()
    s.on_connect(connected.put)

    @s.route(ECHO)
    def echo(client, msg):
        got.put(msg.content)
        s.send(vx.Request(ECHO, b"echo:" + msg.content).respond(msg), client)

    s.start()
    py_clients = [peers("3.3.0", "client", "--port", str(s.port), "--echo") for _ in range(2)]
    ports = [p.event("connected")["local_port"] for p in py_clients]
    by_port = {i.port: i for i in (connected.get(), connected.get())}
    infos = [by_port[port] for port in ports]  # infos[k] is py_clients[k]
    assert len(set(infos)) == 2

    # Python client -> our server: request/response, JSON payload, ping.
    r = py_clients[0].cmd("send_and_wait", type=200, payload={"json": {"k": [1, "é"]}})
    assert r["ok"], r
    body = '{"k": [1, "\\u00e9"]}'.encode()
    assert r["hex"] == hexof(b"echo:" + body) and r["id"] == r["sent_id"]
    assert got.get() == body
    ping = py_clients[0].cmd("ping")
    assert ping["ok"] and ping["value"] > 0

    # Our server -> Python clients: send_and_wait (they echo), ping, broadcast with except.
    reply = s.send_and_wait(vx.Request(NOTE, text="hello py"), infos[0], timeout=T)
    assert reply is not None and reply.content == b"echo:hello py" and reply.type is NOTE
    assert isinstance(s.ping_client(infos[1], timeout=T), float)
    assert s.broadcast(vx.Request(CODES[202], b"bc"), except_clients=[infos[0]])
    ev = recv_with(py_clients[1], b"bc")
    assert ev["type"] == 202 and ev["id"] >= 32768


def test_rs_server_full_rejects_veltix_3_3_0(make_server, peers):
    s = make_server(max_connection=1)
    s.start()
    peers("3.3.0", "client", "--port", str(s.port)).event("connected")
    wait_until(lambda: s.is_full)
    second = peers("3.3.0", "client", "--port", str(s.port))
    assert second.event("connect_failed")["error"] == "server_full"


def test_veltix_3_3_0_server_with_rs_client(make_client, peers):
    srv = peers("3.3.0", "server", "--echo")
    port = srv.event("listening")["port"]
    c = make_client(port)
    got = Inbox()
    c.route(NOTE)(lambda r: got.put(r))
    c.on_recv(lambda r: got.put(r))
    assert c.connect()
    srv.event("connect")
    reply = c.send_and_wait(vx.Request(ECHO, text="hi"), timeout=T)
    assert reply is not None and reply.text == "echo:hi"
    assert isinstance(c.ping_server(timeout=T), float)
    big = bytes(range(256)) * 8192  # 2 MiB
    reply = c.send_and_wait(vx.Request(ECHO, big), timeout=T)
    assert reply is not None and reply.content == b"echo:" + big
    # Python server -> our client: a push, a request we must answer, a ping.
    assert srv.cmd("send", client=0, type=201, payload={"text": "push"})["ok"]
    assert got.get().text == "push"
    ping = srv.cmd("ping", client=0)
    assert ping["ok"] and ping["value"] > 0


def test_veltix_3_3_0_server_send_and_wait_to_rs_client(make_client, peers):
    srv = peers("3.3.0", "server")
    port = srv.event("listening")["port"]
    c = make_client(port)
    c.route(CODES[203])(lambda r: c.send(vx.Request(CODES[203], b"ans:" + r.content).respond(r)))
    assert c.connect()
    srv.event("connect")
    r = srv.cmd("send_and_wait", client=0, type=203, payload={"text": "q"})
    assert r["ok"], r
    assert r["hex"] == hexof(b"ans:q") and r["id"] == r["sent_id"]


# ── 1.6.9 (veltix_rs.v1, Gen 1 wire) ──────────────────────────────────────────

V1_ECHO = v1.MessageType(200, "echo")
V1_NOTE = v1.MessageType(201, "note")


def test_v1_server_with_veltix_1_6_9_clients(peers):
    s = v1.Server(v1.ServerConfig(host="127.0.0.1", port=0))
    connected, got = Inbox(), Inbox()
    s.set_callback(v1.Events.ON_CONNECT, connected.put)

    @s.route(V1_ECHO)
    def echo(response, client):  # 1.6 order: (response, client)
        got.put((response.content, response.request_id))
        s.get_sender().send(v1.Request(V1_ECHO, b"echo:" + response.content, request_id=response.request_id),
                            client=client.conn)

    s.start()
    try:
        p = peers("1.6.9", "client", "--port", str(s.port), "--echo")
        p.event("connected")
        info = connected.get()
        assert isinstance(info, v1.ClientInfo)
        info.tags["room"] = "lobby"  # 1.6: a plain dict
        assert info.get_tag("room") == "lobby"
        r = p.cmd("send_and_wait", type=200, payload={"text": "hey"})
        assert r["ok"], r
        content, rid = got.get()
        assert content == b"hey" and isinstance(rid, bytes) and len(rid) == 4
        assert r["hex"] == hexof(b"echo:hey")
        assert p.cmd("ping")["ok"]
        # Our server -> the 1.6.9 client: request/response (it echoes) and ping.
        reply = s.send_and_wait(v1.Request(V1_NOTE, b"ask"), info, timeout=T)
        assert reply is not None and reply.content == b"echo:ask" and len(reply.request_id) == 4
        assert isinstance(s.ping_client(info, timeout=T), int)
        assert s.get_all_clients_sockets() == [info.conn]
        assert s.get_sender().broadcast(v1.Request(V1_NOTE, b"all"), s.get_all_clients_sockets())
        assert recv_with(p, b"all")["type"] == 201
    finally:
        s.close_all()


def test_veltix_1_6_9_server_with_v1_client(peers):
    srv = peers("1.6.9", "server", "--echo")
    port = srv.event("listening")["port"]
    c = v1.Client(v1.ClientConfig(server_addr="127.0.0.1", port=port))
    got = Inbox()
    c.set_callback(v1.Events.ON_RECV, got.put)
    connects = Inbox()
    c.set_callback(v1.Events.ON_CONNECT, lambda: connects.put(True))
    try:
        assert c.connect()
        assert connects.get()
        srv.event("connect")
        reply = c.send_and_wait(v1.Request(V1_ECHO, b"hi"), timeout=T)
        assert reply is not None and reply.content == b"echo:hi" and isinstance(reply.request_id, bytes)
        assert c.get_sender().send(v1.Request(V1_NOTE, b"fire"))
        assert recv_with(srv, b"fire")["type"] == 201
        assert isinstance(c.ping_server(timeout=T), int)
        assert srv.cmd("send", client=0, type=205, payload={"hex": "0102"})["ok"]
        pushed = got.get()
        while pushed.content.startswith(b"echo:"):
            pushed = got.get()
        assert pushed.content == b"\x01\x02" and pushed.type.code == 205
    finally:
        c.disconnect()


def test_v1_api_surface():
    cfg = v1.ServerConfig()
    assert (cfg.buffer_size, cfg.socket_core, cfg.performance_mode) == (
        1024, vx.SocketCore.THREADING, v1.PerformanceMode.BALANCED)
    assert [e.value for e in v1.Events] == ["on_recv", "on_connect", "on_disconnect"]
    assert (v1.HELLO.code, v1.HELLO_ACK.code, v1.PING.code, v1.PONG.code) == (10, 11, 0, 1)
    r = v1.Request(V1_ECHO, b"x")
    assert isinstance(r.request_id, bytes) and len(r.request_id) == 4
    assert v1.Request(V1_ECHO, b"x").request_id != r.request_id
    with pytest.raises(v1.RequestError):
        v1.Request(V1_ECHO, "text")  # type: ignore[arg-type]
    assert v1.MessageType(150, "free_in_1_6").code == 150  # 1.6 did not reserve 0-199
    s = v1.Server(v1.ServerConfig(host="127.0.0.1", port=0, performance_mode=v1.PerformanceMode.HIGH))
    got = Inbox()
    s.set_callback("on_recv", lambda client, response: got.put((client.tags, response.content)))
    s.set_callback("nonsense", lambda: None)  # logs a warning, as 1.6.9 did
    s.start(_on_th=False)
    try:
        c = v1.Client(v1.ClientConfig(server_addr="127.0.0.1", port=s.port))
        assert c.connect()
        assert c.get_sender().send(v1.Request(V1_NOTE, b"fallback"))
        tags, content = got.get()
        assert tags == {} and content == b"fallback"
        c.retry(3)
        assert c.config.retry == 3  # 1.6.9: retry(max_) overwrote config.retry
        c.disconnect()
    finally:
        s.close_all()


def test_handshake_events_name_the_real_veltix_3_3_0_peer(make_server, make_client, peers):
    from veltix_rs.events import ProtocolEvent

    s = make_server()
    done = Inbox()
    s.bus.subscribe(ProtocolEvent.HANDSHAKE_DONE, lambda e, p: done.put(p))
    s.start()
    peers("3.3.0", "client", "--port", str(s.port)).event("connected")
    assert done.get() == {"role": "server", "peer_version": "3.3.0"}

    srv = peers("3.3.0", "server", "--echo")
    c = make_client(srv.event("listening")["port"])
    mine: list = []
    c.bus.subscribe(ProtocolEvent.HANDSHAKE_DONE, lambda e, p: mine.append(p))
    assert c.connect()
    assert mine == [{"role": "client", "peer_version": "3.3.0"}]
