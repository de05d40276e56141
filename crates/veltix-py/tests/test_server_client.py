"""Server and client behaviour over loopback: messaging, ping, broadcast, tags, lifecycle,
reconnects, the events of the bus, and where veltix_rs is better than Veltix."""

from __future__ import annotations

import socket
import threading
import time

import pytest

import veltix_rs as vx
from veltix_rs.events import ClientEvent, ErrorEvent, MessageEvent, ReconnectEvent, ServerEvent

from conftest import ECHO, NOTE, T, Inbox, wait_until


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("core", list(vx.SocketCore))
def test_echo_round_trip_on_every_socket_core(make_server, make_client, core):
    s = make_server(socket_core=core)

    @s.route(ECHO)
    def echo(client, msg):
        assert s.send(vx.Request(ECHO, b"echo:" + msg.content).respond(msg), client)

    s.start()
    c = make_client(s.port, socket_core=core)
    assert c.connect() is True and c.is_connected
    req = vx.Request(ECHO, text="hi")
    reply = c.send_and_wait(req, timeout=T)
    assert reply is not None
    assert reply.text == "echo:hi" and reply.type is ECHO
    assert reply.request_id == req.request_id and 0 <= reply.request_id < 32768
    explicit = c.send_and_wait(vx.Request(ECHO, b"x", request_id=4242), timeout=T)
    assert explicit.request_id == 4242 and explicit.content == b"echo:x"


def test_server_send_and_wait_and_client_routes(echo_server, make_client):
    c = make_client(echo_server.port)
    got = Inbox()

    @c.route(NOTE)
    def note(resp):
        got.put(resp)
        c.send(vx.Request(NOTE, b"ack:" + resp.content).respond(resp))

    connected = Inbox()
    echo_server.on_connect(connected.put)
    assert c.connect()
    info = connected.get()
    assert isinstance(info, vx.ClientInfo) and info.handshake_done and info.ip == "127.0.0.1"
    assert echo_server.clients == [info]
    reply = echo_server.send_and_wait(vx.Request(NOTE, b"q"), info, timeout=T)
    assert reply is not None and reply.content == b"ack:q" and reply.request_id >= 32768
    assert got.get().content == b"q"
    with pytest.raises(TypeError):
        echo_server.send_and_wait(vx.Request(NOTE, b"q"), info.conn)


def test_ping(echo_server, make_client):
    c = make_client(echo_server.port)
    assert c.connect()
    rtt = c.ping_server(timeout=T)
    assert isinstance(rtt, float) and 0 < rtt < T * 1000
    info = echo_server.clients[0]
    assert isinstance(echo_server.ping_client(info, timeout=T), float)
    box = Inbox()
    echo_server.ping_client_async(info, box.put, timeout=T)
    assert isinstance(box.get(), float)


def test_on_recv_is_the_fallback(make_server, make_client):
    s = make_server()
    routed, fallback = Inbox(), Inbox()
    s.route(ECHO)(lambda client, msg: routed.put(msg.content))
    s.on_recv(lambda client, msg: fallback.put((msg.type.code, msg.content)))
    s.start()
    c = make_client(s.port)
    assert c.connect()
    assert c.send(vx.Request(NOTE, b"n")) and c.send(vx.Request(ECHO, b"e"))
    assert fallback.get() == (201, b"n") and routed.get() == b"e"


def test_broadcast_except_clients(make_server, make_client):
    s = make_server()
    s.start()
    inboxes = []
    for _ in range(3):
        box = Inbox()
        c = make_client(s.port)
        c.route(NOTE)(lambda r, box=box: box.put(r.content))
        assert c.connect()
        inboxes.append(box)
    wait_until(lambda: len(s.clients) == 3, what="3 clients")
    by_port = {}
    for info in s.clients:
        by_port[info.port] = info
    excluded = s.clients[0]
    assert s.broadcast(vx.Request(NOTE, b"all"), except_clients=[excluded]) is True
    # Then a marker to everyone: on one connection order is kept, so a client that gets the
    # marker first did not get the broadcast.
    assert s.broadcast(vx.Request(NOTE, b"marker"))
    firsts = sorted(box.get() for box in inboxes)
    assert firsts == [b"all", b"all", b"marker"]
    assert s.broadcast(vx.Request(NOTE, b"conn"), except_clients=[excluded.conn])
    assert vx.Server(vx.ServerConfig(port=0)).broadcast(vx.Request(NOTE, b"none")) is True


def test_tags_and_tag_events(echo_server, make_client):
    events = []
    echo_server.bus.subscribe([ClientEvent.TAG_ADDED, ClientEvent.TAG_UPDATED, ClientEvent.TAG_REMOVED,
                               ClientEvent.TAG_CLEARED], lambda e, p: events.append((e, p)))
    for _ in range(2):
        assert make_client(echo_server.port).connect()
    wait_until(lambda: len(echo_server.clients) == 2)
    a, b = echo_server.clients
    assert a.add_tag("room", "lobby") and not a.add_tag("room", "other")
    assert b.set_tag("room", "kitchen") and b.add_tag("admin")
    assert a.get_tag("room") == "lobby" and a.get_tag("missing") is None
    assert b.has_all_tags(["room", "admin"]) and not a.has_all_tags(["room", "admin"])
    assert a.has_any_tags(["admin", "room"]) and not a.has_any_tags([]) and a.has_all_tags([])
    assert set(echo_server.get_clients_by_tag("room")) == {a, b}
    assert echo_server.get_clients_by_tag("room", "kitchen") == [b]
    assert echo_server.get_clients_by_tag("admin") == [b]
    tags = a.tags
    tags["x"] = 1
    assert "x" not in a.tags
    assert a.remove_tag("room") and not a.remove_tag("room")
    b.clear_tags()
    assert b.tags == {}
    kinds = [e for e, _ in events]
    assert kinds[:2] == [ClientEvent.TAG_ADDED, ClientEvent.TAG_UPDATED]
    assert events[0][1] == {"client": a.addr, "tag": "room", "value": "lobby"}
    assert ClientEvent.TAG_REMOVED in kinds and ClientEvent.TAG_CLEARED in kinds
    with pytest.raises(AttributeError, match="set_tag"):
        a.nickname = "x"
    with pytest.raises(AttributeError, match="Did you mean 'tags'"):
        a.tag
    assert repr(a) == f"ClientInfo(ip='127.0.0.1', port={a.port}, id={a.thread_id})"
    assert a != b and len({a, b, echo_server.clients[0]}) == 2


def test_close_client_and_disconnect_once(echo_server, make_client):
    gone = Inbox()
    echo_server.on_disconnect(gone.put)
    states = Inbox()
    c = make_client(echo_server.port)
    c.on_disconnect(states.put)
    assert c.connect()
    wait_until(lambda: len(echo_server.clients) == 1)
    info = echo_server.clients[0]
    assert echo_server.close_client(info) is True
    assert gone.get() == info
    st = states.get()
    assert st == vx.DisconnectState(True, 0, 0, vx.DisconnectReason.SERVER_CLOSED)
    assert echo_server.close_client(info) is False
    assert echo_server.clients == []
    wait_until(lambda: not c.is_connected)
    # Better than Veltix: a send on a dead link returns False and a wait returns None at once.
    send_errors = Inbox()
    c.bus.subscribe(ErrorEvent.SEND, lambda e, p: send_errors.put(p))
    assert c.send(vx.Request(ECHO, b"x")) is False
    assert send_errors.get()["mode"] == "client"
    assert echo_server.send(vx.Request(ECHO, b"x"), info) is False
    t0 = time.monotonic()
    assert c.send_and_wait(vx.Request(ECHO, b"x"), timeout=T) is None
    assert c.ping_server(timeout=T) is None
    assert time.monotonic() - t0 < T / 2


def test_send_and_wait_returns_none_at_once_when_the_link_drops(make_server, make_client):
    s = make_server()
    s.route(ECHO)(lambda client, msg: s.close_client(client))  # never replies: drops instead
    s.start()
    c = make_client(s.port)
    assert c.connect()
    t0 = time.monotonic()
    assert c.send_and_wait(vx.Request(ECHO, b"x"), timeout=60.0) is None
    assert time.monotonic() - t0 < 30.0


def test_send_and_wait_timeout(make_server, make_client):
    s = make_server()
    s.route(ECHO)(lambda client, msg: None)  # never answers
    s.start()
    c = make_client(s.port)
    assert c.connect()
    events = []
    c.bus.subscribe([MessageEvent.PENDING_REGISTERED, MessageEvent.PENDING_TIMEOUT], lambda e, p: events.append(e))
    t0 = time.monotonic()
    assert c.send_and_wait(vx.Request(ECHO, b"x"), timeout=0.2) is None
    assert time.monotonic() - t0 >= 0.2
    assert events == [MessageEvent.PENDING_REGISTERED, MessageEvent.PENDING_TIMEOUT]


def test_close_all_restart_and_events(make_server, make_client):
    s = make_server()
    s.route(ECHO)(lambda client, msg: s.send(vx.Request(ECHO, msg.content).respond(msg), client))
    life = []
    s.bus.subscribe([ServerEvent.STARTED, ServerEvent.STOPPED], lambda e, p: life.append((e, p)))
    gone = Inbox()
    s.on_disconnect(gone.put)
    s.start()
    port = s.port
    assert life == [(ServerEvent.STARTED, {"host": "127.0.0.1", "port": port})]
    clients = [make_client(port) for _ in range(2)]
    for c in clients:
        assert c.connect()
    wait_until(lambda: len(s.clients) == 2)
    s.close_all()
    assert len({gone.get(), gone.get()}) == 2 and gone.empty()
    assert life[-1] == (ServerEvent.STOPPED, {"host": "127.0.0.1", "port": port})
    assert not s.is_running and s.clients == []
    s.close_all()  # idempotent
    s.restart()
    assert s.port == port
    c = make_client(port)
    assert c.connect()
    assert c.send_and_wait(vx.Request(ECHO, b"again"), timeout=T).content == b"again"


def test_wait_until_closed_returns_after_close_all(echo_server):
    done = threading.Event()
    t = threading.Thread(target=lambda: (echo_server.wait_until_closed(), done.set()))
    t.start()
    assert not done.wait(0.05)
    echo_server.close_all()
    assert done.wait(T)
    t.join(T)


def test_full_server_rejects_with_server_full_error(make_server, make_client):
    s = make_server(max_connection=1)
    s.start()
    assert make_client(s.port).connect()
    wait_until(lambda: s.is_full)
    c2 = make_client(s.port)
    states = Inbox()
    c2.on_disconnect(states.put)
    with pytest.raises(vx.ServerFullError):
        c2.connect()
    assert states.get() == vx.DisconnectState(False, 0, 0, vx.DisconnectReason.SERVER_CLOSED)


def test_connect_failure_reports_error():
    c = vx.Client(vx.ClientConfig(port=free_port(), handshake_timeout=2.0))
    states = Inbox()
    c.on_disconnect(states.put)
    net = []
    c.bus.subscribe(ErrorEvent.NETWORK, lambda e, p: net.append(p))
    assert c.connect() is False
    assert states.get() == vx.DisconnectState(True, 0, 0, vx.DisconnectReason.ERROR)
    assert not c.running and net and "host" in net[0]
    c.wait_until_closed()  # returns at once: permanently closed


def test_disconnect_is_manual_and_releases_wait(echo_server, make_client):
    c = make_client(echo_server.port)
    states = Inbox()
    c.on_disconnect(states.put)
    connects = Inbox()
    c.on_connect(lambda: connects.put(True))
    assert c.connect()
    assert connects.get() is True
    assert c.running
    assert c.disconnect() is True
    assert states.get() == vx.DisconnectState(True, 0, 0, vx.DisconnectReason.MANUAL)
    c.wait_until_closed()
    assert not c.running and not c.is_connected


def test_reconnect_after_server_restart(make_server, make_client):
    s = make_server()
    s.route(ECHO)(lambda client, msg: s.send(vx.Request(ECHO, msg.content).respond(msg), client))
    s.start()
    c = make_client(s.port, retry=200, retry_delay=0.05)
    states, connects, rec = Inbox(), Inbox(), Inbox()
    c.on_disconnect(states.put)
    c.on_connect(lambda: connects.put(1))
    c.bus.subscribe([ReconnectEvent.SUCCESS], lambda e, p: rec.put(p))
    assert c.connect()
    connects.get()
    s.close_all()
    first = states.get()
    assert (first.permanent, first.attempt, first.reason) == (False, 0, vx.DisconnectReason.SERVER_CLOSED)
    s.start()
    assert connects.get() == 1  # on_connect fires again after the reconnect
    assert "attempt" in rec.get()
    assert c.send_and_wait(vx.Request(ECHO, b"back"), timeout=T).content == b"back"


def test_sender_objects(echo_server, make_client):
    c = make_client(echo_server.port)
    got = Inbox()
    c.route(NOTE)(lambda r: got.put(r.content))
    assert c.connect()
    assert c.sender.send(vx.Request(ECHO, b"via-sender"))
    assert c.send("not a request") is False  # type: ignore[arg-type]

    class Lookalike:
        type, content, request_id = ECHO, b"x", None

    assert c.send(Lookalike()) is False  # type: ignore[arg-type]
    wait_until(lambda: len(echo_server.clients) == 1)
    info = echo_server.clients[0]
    assert echo_server.sender.send(vx.Request(NOTE, b"1"), info)
    assert echo_server.sender.send(vx.Request(NOTE, b"2"), info.conn)
    assert echo_server.sender.broadcast(vx.Request(NOTE, b"3"))
    assert echo_server.sender.broadcast(vx.Request(NOTE, b"4"), list_of_clients=[info])
    assert got.take(4) == [b"1", b"2", b"3", b"4"]


def test_large_message_round_trip(echo_server, make_client):
    c = make_client(echo_server.port)
    assert c.connect()
    big = bytes(range(256)) * (4 * 1024 * 4)  # 4 MiB
    reply = c.send_and_wait(vx.Request(ECHO, big), timeout=T)
    assert reply is not None and reply.content == b"echo:" + big
    too_big = vx.Request(ECHO, b"x" * (10 * 1024 * 1024))
    assert c.send(too_big) is False  # over max_message_size: refused, not sent


def test_memory_is_bounded_when_a_peer_stops_reading(make_server, make_client):
    """The client's handler blocks, so the client stops reading (its inbound queue is bounded),
    then the server's outbound queue to it fills up: send returns False instead of growing."""
    s = make_server()
    s.start()
    c = make_client(s.port)
    release = threading.Event()
    received = []
    c.route(NOTE)(lambda r: (release.wait(T), received.append(len(r.content))))
    assert c.connect()
    wait_until(lambda: len(s.clients) == 1)
    info = s.clients[0]
    chunk = vx.Request(NOTE, b"x" * (1024 * 1024))
    sent = 0
    refused = False
    for _ in range(400):  # 400 MiB if nothing pushed back
        if not s.send(chunk, info):
            refused = True
            break
        sent += 1
    release.set()
    assert refused, "the outbound queue never filled"
    assert sent < 200, f"{sent} MiB accepted for a peer that does not read"
    assert s.stats()["dropped"]["queue_full"] >= 1
    wait_until(lambda: len(received) == sent, what="the client drains what was accepted")


def test_message_events_received_routed_unhandled(make_server, make_client):
    s = make_server()
    routed_type = vx.MessageType("ev_routed")
    stray_type = vx.MessageType("ev_stray")
    s.route(routed_type)(lambda client, msg: None)
    events = Inbox()
    s.bus.subscribe([MessageEvent.RECEIVED, MessageEvent.ROUTED, MessageEvent.UNHANDLED],
                    lambda e, p: events.put((e, p)))
    s.start()
    c = make_client(s.port)
    assert c.connect()
    assert c.send(vx.Request(routed_type, b"abc"))
    e1, p1 = events.get()
    e2, p2 = events.get()
    assert e1 is MessageEvent.RECEIVED and p1["type"] is routed_type and p1["length"] == 3
    assert p1["client"][0] == "127.0.0.1"
    assert (e2, p2) == (MessageEvent.ROUTED, {"type": routed_type, "route": "registered", "source": "server"})
    assert c.send(vx.Request(stray_type, b"zz"))
    assert events.get()[0] is MessageEvent.RECEIVED
    assert events.get() == (MessageEvent.UNHANDLED, {"type": stray_type, "length": 2, "source": "server"})
    s.bus.clear()
    assert c.send(vx.Request(routed_type, b"quiet"))
    assert c.send_and_wait(vx.Request(vx.PING, b""), timeout=T) is not None  # PONG: same id
    assert events.empty()


def test_start_on_a_busy_port_raises_oserror(make_server):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        s = make_server(port=taken.getsockname()[1])
        with pytest.raises(OSError):
            s.start()
        assert not s.is_running
    s2 = make_server()
    s2.start()
    s2.start()  # already started: a warning, nothing else
    assert s2.is_running


def test_client_lifecycle_and_log_events(echo_server):
    from veltix_rs.events import LogEvent

    c = vx.Client(vx.ClientConfig(port=echo_server.port))
    seen = []
    c.bus.subscribe([ClientEvent.CONNECTING, ClientEvent.ON_CONNECT, ClientEvent.DISCONNECTING,
                     ClientEvent.ON_DISCONNECT], lambda e, p: seen.append((e, p)))
    logs = []
    c.bus.subscribe(LogEvent.INFO, lambda e, p: logs.append(p))
    assert c.connect()
    c.disconnect()
    kinds = [e for e, _ in seen]
    assert kinds == [ClientEvent.CONNECTING, ClientEvent.ON_CONNECT, ClientEvent.DISCONNECTING,
                     ClientEvent.ON_DISCONNECT]
    assert seen[0][1] == {"host": "127.0.0.1", "port": echo_server.port} and seen[1][1] is None
    assert seen[3][1].reason is vx.DisconnectReason.MANUAL
    assert any("connected to" in line for line in logs)


def test_reconnect_events_when_every_attempt_fails():
    c = vx.Client(vx.ClientConfig(port=free_port(), retry=2, retry_delay=0.01, handshake_timeout=2.0))
    states, rec = [], []
    c.on_disconnect(states.append)
    c.bus.subscribe(ReconnectEvent, lambda e, p: rec.append((e, p)))
    assert c.connect() is False
    got = [(s.permanent, s.attempt, s.retry_max) for s in states]
    assert got == [(False, 0, 2), (False, 1, 2), (False, 2, 2), (True, 2, 2)]
    assert all(s.reason is vx.DisconnectReason.ERROR for s in states)
    assert rec == [
        (ReconnectEvent.ATTEMPT, {"attempt": 1, "max_retry": 2}),
        (ReconnectEvent.FAIL, {"attempt": 1}),
        (ReconnectEvent.ATTEMPT, {"attempt": 2, "max_retry": 2}),
        (ReconnectEvent.FAIL, {"attempt": 2}),
    ]


def test_close_client_by_id(echo_server, make_client):
    assert make_client(echo_server.port).connect()
    wait_until(lambda: len(echo_server.clients) == 1)
    info = echo_server.clients[0]
    assert echo_server.close_client(None, id_=info.thread_id) is True  # type: ignore[arg-type]
    assert echo_server.close_client(None, id_=10**9) is False  # type: ignore[arg-type]
    wait_until(lambda: echo_server.clients == [])


def test_stop_retry_cancels_the_reconnect_loop():
    c = vx.Client(vx.ClientConfig(port=free_port(), retry=10_000, retry_delay=0.05, handshake_timeout=2.0))
    states = Inbox()
    c.on_disconnect(states.put)
    cancelled = []
    c.bus.subscribe(ReconnectEvent.CANCELLED, lambda e, p: cancelled.append(p))
    result = []
    t = threading.Thread(target=lambda: result.append(c.connect()))
    t.start()
    first = states.get()
    assert (first.permanent, first.attempt) == (False, 0)
    c.stop_retry()
    t.join(T)
    assert result == [False]
    last = first
    while not last.permanent:
        last = states.get()
    assert last.attempt < 10_000 and not c.running
    # 3.3.0: CANCELLED only when a cancelled attempt connected; these attempts never did.
    assert cancelled == []


def test_stop_retry_during_an_attempt_that_connects_emits_cancelled(make_server):
    s = make_server()
    calls, entered, release = [], threading.Event(), threading.Event()

    @s.authenticate
    def hold_the_second(request):
        calls.append(request.port)
        if len(calls) >= 2:  # the reconnect attempt: held until the test has called stop_retry
            entered.set()
            release.wait(T)
        return True

    s.start()
    c = vx.Client(vx.ClientConfig(port=s.port, retry=5, retry_delay=0.01, handshake_timeout=T))
    cancelled, connects = Inbox(), Inbox()
    c.bus.subscribe(ReconnectEvent.CANCELLED, lambda e, p: cancelled.put(p))
    assert c.connect()
    wait_until(lambda: len(s.clients) == 1)
    assert s.close_client(s.clients[0]) is True
    assert entered.wait(T)
    c.stop_retry()
    release.set()
    assert cancelled.get() == {"attempt": 1}
    wait_until(lambda: not c.is_connected)
    c.disconnect()


def test_retry_reconnects_in_the_background(make_server):
    s = make_server()
    s.start()
    port = s.port
    c = vx.Client(vx.ClientConfig(port=port))  # retry=0: a drop is permanent
    connects, states = Inbox(), Inbox()
    c.on_connect(lambda: connects.put(1))
    c.on_disconnect(states.put)
    assert c.connect()
    connects.get()
    s.close_all()
    assert states.get().permanent
    s.start()
    c.retry(50)
    assert connects.get() == 1
    assert c.is_connected and c.config.retry == 0  # 3.3.0: retry(max_) does not change config
    c.disconnect()


def test_stats(echo_server, make_client):
    c = make_client(echo_server.port)
    assert c.connect()
    assert c.send_and_wait(vx.Request(ECHO, b"abc"), timeout=T) is not None
    st = echo_server.stats()
    assert st["connections"] == 1 and st["connections_opened"] == 1
    assert st["frames_in"] >= 1 and st["bytes_in"] >= 3 + 15
    assert set(st["dropped"]) >= {"queue_full", "closed", "unrouted"}
    cs = c.stats()
    assert cs["frames_out"] >= 1 and cs["frames_in"] >= 1


def test_responses_kept_past_their_callback_keep_their_content(make_server, make_client):
    """Response payloads are copied to ``bytes`` lazily; one a callback keeps (or reads later,
    after many more frames went through the same read buffer) still has its own content."""
    s = make_server()
    kept: list = []
    done = Inbox()

    @s.route(ECHO)
    def keep(client, msg):
        kept.append(msg)
        if len(kept) == 2000:
            done.put(True)

    s.start()
    c = make_client(s.port)
    assert c.connect()
    for i in range(2000):
        assert c.send(vx.Request(ECHO, b"m%05d" % i + b"." * (i % 50)))
    assert done.get()
    assert [m.content for m in kept] == [b"m%05d" % i + b"." * (i % 50) for i in range(2000)]
    assert kept[7].text == "m00007" + "." * 7 and kept[7].type == ECHO


def test_a_response_the_callback_did_not_keep_is_reused_without_mixing_messages(
    make_server, make_client
):
    """A dispatcher refills a Response that its callback did not keep with the next message
    (no Python object is allocated per message); every callback still sees its own message
    (content, text, json, type, request_id), on both sides, and the ones kept, every 7th,
    keep theirs and stay distinct objects."""
    import json

    n = 3000
    s = make_server()
    seen: list = []
    kept: list = []
    done = Inbox()

    @s.route(ECHO)
    def on_server(client, msg):
        i = msg.json["i"]
        seen.append((i, msg.text == json.dumps({"i": i, "pad": "x" * (i % 40)}), msg.type == ECHO,
                     msg.request_id == 1000 + i))
        if i % 7 == 0:
            kept.append(msg)
        s.send(vx.Request(NOTE, b"r%05d" % i), client)
        if i == n - 1:
            done.put(True)

    s.start()
    c = make_client(s.port)
    got: list = []
    c_kept: list = []
    c_done = Inbox()

    @c.route(NOTE)
    def on_client(msg):
        got.append(msg.content)
        if len(got) % 5 == 0:
            c_kept.append(msg)
        if len(got) == n:
            c_done.put(True)

    assert c.connect()
    for i in range(n):
        body = json.dumps({"i": i, "pad": "x" * (i % 40)}).encode()
        assert c.send(vx.Request(ECHO, body, request_id=1000 + i))
    assert done.get() and c_done.get()
    assert seen == [(i, True, True, True) for i in range(n)]
    assert [m.json["i"] for m in kept] == list(range(0, n, 7))
    assert all(m.text == json.dumps({"i": m.json["i"], "pad": "x" * (m.json["i"] % 40)}) for m in kept)
    assert len({id(m) for m in kept}) == len(kept)
    assert got == [b"r%05d" % i for i in range(n)]
    assert [m.content for m in c_kept] == [b"r%05d" % i for i in range(4, n, 5)]
    assert len({id(m) for m in c_kept}) == len(c_kept)
