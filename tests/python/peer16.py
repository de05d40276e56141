#!/usr/bin/env python3
"""Test peer driving the REAL Python Veltix 1.6.9 (server or client).

Usage:
  peer16.py server --host 127.0.0.1 --port 0 [--max-connections N] [--echo] [...]
  peer16.py client --host H --port P [--echo] [--retry N --retry-delay S] [...]

The stdin/stdout protocol is identical to peer3.py; see peer_common.py and
crates/veltix/tests/support/python.rs. Generation 1 request ids are 4 opaque
bytes: they are reported as big-endian integers ("id") plus "id_hex".
1.6.9-only option: --performance-mode low|balanced|high (socket poll timeout
1.0 / 0.5 / 0.1 s; it is also the sendall() timeout of every socket).
Extra 1.6.9-only command field: "request_id_hex" (raw id bytes, any length;
the library right-pads / truncates to 4 bytes when compiling).
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import peer_common as pc  # noqa: E402

pc.setup_stdio()  # before importing veltix: its Logger captures sys.stdout at import

import veltix  # noqa: E402
from veltix import (  # noqa: E402
    Client,
    ClientConfig,
    Events,
    Logger,
    LogLevel,
    MessageType,
    PerformanceMode,
    Request,
    Server,
    ServerConfig,
)
from veltix.network.types import MessageTypeRegistry  # noqa: E402

GEN = 1


class _UnregisteredType:
    """Stand-in for sending a type code this process has not registered."""

    __slots__ = ("code", "name")

    def __init__(self, code: int) -> None:
        self.code = code
        self.name = f"unregistered_{code}"


def msg_type(code: int):
    t = MessageTypeRegistry.get(int(code))
    return t if t is not None else _UnregisteredType(int(code))


def wire_id(rid: bytes) -> bytes:
    """What struct '4s' puts on the wire for this id (pad with zeros / truncate)."""
    return rid[:4].ljust(4, b"\x00")


def id_fields(rid: bytes, prefix: str = "") -> dict:
    w = wire_id(rid)
    return {prefix + "id": int.from_bytes(w, "big"), prefix + "id_hex": w.hex()}


def make_request(cmd: dict) -> Request:
    spec = pc.payload_from(cmd)
    rid = None
    if cmd.get("request_id") is not None:
        rid = int(cmd["request_id"]).to_bytes(4, "big")
    elif cmd.get("request_id_hex") is not None:
        rid = bytes.fromhex(cmd["request_id_hex"])
    # 1.6.9: Request(type, content_bytes, request_id=bytes); no text=/json=.
    # json payloads are json.dumps(...).encode(), the same bytes 3.3.0's json= makes.
    return Request(msg_type(cmd["type"]), spec.content, request_id=rid)


def sent_fields(req: Request, key: str = "request_id") -> dict:
    w = wire_id(req.request_id)
    return {key: int.from_bytes(w, "big"), key + "_hex": w.hex()}


def describe_response(resp) -> dict:
    d = {"type": resp.type.code}
    d.update(id_fields(resp.request_id))
    d.update(pc.describe(resp.content))
    return d


def echo_request(response) -> Request:
    req = Request(response.type, b"echo:" + response.content)
    req.respond(response)  # copies response.request_id
    return req


def timeout_of(cmd: dict) -> float:
    return float(cmd.get("timeout", 5.0))


def common_config(args) -> dict:
    kw = {"max_message_size": args.max_message_size}
    if args.buffer_size is not None:
        kw["buffer_size"] = args.buffer_size
    if args.workers is not None:
        kw["max_workers"] = args.workers
    if args.handshake_timeout is not None:
        kw["handshake_timeout"] = args.handshake_timeout
    if args.performance_mode is not None:
        kw["performance_mode"] = PerformanceMode[args.performance_mode.upper()]
    return kw


# ── server ────────────────────────────────────────────────────────────────────


def run_server(args) -> None:
    server = Server(
        ServerConfig(
            host=args.host,
            port=args.port,
            max_connection=args.max_connections,
            **common_config(args),
        )
    )
    sender = server.get_sender()
    reg = pc.Registry()

    def on_connect(client) -> None:  # after the HELLO/HELLO_ACK exchange
        idx = reg.idx_of(client)
        pc.emit({"event": "connect", "client": idx, "addr": list(client.addr)})

    gone = set()
    gone_lock = threading.Lock()

    def on_disconnect(client) -> None:
        ev = {"event": "disconnect", "client": reg.known_idx(client), "addr": list(client.addr)}
        key = (ev["client"], tuple(client.addr))
        with gone_lock:
            if key in gone:
                ev["repeat"] = True  # 1.6.9 fires on_disconnect twice on close_client/close_all
            gone.add(key)
        pc.emit(ev)

    def handle(client, response, via: str) -> None:
        ev = {"event": "recv", "client": reg.idx_of(client), "via": via}
        ev.update(describe_response(response))
        pc.emit(ev)
        if args.echo and response.type.code >= 200:
            if not sender.send(echo_request(response), client=client.conn):
                pc.log(f"echo to {client.addr} failed")

    def make_route(code: int):
        def route(response, client) -> None:  # 1.6.9 server routes: (response, client)
            handle(client, response, "route")

        route.__name__ = f"route_{code}"
        return route

    for code in range(200, 211):
        server.route(msg_type(code))(make_route(code))

    def on_recv(client, response) -> None:  # 1.6.9 server on_recv: (client, response)
        handle(client, response, "on_recv")

    server.set_callback(Events.ON_RECV, on_recv)
    server.set_callback(Events.ON_CONNECT, on_connect)
    server.set_callback(Events.ON_DISCONNECT, on_disconnect)
    server.start()
    # 1.6.9 binds in start() but calls listen() later, in its accept thread:
    # wait until the socket really listens before announcing the port.
    lsock = server.socket._sock
    port = lsock.getsockname()[1]
    deadline = time.monotonic() + 10
    while not lsock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        if time.monotonic() > deadline:
            pc.log("server socket never started listening")
            pc.finish(1)
        time.sleep(0.002)
    pc.emit({"event": "listening", "port": port, "version": veltix.__version__})

    def infos():
        return [e.info for e in server.clients]  # 1.6.9: list of ClientEntry

    def c_send(cmd):
        req = make_request(cmd)
        ok = sender.send(req, client=reg.get(cmd["client"]).conn)
        return {"ok": ok, **sent_fields(req)}

    def c_send_and_wait(cmd):
        req = make_request(cmd)
        resp = server.send_and_wait(req, reg.get(cmd["client"]), timeout=timeout_of(cmd))
        if resp is None:
            return {"ok": False, "error": "timeout", **sent_fields(req, "sent_id")}
        d = sent_fields(req, "sent_id")
        d.update(describe_response(resp))
        return d

    def c_ping(cmd):
        client = reg.get(cmd["client"])
        value, ms = pc.timed(lambda: server.ping_client(client, timeout=timeout_of(cmd)))
        if value is None:
            return {"ok": False, "error": "timeout"}
        # value is 1.6.9's Response.latency: one-way integer ms from the PONG timestamp.
        return {"rtt_ms": ms, "value": value}

    def c_broadcast(cmd):
        req = make_request(cmd)
        excl = [reg.get(i).conn for i in cmd.get("except", [])]
        ok = sender.broadcast(req, server.get_all_clients_sockets(), except_clients=excl)
        return {"ok": ok, **sent_fields(req)}

    def c_clients(cmd):
        out = []
        for info in infos():
            idx = reg.known_idx(info)
            if idx is None:  # handshake not finished: no on_connect yet
                continue
            out.append(
                {
                    "client": idx,
                    "addr": list(info.addr),
                    "tags": dict(info.tags),
                    "handshake_done": info.handshake_done,
                }
            )
        out.sort(key=lambda c: c["client"])
        return {"clients": out}

    def c_tag(cmd):
        info = reg.get(cmd["client"])
        value = cmd.get("value")
        if cmd.get("mode", "set") == "add":
            return {"result": info.add_tag(cmd["name"], value)}
        info.tags[cmd["name"]] = value  # 1.6.9 has no set_tag(); tags is a plain dict
        return {"result": True}

    def c_untag(cmd):
        return {"result": reg.get(cmd["client"]).remove_tag(cmd["name"])}

    def c_by_tag(cmd):
        socks = server.get_clients_sockets_by_tag(cmd["name"], cmd.get("value"))
        out = []
        for info in infos():
            if any(s is info.conn for s in socks):
                out.append(reg.idx_of(info))
        return {"clients": sorted(out)}

    def c_close_client(cmd):
        return {"result": server.close_client(reg.get(cmd["client"]))}

    def c_info(cmd):
        return {"version": veltix.__version__, "role": "server", "gen": GEN, "port": port}

    def c_close(cmd):
        server.close_all()
        return {}

    pc.run_command_loop(
        {
            "send": c_send,
            "send_and_wait": c_send_and_wait,
            "ping": c_ping,
            "broadcast": c_broadcast,
            "clients": c_clients,
            "tag": c_tag,
            "untag": c_untag,
            "by_tag": c_by_tag,
            "close_client": c_close_client,
            "info": c_info,
            "close": c_close,
        },
        on_eof=server.close_all,
    )


# ── client ────────────────────────────────────────────────────────────────────


def run_client(args) -> None:
    client = Client(
        ClientConfig(
            server_addr=args.host,
            port=args.port,
            retry=args.retry,
            retry_delay=args.retry_delay,
            **common_config(args),
        )
    )
    manual_during_connect = []

    def handle(response, via: str) -> None:
        ev = {"event": "recv", "via": via}
        ev.update(describe_response(response))
        pc.emit(ev)
        if args.echo and response.type.code >= 200:
            if not client.get_sender().send(echo_request(response)):
                pc.log("echo failed")

    def make_route(code: int):
        def route(response) -> None:  # 1.6.9 client routes: (response)
            handle(response, "route")

        route.__name__ = f"route_{code}"
        return route

    for code in range(200, 211):
        client.route(msg_type(code))(make_route(code))

    def on_recv(response) -> None:
        handle(response, "on_recv")

    def on_connect() -> None:
        pc.emit({"event": "connect"})

    def on_disconnect(state) -> None:
        if state.reason.name == "MANUAL":
            manual_during_connect.append(True)
        pc.emit(
            {
                "event": "disconnect",
                "permanent": state.permanent,
                "attempt": state.attempt,
                "retry_max": state.retry_max,
                "reason": state.reason.name,
            }
        )

    client.set_callback(Events.ON_RECV, on_recv)
    client.set_callback(Events.ON_CONNECT, on_connect)
    client.set_callback(Events.ON_DISCONNECT, on_disconnect)

    def local_port():
        try:
            return client.socket._sock.getsockname()[1]
        except Exception:  # noqa: BLE001 - informative only
            return None

    def do_connect() -> dict:
        manual_during_connect.clear()
        if client.connect():
            return {"connected": True}
        # connect() only calls disconnect() (reason MANUAL) after a handshake
        # timeout; a TCP failure reports reason ERROR instead. A full 1.6.9
        # server never answers, so "server full" shows up as handshake_timeout.
        return {
            "connected": False,
            "error": "handshake_timeout" if manual_during_connect else "connect_failed",
        }

    r = do_connect()
    if r["connected"]:
        pc.emit({"event": "connected", "local_port": local_port()})
    else:
        pc.emit({"event": "connect_failed", "error": r["error"]})

    def c_send(cmd):
        req = make_request(cmd)
        return {"ok": client.get_sender().send(req), **sent_fields(req)}

    def c_send_and_wait(cmd):
        req = make_request(cmd)
        resp = client.send_and_wait(req, timeout=timeout_of(cmd))
        if resp is None:
            return {"ok": False, "error": "timeout", **sent_fields(req, "sent_id")}
        d = sent_fields(req, "sent_id")
        d.update(describe_response(resp))
        return d

    def c_ping(cmd):
        value, ms = pc.timed(lambda: client.ping_server(timeout=timeout_of(cmd)))
        if value is None:
            return {"ok": False, "error": "timeout"}
        return {"rtt_ms": ms, "value": value}

    def c_connect(cmd):
        r = do_connect()
        if r["connected"]:
            r["local_port"] = local_port()
        r["ok"] = r["connected"]
        return r

    def c_disconnect(cmd):
        return {"result": client.disconnect()}

    def c_info(cmd):
        return {
            "version": veltix.__version__,
            "role": "client",
            "gen": GEN,
            "is_connected": client.is_connected,
        }

    def c_close(cmd):
        client.disconnect()
        return {}

    def server_only(cmd):
        raise pc.CommandError(f"{cmd.get('cmd')} is a server-only command")

    pc.run_command_loop(
        {
            "send": c_send,
            "send_and_wait": c_send_and_wait,
            "ping": c_ping,
            "connect": c_connect,
            "disconnect": c_disconnect,
            "info": c_info,
            "close": c_close,
            "broadcast": server_only,
            "clients": server_only,
            "tag": server_only,
            "untag": server_only,
            "by_tag": server_only,
            "close_client": server_only,
        },
        on_eof=client.disconnect,
    )


def main() -> None:
    p = pc.base_parser("peer16.py")
    p.add_argument(
        "--performance-mode", choices=["low", "balanced", "high"], default=None
    )
    args = p.parse_args()
    # 1.6.9's Logger is a singleton created at import time; a config passed
    # later is ignored, so adjust the live instance instead.
    logger = Logger.get_instance()
    logger.config.stream = sys.stderr
    logger.config.use_colors = False
    logger._formatter.use_colors = False
    logger.set_level(LogLevel[args.log_level.upper()])
    for code in pc.USER_CODES:
        MessageType(code, f"t{code}")
    if args.role == "server":
        run_server(args)
    else:
        run_client(args)


if __name__ == "__main__":
    main()
