"""The 3.3.0 API surface that needs no network: configs, message types, requests, responses,
helpers, exceptions, the bus, signature checks."""

from __future__ import annotations

import json
import struct
import threading
import zlib

import pytest

import veltix_rs as vx
from veltix_rs.events import ClientEvent, ErrorEvent, ServerEvent
from veltix_rs.internal.events import ServerEvent as ServerEvent2

from conftest import ECHO, T


def test_exports_match_veltix_3_3_0():
    expected = {
        "__version__", "Client", "ClientConfig", "DisconnectState", "DisconnectReason", "Server",
        "ServerConfig", "ClientInfo", "Request", "Response", "Sender", "Mode", "MessageType",
        "SocketCore", "enable_rust", "disable_rust", "PING", "PONG", "decode_json", "decode_utf8",
        "encode_json", "encode_utf8", "format_bytes", "BufferSize", "Logger", "LoggerConfig",
        "LogLevel", "VeltixError", "MessageTypeError", "NetworkError", "RequestError",
        "SenderError", "TimeoutError", "InvalidContentError", "ServerFullError",
    }
    assert expected <= set(vx.__all__)
    for name in expected:
        assert getattr(vx, name) is not None
        assert getattr(vx, name).__doc__ or name in ("__version__", "PING", "PONG")
    assert ServerEvent2 is ServerEvent


def test_config_defaults():
    s = vx.ServerConfig()
    assert (s.host, s.port, s.buffer_size, s.max_connection, s.max_message_size) == (
        "0.0.0.0", 8080, 8192, -1, 10 * 1024 * 1024)
    assert (s.handshake_timeout, s.max_workers, s.id_window) == (5.0, 4, 30000)
    assert s.socket_core is vx.SocketCore.RUST
    c = vx.ClientConfig()
    assert (c.server_addr, c.port, c.buffer_size, c.retry, c.retry_delay, c.max_workers) == (
        "127.0.0.1", 8080, 8192, 0, 1.0, 4)
    assert vx.BufferSize.MEDIUM == 8192 and vx.BufferSize.SMALL == 1024


@pytest.mark.parametrize(
    "kw,exc",
    [
        ({"port": "80"}, TypeError),
        ({"port": 70000}, ValueError),
        ({"port": -1}, ValueError),
        ({"max_connection": 0}, ValueError),
        ({"max_workers": 0}, ValueError),
        ({"handshake_timeout": 0}, ValueError),
        ({"handshake_timeout": "5"}, TypeError),
        ({"buffer_size": 0}, ValueError),
        ({"id_window": 0}, ValueError),
        ({"socket_core": "async"}, TypeError),
        ({"host": 1}, TypeError),
        ({"max_message_size": True}, TypeError),
    ],
)
def test_server_config_validation(kw, exc):
    with pytest.raises(exc, match="ServerConfig"):
        vx.ServerConfig(**kw)


@pytest.mark.parametrize(
    "kw,exc",
    [({"retry": -1}, ValueError), ({"retry_delay": 0}, ValueError), ({"port": 1.5}, TypeError),
     ({"server_addr": None}, TypeError)],
)
def test_client_config_validation(kw, exc):
    with pytest.raises(exc, match="ClientConfig"):
        vx.ClientConfig(**kw)


def test_message_types():
    assert vx.PING.code == 0 and vx.PONG.code == 1
    with pytest.raises(vx.MessageTypeError, match="reserved"):
        vx.MessageType(5, "mine")
    with pytest.raises(vx.MessageTypeError, match="already registered"):
        vx.MessageType(200, "again")
    with pytest.raises(vx.MessageTypeError):
        vx.MessageType(65536)
    with pytest.raises(vx.MessageTypeError):
        vx.MessageType(2.5)  # type: ignore[arg-type]
    auto = vx.MessageType("auto_api")
    assert 200 <= auto.code <= 9999 and auto.name == "auto_api"
    auto2 = vx.MessageType(name="auto_api2")
    assert auto2.code != auto.code
    plugin = vx.MessageType(10001)
    assert plugin.name == "type_10001"
    assert vx.MessageType._unregistered(auto.code) == auto
    assert hash(ECHO) == hash(200)
    assert repr(ECHO) == "MessageType(code=200, name='echo')"


def test_request_payloads_and_validation():
    assert vx.Request(ECHO, b"raw").content == b"raw"
    assert vx.Request(ECHO, text="hé").content == "hé".encode()
    assert vx.Request(ECHO, text=b"x").content == b"x"
    obj = {"a": [1, 2], "é": None}
    assert vx.Request(ECHO, json=obj).content == json.dumps(obj).encode()
    for bad in ({}, {"content": b"x", "text": "y"}):
        with pytest.raises(vx.RequestError, match="exactly one payload"):
            vx.Request(ECHO, **bad)
    with pytest.raises(vx.RequestError, match="bytes"):
        vx.Request(ECHO, bytearray(b"x"))  # type: ignore[arg-type]
    with pytest.raises(vx.RequestError):
        vx.Request(ECHO, json={1, 2})
    for rid in (-1, 65536, "1"):
        with pytest.raises(vx.RequestError):
            vx.Request(ECHO, b"", request_id=rid)  # type: ignore[arg-type]
    r = vx.Request(ECHO, b"x" * 30, request_id=7)
    assert "request_id=7" in repr(r) and "..." in repr(r)


def test_request_fields_copy_pickle_and_mutation(echo_server, make_client):
    """The fields live in the native base: they read back, copy and pickle, cannot be joined
    by new attributes, and a send reads what was set last (or refuses what makes no message)."""
    import copy
    import pickle

    r = vx.Request(ECHO, b"abc", request_id=5)
    for c in (copy.copy(r), copy.deepcopy(r), pickle.loads(pickle.dumps(r))):
        assert type(c) is vx.Request
        assert (c.type, c.content, c.request_id, c.flags) == (ECHO, b"abc", 5, 0)
    with pytest.raises(AttributeError):
        r.other = 1  # type: ignore[attr-defined]
    client = make_client(echo_server.port)
    assert client.connect()
    r.content = b"second"
    reply = client.send_and_wait(r, timeout=T)
    assert reply is not None and reply.content == b"echo:second"

    class Index:
        """An int-like id whose conversion reads the request (Python code during the send)."""

        def __index__(self) -> int:
            return 40000 + len(holder.content)

    holder = vx.Request(ECHO, b"ab")
    holder.request_id = Index()
    # No deadlock: the id is converted outside the native lock (a hang fails, not blocks).
    sent: list[bool] = []
    worker = threading.Thread(target=lambda: sent.append(client.send(holder)), daemon=True)
    worker.start()
    worker.join(T)
    assert sent == [True], "a send of a request with an int-like id did not return"
    for bad in (("content", "not bytes"), ("type", object()), ("request_id", -1)):
        broken = vx.Request(ECHO, b"x")
        setattr(broken, *bad)
        assert client.send(broken) is False, bad


def test_request_compile_is_the_gen3_frame():
    frame = vx.Request(ECHO, b"hello", request_id=513).compile()
    magic, flags, code, size, crc, rid = struct.unpack(">2sBHI4sH", frame[:15])
    assert (magic, flags, code, size, rid) == (b"VX", 0, 200, 5, 513)
    assert crc == zlib.crc32(b"hello").to_bytes(4, "big")
    assert frame[15:] == b"hello"


def test_response_from_python():
    r = vx.Response(ECHO, b'{"k": 1}', request_id=9)
    assert r.type is ECHO and r.request_id == 9 and r.content == b'{"k": 1}'
    assert r.text == '{"k": 1}' and r.json == {"k": 1} and r.is_text and r.is_json
    bad = vx.Response(ECHO, b"\xff\xfe")
    assert not bad.is_text and not bad.is_json
    with pytest.raises(vx.InvalidContentError):
        bad.text
    with pytest.raises(vx.InvalidContentError):
        vx.Response(ECHO, b"not json").json
    assert vx.Request(ECHO, b"").respond(r).request_id == 9


def test_helpers():
    assert vx.encode_utf8("é") == "é".encode() and vx.encode_utf8(b"x") == b"x"
    assert vx.decode_utf8(b"ok") == "ok"
    assert vx.encode_json({"a": 1}) == b'{"a": 1}' and vx.decode_json(b"[1]") == [1]
    assert vx.format_bytes(148) == "148 B"
    assert vx.format_bytes(148_000) == "144.5 KB"
    assert vx.format_bytes(3_000_000) == "2.861 MB"
    assert vx.format_bytes(-148_000) == "-144.5 KB"


def test_exception_hierarchy():
    for cls in (vx.MessageTypeError, vx.RequestError, vx.SenderError, vx.NetworkError,
                vx.TimeoutError, vx.InvalidContentError, vx.ServerFullError):
        assert issubclass(cls, vx.VeltixError)
    assert vx.TimeoutError is not TimeoutError


def test_bus_api():
    from veltix_rs.bus import VeltixBus

    bus = VeltixBus()
    seen = []

    def sub(event, payload):
        seen.append((event, payload))

    bus.subscribe(ServerEvent.STARTED, sub)
    with pytest.raises(ValueError):
        bus.subscribe(ServerEvent.STARTED, sub)
    assert bus.has_subscriber(ServerEvent.STARTED, sub) and bus.has_subscribers(ServerEvent.STARTED)
    bus.emit(ServerEvent.STARTED, {"port": 1})
    assert seen == [(ServerEvent.STARTED, {"port": 1})]

    def boom(event, payload):
        raise RuntimeError("x")

    bus.subscribe(ServerEvent.STOPPED, boom)
    errors = bus.emit(ServerEvent.STOPPED)
    assert len(errors) == 1 and errors[0][0] is boom and isinstance(errors[0][1], RuntimeError)
    once = []
    bus.once(ClientEvent.TAG_ADDED, lambda e, p: once.append(p))
    bus.emit(ClientEvent.TAG_ADDED, 1)
    bus.emit(ClientEvent.TAG_ADDED, 2)
    assert once == [1]

    @bus.on([ErrorEvent.SEND, ErrorEvent.ACCEPT])
    def both(event, payload):
        seen.append(event)

    bus.emit(ErrorEvent.ACCEPT)
    assert seen[-1] is ErrorEvent.ACCEPT
    bus.unsubscribe(ServerEvent.STARTED, sub)
    assert not bus.has_subscribers(ServerEvent.STARTED)
    bus.clear()
    assert not bus.has_subscribers(ErrorEvent.SEND)

    class Other(__import__("enum").Enum):
        X = 1

    with pytest.raises(ValueError, match="unknown event"):
        bus.subscribe(Other.X, sub)
    bus.register(Other)
    bus.subscribe(Other.X, sub)


def test_route_signature_checks(make_server, make_client):
    s = make_server()
    t = vx.MessageType("sig_check")
    def bad(response):
        return None

    with pytest.raises(TypeError, match=r"Fix: def bad\(client: ClientInfo, response: Response\)"):
        s.route(t)(bad)
    with pytest.raises(TypeError, match="on_connect"):
        s.on_connect(lambda a, b: None)
    with pytest.raises(TypeError):
        s.on_recv(lambda: None)

    def ok(*args):
        return None

    assert s.route(t)(ok) is ok
    # A second route for the same type is ignored (the decorator still returns the function).
    def other(client, response):
        return None

    assert s.route(t)(other) is other
    assert s.request_handler.get_route(t) is ok
    c = make_client(1)
    with pytest.raises(TypeError, match="response"):
        c.route(t)(lambda client, response: None)
    with pytest.raises(TypeError):
        c.on_connect(lambda x: None)
    with pytest.raises(TypeError):
        c.on_disconnect(lambda: None)


def test_sender_and_mode():
    with pytest.raises(vx.SenderError):
        vx.Sender(vx.Mode.CLIENT)
    assert vx.Mode("server") is vx.Mode.SERVER
    assert not vx.Sender(vx.Mode.SERVER).send("not a request")


def test_logger_api(tmp_path):
    log = vx.Logger(vx.LoggerConfig(level=vx.LogLevel.WARNING, file_path=tmp_path / "v.log"))
    assert vx.Logger.get_instance() is log
    log.warning("hello %s", "file")
    assert log.get_stats()[vx.LogLevel.WARNING] == 1
    assert "hello file" in (tmp_path / "v.log").read_text()
    with pytest.raises(TypeError):
        vx.LoggerConfig(level=20)  # type: ignore[arg-type]
    vx.Logger.reset_instance()
    assert str(vx.LogLevel.SUCCESS) == "SUCCESS"


def test_3_3_0_module_paths():
    from veltix_rs.exceptions import IDsExhaustedError
    from veltix_rs.network._rust import engine_name, rust_enabled
    from veltix_rs.network.request import Request
    from veltix_rs.network.response import Response
    from veltix_rs.network.sender import Mode, Sender
    from veltix_rs.network.system_types import PING
    from veltix_rs.network.types import MessageTypeRegistry

    assert MessageTypeRegistry.get(200) is ECHO and ECHO in MessageTypeRegistry.list_all()
    assert (Request, Response, Sender, Mode, PING) == (vx.Request, vx.Response, vx.Sender, vx.Mode, vx.PING)
    assert rust_enabled() and engine_name() == "rust"
    assert issubclass(IDsExhaustedError, vx.VeltixError)
