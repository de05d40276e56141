"""veltix_rs.v1: the Veltix **1.6.9** API (the seed API page) on the 1.6 wire (Gen 1: 22-byte
header, framed HELLO/HELLO_ACK handshake), so 1.6.9 peers interoperate.

``import veltix_rs.v1 as veltix`` runs a program written for 1.6.9: ``ServerConfig(host, port,
buffer_size, max_connection, max_message_size, handshake_timeout, max_workers,
performance_mode, socket_core)``, ``Events`` + ``set_callback``, ``get_sender().send(request,
client=client.conn)``, ``get_all_clients_sockets()``, ``start(_on_th=False)``, route handlers
called ``func(response, client)``, plain-dict ``ClientInfo.tags``, 4-byte random ``bytes``
request ids, ``Response.latency``. Sockets, framing and threads are the veltix-rs core.

Differences from 1.6.9: ``ping_client``/``ping_server`` return half the measured round trip in
whole ms (1.6.9 read a one-way time from header timestamps, usually 0); ``Response.timestamp``,
``received_at`` and ``latency`` are 0 (the core does not expose the header timestamp).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import Enum
from typing import Any, Callable, Union

from .. import _native, _types
from .. import client as _client
from .. import server as _server
from .._enums import BufferSize, DisconnectReason, DisconnectState, Mode, SocketCore
from ..exceptions import MessageTypeError, RequestError, SenderError, VeltixError
from ..logger import Logger, LoggerConfig, LogLevel
from ..utils import decode_json, decode_utf8, encode_json, encode_utf8, format_bytes

Response = _native.Response
"""A received message; ``request_id`` is 4 ``bytes``; ``latency``/``timestamp``/``hash``."""

__version__ = "1.6.9"
"""The Veltix API version this module mirrors."""

__all__ = [
    "__version__", "Server", "ServerConfig", "ClientInfo", "Client", "ClientConfig",
    "DisconnectState", "DisconnectReason", "Request", "Response", "Sender", "Mode", "MessageType",
    "SocketCore", "PING", "PONG", "HELLO", "HELLO_ACK", "HEARTBEAT", "ERROR", "INVALID_REQUEST",
    "Events", "PerformanceMode", "Version", "COMPATIBILITY", "BufferSize", "decode_json",
    "decode_utf8", "encode_json", "encode_utf8", "format_bytes", "Logger", "LoggerConfig",
    "LogLevel", "VeltixError", "MessageTypeError", "RequestError", "SenderError",
]

_TABLE: dict[int, "MessageType"] = {}
_types.extra_tables.append(_TABLE)  # type: ignore[arg-type]


class MessageType(_types.MessageType):
    """1.6.9 message type: ``MessageType(code, name=None, description=None)``, code mandatory
    (0-65535), no enforced reservation, no process-wide uniqueness check."""

    __slots__ = ()

    def __init__(self, code: int, name: str | None = None, description: str | None = None) -> None:  # noqa: D107
        if isinstance(code, bool) or not isinstance(code, int) or not 0 <= code <= 65535:
            raise MessageTypeError(f"Code must be an int between 0 and 65535, got: {code!r}")
        self.code = code
        self.name = name or f"type_{code}"
        self.description = description
        _TABLE.setdefault(code, self)


PING = MessageType(0, "ping")
"""PING (0): answered automatically with PONG."""
PONG = MessageType(1, "pong")
"""PONG (1)."""
HEARTBEAT = MessageType(2, "heartbeat")
"""HEARTBEAT (2), 1.6 system type."""
HELLO = MessageType(10, "hello")
"""HELLO (10): the server's handshake message."""
HELLO_ACK = MessageType(11, "hello_ack")
"""HELLO_ACK (11): the client's handshake answer."""
ERROR = MessageType(20, "error")
"""ERROR (20), 1.6 system type."""
INVALID_REQUEST = MessageType(21, "invalid_request")
"""INVALID_REQUEST (21), 1.6 system type."""


class Events(Enum):
    """Events for ``set_callback``."""

    ON_RECV = "on_recv"
    ON_CONNECT = "on_connect"
    ON_DISCONNECT = "on_disconnect"


class PerformanceMode(Enum):
    """1.6.9 performance modes, mapped to the core's write-coalescing policy (LOW coalesces
    writes for up to 1 ms, HIGH writes inline, BALANCED/AUTO adapt)."""

    LOW = "low"
    BALANCED = "balanced"
    HIGH = "high"
    AUTO = "auto"


class Version(Enum):
    """The versions of the 1.6 compatibility table."""

    V1_6_6 = "1.6.6"
    V1_6_8 = "1.6.8"
    V1_6_9 = "1.6.9"


COMPATIBILITY: dict[str, list[str]] = {
    "1.6.9": ["1.6.6", "1.6.8", "1.6.9"],
    "1.6.8": ["1.6.6", "1.6.8", "1.6.9"],
    "1.6.6": ["1.6.6", "1.6.8", "1.6.9"],
}
"""Which peer versions each version accepts in the HELLO handshake."""


@dataclass
class ServerConfig:
    """1.6.9 server settings (no validation, as in 1.6.9). ``socket_core`` is accepted and
    served by the Rust core whatever its value."""

    host: str = "0.0.0.0"
    port: int = 8080
    buffer_size: int = BufferSize.SMALL
    max_connection: int = -1
    max_message_size: int = 10 * 1024 * 1024
    handshake_timeout: float = 5.0
    max_workers: int = 4
    performance_mode: PerformanceMode = PerformanceMode.BALANCED
    socket_core: SocketCore = SocketCore.THREADING


@dataclass
class ClientConfig:
    """1.6.9 client settings."""

    server_addr: str = "127.0.0.1"
    port: int = 8080
    buffer_size: int = BufferSize.SMALL
    max_message_size: int = 10 * 1024 * 1024
    handshake_timeout: float = 5.0
    max_workers: int = 4
    retry: int = 0
    retry_delay: float = 1.0
    socket_core: SocketCore = SocketCore.THREADING
    performance_mode: PerformanceMode = PerformanceMode.BALANCED


class Request(_server.Request):
    """1.6.9 request: ``Request(_type, content: bytes, request_id: bytes | None = None)``; the
    id is a random 4-byte ``bytes`` made at construction."""

    __slots__ = ()

    def __init__(self, _type: MessageType, content: bytes, request_id: bytes | None = None) -> None:  # noqa: D107
        if not isinstance(content, (bytes, bytearray)):
            raise RequestError(f"content must be bytes, got {type(content).__name__}")
        if request_id is None:
            request_id = os.urandom(4)
        if not isinstance(request_id, (bytes, bytearray)) or len(request_id) != 4:
            raise RequestError(f"request_id must be 4 bytes, got {request_id!r}")
        self.type = _type
        self.content = bytes(content)
        self.request_id = bytes(request_id)  # type: ignore[assignment]
        self.flags = 0

    def respond(self, response: Any) -> "Request":
        """Reuse ``response.request_id`` (for the peer's ``send_and_wait``)."""
        self.request_id = response.request_id
        return self


class ClientInfo(_server.ClientInfo):
    """1.6.9 client info: ``conn``, ``addr``, ``ip``, ``port``, ``thread_id``,
    ``handshake_done`` and a plain, mutable ``tags`` dict (with the tag helpers)."""

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(name)

    @property
    def tags(self) -> dict[str, Any]:  # type: ignore[override]
        """The tag dict itself (mutable, as in 1.6.9)."""
        return self._tags

    def _emit(self, event: Any, payload: dict[str, Any]) -> None:
        return None


_ON_RECV = Events.ON_RECV.value
_ON_CONNECT = Events.ON_CONNECT.value
_ON_DISCONNECT = Events.ON_DISCONNECT.value


def _event_name(event: Union[str, Events]) -> str:
    return event.value if isinstance(event, Events) else str(event)


class Sender(_server.Sender):
    """1.6.9 sender: ``send(data, client=conn)``; ``broadcast(data, list_of_client,
    except_clients=None)``."""

    def broadcast(self, data: Any, list_of_client: Any = None, except_clients: Any = None) -> bool:  # type: ignore[override]
        """Send to every client of ``list_of_client`` except ``except_clients``."""
        return super().broadcast(data, list_of_client, except_clients)


class Server(_server.Server):
    """1.6.9 server on the Gen 1 wire. Routes are called ``func(response, client)``;
    ``set_callback(Events.ON_RECV, func(client, response))``, ``ON_CONNECT``/``ON_DISCONNECT``
    ``func(client)`` (one callback per event)."""

    _ROUTE_ORDER_V1 = True
    _CLIENT_INFO = ClientInfo
    _TAG_EVENTS = False

    def __init__(self, config: ServerConfig) -> None:  # noqa: D107
        self._v1_config = config
        self._callbacks: dict[str, Callable[..., Any] | None] = {_ON_CONNECT: None, _ON_DISCONNECT: None}
        cfg = _server.ServerConfig(
            host=config.host, port=config.port, buffer_size=int(config.buffer_size),
            max_connection=config.max_connection, max_message_size=config.max_message_size,
            handshake_timeout=config.handshake_timeout, max_workers=config.max_workers,
        )
        super().__init__(cfg)
        self._sender = Sender(Mode.SERVER, _server=self)
        self.on_connect(lambda c: self._fire(_ON_CONNECT, c))
        self.on_disconnect(lambda c: self._fire(_ON_DISCONNECT, c))

    def _generation(self) -> int:
        return 1

    def _performance_mode(self) -> str:
        return self._v1_config.performance_mode.value

    def _fire(self, event: str, client: Any) -> None:
        f = self._callbacks.get(event)
        if f is not None:
            f(client)

    @property
    def config(self) -> ServerConfig:  # type: ignore[override]
        """The 1.6.9 configuration."""
        return self._v1_config

    def _check_route(self, func: Callable[..., Any], label: str, type_: Any) -> None:
        if not callable(func):
            raise TypeError(f"{label} must be callable")

    def set_callback(self, event: Union[str, Events], func: Callable[..., Any]) -> None:
        """Bind ``ON_RECV`` (``func(client, response)``), ``ON_CONNECT`` or ``ON_DISCONNECT``
        (``func(client)``); an unknown event logs a warning."""
        name = _event_name(event)
        if name == _ON_RECV:
            self._request_handler.on_recv = func
            self._native.on_recv(func, False)
        elif name in self._callbacks:
            self._callbacks[name] = func
        else:
            self._bus.warning("Unknown event: %s", name)

    def get_sender(self) -> Sender:
        """The sender: ``get_sender().send(request, client=client.conn)``."""
        return self._sender  # type: ignore[return-value]

    def get_all_clients_sockets(self) -> list[Any]:
        """The connection handles of every client (for ``Sender.broadcast``)."""
        return [c.conn for c in self.clients]

    def get_clients_sockets_by_tag(self, tag: str, value: Any = None) -> list[Any]:
        """Connection handles of the clients with ``tag`` (equal to ``value`` if given)."""
        return [c.conn for c in self.get_clients_by_tag(tag, value)]

    def start(self, _on_th: bool = False) -> None:  # type: ignore[override]
        """Start serving (non-blocking)."""
        super().start()

    def ping_client(self, client: Any, timeout: float = 5.0) -> int | None:  # type: ignore[override]
        """Latency in whole ms (half the round trip), or None on timeout."""
        rtt = super().ping_client(client, timeout)
        return None if rtt is None else int(rtt / 2)

    def send_and_wait(self, request: Any, client: Any, timeout: float = 5.0) -> Any:
        """Send and wait for the reply with the same 4-byte id; None on timeout/drop."""
        return super().send_and_wait(request, client, timeout)




class Client(_client.Client):
    """1.6.9 client on the Gen 1 wire: ``set_callback(Events.ON_RECV, func(response))``,
    ``ON_CONNECT`` ``func()``, ``ON_DISCONNECT`` ``func(state)``; ``get_sender().send(req)``."""

    def __init__(self, config: ClientConfig) -> None:  # noqa: D107
        self._v1_config = config
        self._callbacks: dict[str, Callable[..., Any] | None] = {_ON_CONNECT: None, _ON_DISCONNECT: None}
        cfg = _client.ClientConfig(
            server_addr=config.server_addr, port=config.port, buffer_size=int(config.buffer_size),
            max_message_size=config.max_message_size, handshake_timeout=config.handshake_timeout,
            max_workers=config.max_workers, retry=config.retry, retry_delay=config.retry_delay,
        )
        super().__init__(cfg)
        self._sender = Sender(Mode.CLIENT, conn=self)
        super().on_connect(lambda: self._fire(_ON_CONNECT))
        super().on_disconnect(lambda s: self._fire(_ON_DISCONNECT, s))

    def _generation(self) -> int:
        return 1

    def _performance_mode(self) -> str:
        return self._v1_config.performance_mode.value

    def _fire(self, event: str, *args: Any) -> None:
        f = self._callbacks.get(event)
        if f is not None:
            f(*args)

    @property
    def config(self) -> ClientConfig:  # type: ignore[override]
        """The 1.6.9 configuration."""
        return self._v1_config

    def set_callback(self, event: Union[str, Events], func: Callable[..., Any]) -> None:
        """Bind ``ON_RECV`` (``func(response)``), ``ON_CONNECT`` (``func()``) or
        ``ON_DISCONNECT`` (``func(state)``)."""
        name = _event_name(event)
        if name == _ON_RECV:
            self._request_handler.on_recv = func
            self._native.on_recv(func)
        elif name in self._callbacks:
            self._callbacks[name] = func
        else:
            self._bus.warning("Unknown event: %s", name)

    def get_sender(self) -> Sender:
        """The sender: ``get_sender().send(request)``."""
        return self._sender  # type: ignore[return-value]

    def ping_server(self, timeout: float = 5.0) -> int | None:  # type: ignore[override]
        """Latency in whole ms (half the round trip), or None on timeout."""
        rtt = super().ping_server(timeout)
        return None if rtt is None else int(rtt / 2)

    def retry(self, max_: int | None = None) -> None:
        """Start a reconnect loop; like 1.6.9, ``max_`` also overwrites ``config.retry``."""
        if max_ is not None:
            self._v1_config.retry = max_
        super().retry(max_)

