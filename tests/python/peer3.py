#!/usr/bin/env python3
"""Test peer driving the REAL Python Veltix 3.3.0 (server or client).

Usage:
  peer3.py server --host 127.0.0.1 --port 0 [--max-connections N] [--echo] [...]
  peer3.py client --host H --port P [--echo] [--retry N --retry-delay S] [...]

The stdin/stdout protocol is identical to peer16.py; see peer_common.py and
crates/veltix/tests/support/python.rs.
3.3.0-only option: --socket-core async|threading (library default: async).
"""

from __future__ import annotations

import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import peer_common as pc  # noqa: E402

pc.setup_stdio()  # before importing veltix: its Logger captures sys.stdout

import veltix  # noqa: E402
from veltix import (  # noqa: E402
    Client,
    ClientConfig,
    Logger,
    LoggerConfig,
    LogLevel,
    MessageType,
    Request,
    Server,
    ServerConfig,
    ServerFullError,
    SocketCore,
)
from veltix.network.types import MessageTypeRegistry  # noqa: E402

GEN = 3


class _UnregisteredType:
    """Stand-in for sending a type code this process has not registered."""

    __slots__ = ("code", "name")

    def __init__(self, code: int) -> None:
        self.code = code
        self.name = f"unregistered_{code}"


def msg_type(code: int):
    t = MessageTypeRegistry.get(int(code))
    return t if t is not None else _UnregisteredType(int(code))


def make_request(cmd: dict) -> Request:
    spec = pc.payload_from(cmd)
    t = msg_type(cmd["type"])
    rid = cmd.get("request_id")
    if rid is not None:
        rid = int(rid)
    if spec.kind == "text":
        return Request(t, text=spec.value, request_id=rid)
    if spec.kind == "json":
        return Request(t, json=spec.value, request_id=rid)
    return Request(t, content=spec.content, request_id=rid)


def describe_response(resp) -> dict:
    d = {"type": resp.type.code, "id": resp.request_id}
    d.update(pc.describe(resp.content))
    return d


def echo_request(response) -> Request:
    req = Request(response.type, content=b"echo:" + response.content)
    req.respond(response)
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
    if args.socket_core is not None:
        kw["socket_core"] = SocketCore[args.socket_core.upper()]
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
    reg = pc.Registry()

    def on_connect(client) -> None:
        idx = reg.idx_of(client)
        pc.emit({"event": "connect", "client": idx, "addr": list(client.addr)})

    gone = set()
    gone_lock = threading.Lock()

    def on_disconnect(client) -> None:
        # Also fires for connections that failed the handshake (never connected):
        # those get "client": null instead of consuming an index.
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
            if not server.send(echo_request(response), client):
                pc.log(f"echo to {client.addr} failed")

    def make_route(code: int):
        def route(client, response) -> None:  # 3.3.0: (client, response)
            handle(client, response, "route")

        route.__name__ = f"route_{code}"
        return route

    for code in range(200, 211):
        server.route(msg_type(code))(make_route(code))

    def on_recv(client, response) -> None:  # fallback when no route matches
        handle(client, response, "on_recv")

    server.on_recv(on_recv)
    server.on_connect(on_connect)
    server.on_disconnect(on_disconnect)
    server.start()
    port = server.socket._sock.getsockname()[1]  # bind + listen are synchronous in 3.3.0
    pc.emit({"event": "listening", "port": port, "version": veltix.__version__})

    def c_send(cmd):
        req = make_request(cmd)
        return {"ok": server.send(req, reg.get(cmd["client"])), "request_id": req.request_id}

    def c_send_and_wait(cmd):
        req = make_request(cmd)
        resp = server.send_and_wait(req, reg.get(cmd["client"]), timeout=timeout_of(cmd))
        if resp is None:
            return {"ok": False, "error": "timeout", "sent_id": req.request_id}
        d = {"sent_id": req.request_id}
        d.update(describe_response(resp))
        return d

    def c_ping(cmd):
        client = reg.get(cmd["client"])
        value, ms = pc.timed(lambda: server.ping_client(client, timeout=timeout_of(cmd)))
        if value is None:
            return {"ok": False, "error": "timeout"}
        return {"rtt_ms": ms, "value": value}

    def c_broadcast(cmd):
        req = make_request(cmd)
        excl = [reg.get(i) for i in cmd.get("except", [])]
        return {"ok": server.broadcast(req, except_clients=excl), "request_id": req.request_id}

    def c_clients(cmd):
        out = []
        for info in server.clients:
            idx = reg.known_idx(info)
            if idx is None:  # handshake still running: no on_connect yet
                continue
            out.append(
                {
                    "client": idx,
                    "addr": list(info.addr),
                    "tags": info.tags,
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
        return {"result": info.set_tag(cmd["name"], value)}

    def c_untag(cmd):
        return {"result": reg.get(cmd["client"]).remove_tag(cmd["name"])}

    def c_by_tag(cmd):
        infos = server.get_clients_by_tag(cmd["name"], cmd.get("value"))
        return {"clients": sorted(reg.idx_of(i) for i in infos)}

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

    def handle(response, via: str) -> None:
        ev = {"event": "recv", "via": via}
        ev.update(describe_response(response))
        pc.emit(ev)
        if args.echo and response.type.code >= 200:
            if not client.send(echo_request(response)):
                pc.log("echo failed")

    def make_route(code: int):
        def route(response) -> None:  # 3.3.0 client: (response)
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
        pc.emit(
            {
                "event": "disconnect",
                "permanent": state.permanent,
                "attempt": state.attempt,
                "retry_max": state.retry_max,
                "reason": state.reason.name,
            }
        )

    client.on_recv(on_recv)
    client.on_connect(on_connect)
    client.on_disconnect(on_disconnect)

    def local_port():
        try:
            return client.socket._sock.getsockname()[1]
        except Exception:  # noqa: BLE001 - informative only
            return None

    def do_connect() -> dict:
        try:
            ok = client.connect()
        except ServerFullError as e:
            return {"connected": False, "error": "server_full", "detail": str(e)}
        if not ok:
            return {"connected": False, "error": "connect_failed"}
        return {"connected": True}

    r = do_connect()
    if r["connected"]:
        pc.emit({"event": "connected", "local_port": local_port()})
    else:
        pc.emit({"event": "connect_failed", "error": r["error"]})

    def c_send(cmd):
        req = make_request(cmd)
        return {"ok": client.send(req), "request_id": req.request_id}

    def c_send_and_wait(cmd):
        req = make_request(cmd)
        resp = client.send_and_wait(req, timeout=timeout_of(cmd))
        if resp is None:
            return {"ok": False, "error": "timeout", "sent_id": req.request_id}
        d = {"sent_id": req.request_id}
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
    p = pc.base_parser("peer3.py")
    p.add_argument("--socket-core", choices=["async", "threading"], default=None)
    args = p.parse_args()
    Logger.get_instance(
        LoggerConfig(level=LogLevel[args.log_level.upper()], use_colors=False, stream=sys.stderr)
    )
    for code in pc.USER_CODES:
        MessageType(code=code, name=f"t{code}")
    if args.role == "server":
        run_server(args)
    else:
        run_client(args)


if __name__ == "__main__":
    main()
