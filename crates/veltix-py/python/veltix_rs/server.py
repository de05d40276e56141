"""``Server`` and ``ClientInfo`` (the 3.3.0 API) on the veltix-rs core."""

from __future__ import annotations

import difflib
import json
import threading
import time
import weakref
from typing import Any, Callable, Iterable

from . import _native, _runtime
from .auth import AuthRequest, normalize
from ._enums import Mode
from ._runtime import log
from ._sig import check_signature
from ._types import MessageType
from .bus import VeltixBus
from .config import ServerConfig
from .events import ClientEvent, ErrorEvent, MessageEvent, ProtocolEvent, ReconnectEvent, ServerEvent
from .request import Request, Response

__all__ = ["Server", "ClientInfo"]

_CLIENTINFO_ATTRS = (
    "conn", "addr", "ip", "port", "thread_id", "handshake_done", "tags", "add_tag", "set_tag",
    "has_tag", "has_all_tags", "has_any_tags", "get_tag", "remove_tag", "clear_tags", "id",
    "is_connected", "tls",
)


class ClientInfo:
    """One connected client, as the server sees it: ``addr``/``ip``/``port``, a process-wide
    unique ``thread_id`` (its connection id; equality and hash use it), ``handshake_done`` and
    thread-safe tags (``add_tag``, ``set_tag``, ``has_tag``, ``has_all_tags``, ``has_any_tags``,
    ``get_tag``, ``remove_tag``, ``clear_tags``; ``tags`` is a copy). Tag changes emit
    ``ClientEvent.TAG_*`` on the server's bus. Unknown attributes raise ``AttributeError`` with a
    hint (use tags for per-client data). One object per connection: callbacks always receive
    the same ``ClientInfo`` for the same client. veltix_rs extra: ``tls`` (a ``TlsInfo`` on a
    TLS server, else None); the tags an authenticate hook set are there from the start.
    """

    __slots__ = ("_h", "_tags", "_lock", "_bus")

    def __init__(self, handle: _native.ClientHandle, bus: VeltixBus | None = None) -> None:
        object.__setattr__(self, "_h", handle)
        object.__setattr__(self, "_tags", {})
        object.__setattr__(self, "_lock", threading.Lock())
        object.__setattr__(self, "_bus", bus)

    def __getattr__(self, name: str) -> Any:
        hint = difflib.get_close_matches(name, _CLIENTINFO_ATTRS, n=1)
        dym = f" Did you mean '{hint[0]}'?" if hint else ""
        raise AttributeError(
            f"'ClientInfo' has no attribute '{name}'.{dym} "
            "To store per-client data use client.set_tag(name, value)."
        )

    def __setattr__(self, name: str, value: Any) -> None:
        hint = difflib.get_close_matches(name, _CLIENTINFO_ATTRS, n=1)
        dym = f" Did you mean '{hint[0]}'?" if hint else ""
        raise AttributeError(
            f"cannot set '{name}' on ClientInfo.{dym} "
            "To store per-client data use client.set_tag(name, value) or add_tag()."
        )

    @property
    def conn(self) -> _native.ClientHandle:
        """The connection handle (accepted wherever Veltix takes a client socket)."""
        return self._h

    @property
    def addr(self) -> tuple[str, int]:
        """``(ip, port)`` of the peer."""
        return (self._h.ip, self._h.port)

    @property
    def ip(self) -> str:
        """The peer's IP."""
        return self._h.ip

    @property
    def port(self) -> int:
        """The peer's port."""
        return self._h.port

    @property
    def thread_id(self) -> int:
        """The connection's unique id."""
        return self._h.id

    @property
    def id(self) -> int:
        """The connection's unique id (same as ``thread_id``)."""
        return self._h.id

    @property
    def handshake_done(self) -> bool:
        """True once the handshake succeeded."""
        return self._h.handshake_done

    @property
    def is_connected(self) -> bool:
        """True while the connection is open."""
        return self._h.is_connected

    @property
    def tls(self) -> _native.TlsInfo | None:
        """veltix_rs extra: the TLS session (``protocol``, ``cipher``, and under mutual TLS the
        client certificate's ``peer_subject`` / ``peer_cn``), or None on a plaintext server."""
        return self._h.tls

    @property
    def tags(self) -> dict[str, Any]:
        """A copy of the tags."""
        with self._lock:
            return dict(self._tags)

    def _emit(self, event: ClientEvent, payload: dict[str, Any]) -> None:
        bus = self._bus
        if bus is not None and bus.has_subscribers(event):
            bus.emit(event, payload)

    def add_tag(self, name: str, value: Any | None = None) -> bool:
        """Add a tag; False (and no change) if it exists. Emits ``TAG_ADDED``."""
        with self._lock:
            if name in self._tags:
                return False
            self._tags[name] = value
        self._emit(ClientEvent.TAG_ADDED, {"client": self.addr, "tag": name, "value": value})
        return True

    def set_tag(self, name: str, value: Any | None = None) -> bool:
        """Create or overwrite a tag; always True. Emits ``TAG_UPDATED``."""
        with self._lock:
            self._tags[name] = value
        self._emit(ClientEvent.TAG_UPDATED, {"client": self.addr, "tag": name, "value": value})
        return True

    def has_tag(self, name: str) -> bool:
        """Is the tag present?"""
        with self._lock:
            return name in self._tags

    def has_all_tags(self, names: Iterable[str]) -> bool:
        """Are all of ``names`` present? (True for an empty list.)"""
        with self._lock:
            return all(n in self._tags for n in names)

    def has_any_tags(self, names: Iterable[str]) -> bool:
        """Is any of ``names`` present? (False for an empty list.)"""
        with self._lock:
            return any(n in self._tags for n in names)

    def get_tag(self, name: str) -> Any | None:
        """The tag's value, or None."""
        with self._lock:
            return self._tags.get(name)

    def remove_tag(self, name: str) -> bool:
        """Remove a tag; False if absent. Emits ``TAG_REMOVED``."""
        with self._lock:
            if name not in self._tags:
                return False
            del self._tags[name]
        self._emit(ClientEvent.TAG_REMOVED, {"client": self.addr, "tag": name})
        return True

    def clear_tags(self) -> None:
        """Remove every tag. Emits ``TAG_CLEARED``."""
        with self._lock:
            self._tags.clear()
        self._emit(ClientEvent.TAG_CLEARED, {"client": self.addr})

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ClientInfo):
            return self._h.id == other._h.id
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._h.id)

    def __repr__(self) -> str:
        return f"ClientInfo(ip='{self.ip}', port={self.port}, id={self.thread_id})"


def _handle(client: Any) -> _native.ClientHandle | None:
    if isinstance(client, ClientInfo):
        return client._h
    if isinstance(client, _native.ClientHandle):
        return client
    return None


def _payload(request: Any) -> tuple[int, bytes, int | None] | None:
    if not isinstance(request, Request):
        return None
    rid = request.request_id
    if isinstance(rid, (bytes, bytearray)):  # a 1.6 id
        rid = int.from_bytes(rid, "big")
    return request.type.code, request.content, rid


class RequestHandler:
    """Route table view (3.3.0's ``server.request_handler``): ``has_route``, ``get_route``,
    ``unregister_route``, ``copy_routes``."""

    def __init__(self, owner: Any) -> None:
        self._owner = weakref.ref(owner)
        self.routes: dict[int, Callable[..., Any]] = {}
        self.on_recv: Callable[..., Any] | None = None

    def has_route(self, type_: MessageType) -> bool:
        """Is a route registered for ``type_``?"""
        return type_.code in self.routes

    def get_route(self, type_: MessageType) -> Callable[..., Any] | None:
        """The route of ``type_``, or None."""
        return self.routes.get(type_.code)

    def copy_routes(self) -> dict[int, Callable[..., Any]]:
        """A copy of ``{code: handler}``."""
        return dict(self.routes)

    def register_route(self, type_: MessageType, fn: Callable[..., Any]) -> bool:
        """Register ``fn`` for ``type_``; False (warning) if one is registered already."""
        owner = self._owner()
        if owner is None:
            return False
        return owner._register_route(type_, fn)

    def unregister_route(self, type_: MessageType) -> bool:
        """Remove the route of ``type_``; True if there was one."""
        owner = self._owner()
        if owner is None or type_.code not in self.routes:
            return False
        del self.routes[type_.code]
        owner._native.unroute(type_.code)
        if owner.bus.has_subscribers(MessageEvent.ROUTE_UNREGISTERED):
            owner.bus.emit(MessageEvent.ROUTE_UNREGISTERED, {"type": type_, "name": type_.name})
        return True


class Server:
    """A Veltix server whose sockets, framing, handshakes, routing, correlation and pings run
    in the veltix-rs core; Python callbacks run on ``max_workers`` handler threads (one
    connection's messages in arrival order, a batch of them under one GIL acquisition).

    Differences from Veltix 3.3.0 (improvements that break no working program): ``send`` and
    ``broadcast`` return False when the link is dead or its outbound queue is full (bounded
    memory when a peer stops reading); ``send_and_wait``/``ping_client`` return None as soon
    as the client drops; replies are matched per connection; ``on_connect`` runs on the handler
    pool (before any message of that client), not on a network thread.
    """

    _ROUTE_ORDER_V1 = False
    _CLIENT_INFO: type = ClientInfo
    _TAG_EVENTS = True

    def __init__(self, config: ServerConfig) -> None:
        if not isinstance(config, ServerConfig):
            raise TypeError(f"Server(config) needs a ServerConfig, got {type(config).__name__}")
        self._config = config
        self._bus = VeltixBus()
        if config.id_window > 32768:
            self._bus.warning("id_window %d capped to 32768 (the server half of the id space)", config.id_window)
        self._request_handler = RequestHandler(self)
        self._closed = threading.Event()
        self._closed.set()
        self._state_lock = threading.RLock()
        self._started = False
        self._bound: tuple[str, int] | None = None
        self._native = self._make_native()
        self._sender = _sender_for_server(self)
        _runtime.track(self)

    # -- construction -----------------------------------------------------------------------

    def _generation(self) -> int:
        return 3

    def _performance_mode(self) -> str:
        return "balanced"

    def _make_native(self) -> _native.NativeServer:
        me = weakref.ref(self)
        bus = self._bus
        info_cls = type(self)._CLIENT_INFO
        tag_bus = bus if self._TAG_EVENTS else None

        def wrap(handle: _native.ClientHandle) -> ClientInfo:
            info = info_cls(handle, tag_bus)
            tags = handle.tags_json()  # set by the authenticate hook
            if tags is not None:
                info._tags.update(json.loads(tags))
            return info

        def on_connect(client: ClientInfo) -> None:
            s = me()
            if s is not None:
                s._dispatch_connect(client)

        def on_disconnect(client: ClientInfo) -> None:
            s = me()
            if s is not None:
                s._dispatch_disconnect(client)

        def on_observe(client: ClientInfo, response: Response, kind: str) -> None:
            _observed(bus, "server", response, kind, {"client": client.addr})

        c = self._config
        native = _native.NativeServer(
            c.host, c.port, int(c.buffer_size), c.max_connection, c.max_message_size,
            float(c.handshake_timeout), c.max_workers, c.id_window, self._generation(),
            self._performance_mode(), wrap, on_connect, on_disconnect,
            _runtime.make_error_reporter(lambda: bus), on_observe,
            tls_cert=c.tls_cert, tls_key=c.tls_key, tls_client_ca=c.tls_client_ca,
            on_event=_event_forwarder(bus, "server"),
        )
        bus._watchers.append(lambda: native.set_observe(_observing(bus)))
        bus._watchers.append(lambda: native.set_events(_event_mask(bus)))
        native.set_events(_event_mask(bus))
        return native

    def _dispatch_connect(self, client: ClientInfo) -> None:
        self._bus.info("client connected: %s:%s", client.ip, client.port)
        _runtime.report_bus_errors(self._bus, self._bus.emit(ServerEvent.ON_CONNECT, client), "on_connect")

    def _dispatch_disconnect(self, client: ClientInfo) -> None:
        self._bus.info("client disconnected: %s:%s", client.ip, client.port)
        _runtime.report_bus_errors(self._bus, self._bus.emit(ServerEvent.ON_DISCONNECT, client), "on_disconnect")

    # -- properties -------------------------------------------------------------------------

    @property
    def config(self) -> ServerConfig:
        """The configuration."""
        return self._config

    @property
    def bus(self) -> VeltixBus:
        """This server's event bus (kept across ``restart()``)."""
        return self._bus

    @property
    def sender(self) -> "Sender":
        """The low-level ``Sender`` (SERVER mode)."""
        return self._sender

    @property
    def request_handler(self) -> RequestHandler:
        """The route table."""
        return self._request_handler

    @property
    def socket(self) -> _native.NativeServer:
        """The native (Rust) server object."""
        return self._native

    @property
    def clients(self) -> list[ClientInfo]:
        """Snapshot of the connected clients (handshake done)."""
        return self._native.clients()

    @property
    def is_full(self) -> bool:
        """True when ``max_connection`` is reached."""
        return self._native.is_full

    @property
    def is_running(self) -> bool:
        """True while listening."""
        return self._native.is_running

    @property
    def port(self) -> int | None:
        """The bound port while running (useful with ``port=0``), else None."""
        return self._bound[1] if self._bound and self._native.is_running else None

    @property
    def address(self) -> tuple[str, int] | None:
        """The bound ``(host, port)`` while running, else None."""
        return self._bound if self._native.is_running else None

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Bind and start serving in the background (non-blocking). Raises ``OSError`` if the
        address cannot be bound, ``TlsConfigError`` (a ``ValueError``) if a TLS file is
        missing, unreadable, not PEM or the key does not match its certificate; warns and does
        nothing if already started. Emits ``ServerEvent.STARTED {"host", "port"}``."""
        with self._state_lock:
            if self._native.is_running:
                self._bus.warning("Server already started")
                return
            self._bound = self._native.start()
            self._started = True
            self._closed.clear()
        self._bus.info("server listening on %s:%s", *self._bound)
        self._bus.emit(ServerEvent.STARTED, {"host": self._config.host, "port": self._bound[1]})

    def close_all(self) -> None:
        """Stop accepting and close every client (``on_disconnect`` fires once per client);
        releases ``wait_until_closed``; emits ``ServerEvent.STOPPED``. Idempotent (warns the
        second time). The GIL is released while connections close."""
        with self._state_lock:
            if not self._native.is_running and self._closed.is_set():
                if self._started:
                    self._bus.warning("Server already closed")
                return
        # Not under the lock: a callback may call close_all() while another thread's close_all
        # waits for the callbacks (the core's close_all is idempotent).
        self._native.close_all()
        with self._state_lock:
            if self._closed.is_set():
                return
            self._closed.set()
        port = self._bound[1] if self._bound else self._config.port
        self._bus.emit(ServerEvent.STOPPED, {"host": self._config.host, "port": port})

    def restart(self) -> None:
        """``close_all()`` then ``start()`` on the same address; routes, ``on_recv`` and bus
        subscribers are kept."""
        self.close_all()
        self.start()

    def wait_until_closed(self) -> None:
        """Block (GIL released) until ``close_all()``; Ctrl+C (KeyboardInterrupt) closes the
        server and returns."""
        try:
            while not self._closed.wait(1.0):
                pass
        except KeyboardInterrupt:
            self._bus.info("KeyboardInterrupt: closing the server")
            self.close_all()

    def _shutdown(self) -> None:
        if self._native.is_running:
            self.close_all()

    # -- routing ----------------------------------------------------------------------------

    def _check_route(self, func: Callable[..., Any], label: str, type_: MessageType | None) -> None:
        check_signature(func, label=label, nargs=2, dispatched="client, response",
                        fix="client: ClientInfo, response: Response",
                        target=type_.name if type_ is not None else None)

    def _register_route(self, type_: MessageType, func: Callable[..., Any]) -> bool:
        if type_.code in self._request_handler.routes:
            self._bus.warning("Route for %s already registered, ignored", type_.name)
            return False
        self._request_handler.routes[type_.code] = func
        self._native.route(type_.code, func, self._ROUTE_ORDER_V1)
        if self._bus.has_subscribers(MessageEvent.ROUTE_REGISTERED):
            self._bus.emit(MessageEvent.ROUTE_REGISTERED, {"type": type_, "name": type_.name})
        return True

    def route(self, type_: MessageType) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator: handle messages of ``type_`` with ``func(client, response)`` on the
        handler pool. Raises ``TypeError`` at registration if ``func`` cannot take those two
        arguments. A second route for the same type logs a warning and is ignored."""
        if not hasattr(type_, "code"):
            raise TypeError(f"route() needs a MessageType, got {type(type_).__name__}")

        def deco(func: Callable[..., Any]) -> Callable[..., Any]:
            self._check_route(func, "Route handler", type_)
            self._register_route(type_, func)
            return func

        return deco

    def on_recv(self, func: Callable[[ClientInfo, Response], Any]) -> Callable[..., Any]:
        """Set the fallback ``func(client, response)`` for messages without a route (replaces
        the previous one)."""
        self._check_route(func, "on_recv callback", None)
        self._request_handler.on_recv = func
        self._native.on_recv(func, self._ROUTE_ORDER_V1)
        return func

    def authenticate(self, func: Callable[[AuthRequest], Any]) -> Callable[..., Any]:
        """veltix_rs extra (usable as a decorator): let ``func(request)`` decide which clients
        get in. It is called once per client that completed the protocol handshake, before
        ``on_connect``, with an ``AuthRequest``: ``peer`` (ip, port), ``meta`` (the hello's
        ``meta`` dict, e.g. ``{"token": ...}`` from ``ClientConfig(token=...)``; ``{}`` for
        Python Veltix and Gen 1 clients), ``token``, ``peer_version``, ``tls`` and, under mutual
        TLS, ``certificate_subject`` / ``certificate_cn``.

        Return ``True``/``None`` to accept, ``Accept(tags={...})`` (or a tags dict) to accept
        and tag the client, ``False`` (reason ``"unauthorized"``), a reason ``str`` or
        ``Reject(reason)`` to refuse it (the client gets ``{"error": reason}``; see
        ``veltix_rs.auth`` for every shape). An exception rejects the client ("authentication
        failed") and is logged with its traceback.

        The hook runs on a core thread (tokio's blocking pool, never a handler-pool worker),
        taking the GIL only for the call, within ``handshake_timeout``: a client whose hook has
        not answered by then is disconnected. Refusals are counted in
        ``stats()["handshake_failures"]["auth"]``. Replaces any previous hook."""
        check_signature(func, label="authenticate hook", nargs=1, dispatched="request",
                        fix="request: AuthRequest")
        bus = self._bus
        name = _runtime.func_name(func)

        def hook(request: AuthRequest) -> tuple[bool, str, str | None]:
            try:
                return normalize(func(request))
            except Exception as exc:  # noqa: BLE001 - a failing hook rejects, never crashes
                log.error("authenticate hook %s raised %s: %s; client %s:%s rejected", name,
                          type(exc).__name__, exc, request.ip, request.port,
                          exc_info=(type(exc), exc, exc.__traceback__))
                if bus.has_subscribers(ErrorEvent.CALLBACK):
                    bus.emit(ErrorEvent.CALLBACK, {"error": str(exc), "func": name})
                return (False, "authentication failed", None)

        self._native.authenticate(hook)
        return func

    def on_connect(self, func: Callable[[ClientInfo], Any]) -> Callable[..., Any]:
        """Add ``func(client)``, called after a client's handshake, before its messages."""
        check_signature(func, label="on_connect callback", nargs=1, dispatched="client",
                        fix="client: ClientInfo")
        self._bus.subscribe(ServerEvent.ON_CONNECT, lambda e, p: func(p))
        return func

    def on_disconnect(self, func: Callable[[ClientInfo], Any]) -> Callable[..., Any]:
        """Add ``func(client)``, called once per client that was connected."""
        check_signature(func, label="on_disconnect callback", nargs=1, dispatched="client",
                        fix="client: ClientInfo")
        self._bus.subscribe(ServerEvent.ON_DISCONNECT, lambda e, p: func(p))
        return func

    # -- messaging --------------------------------------------------------------------------

    def _sent(self, request: Request, broadcast: bool = False) -> None:
        if self._bus.has_subscribers(MessageEvent.SENT):
            payload: dict[str, Any] = {"type": request.type, "length": len(request.content), "mode": "server"}
            if broadcast:
                payload["broadcast"] = True
            self._bus.emit(MessageEvent.SENT, payload)

    def send(self, request: Request, client: "ClientInfo | _native.ClientHandle") -> bool:
        """Send one message to one client; False if it could not be queued (closed link, full
        outbound queue, invalid message)."""
        h = client._h if type(client) is self._CLIENT_INFO else _handle(client)
        if h is None or not isinstance(request, Request):
            return False
        ok = h.send_request(request)
        if self._bus.watching_sends:
            if ok:
                self._sent(request)
            else:
                _send_failed(self._bus, "server")
        return ok

    def broadcast(self, request: Request, except_clients: "list[Any] | None" = None) -> bool:
        """Send one message (encoded once) to every connected client except ``except_clients``
        (``ClientInfo``s or handles); True if it was queued to all of them (also with no
        clients)."""
        p = _payload(request)
        if p is None:
            return False
        ids = [h.id for h in (_handle(c) for c in (except_clients or ())) if h is not None]
        ok = self._native.broadcast(p[0], p[1], p[2], ids)
        if ok:
            self._sent(request, broadcast=True)
        return ok

    def send_and_wait(self, request: Request, client: ClientInfo, timeout: float = 5.0) -> Response | None:
        """Send and block (GIL released) until this client replies with the same request id
        (any type). None on timeout, on send failure, or at once if the client drops.
        ``TypeError`` if ``client`` is not a ``ClientInfo``."""
        if not isinstance(client, ClientInfo):
            raise TypeError(f"send_and_wait() needs a ClientInfo, got {type(client).__name__}")
        return _wait(self._bus, request, lambda code, content, rid: client._h.send_and_wait(code, content, rid, float(timeout)), timeout)

    def ping_client(self, client: ClientInfo, timeout: float = 5.0) -> float | None:
        """Round-trip time of a PING to ``client`` in ms (float), or None on timeout/drop."""
        h = _handle(client)
        if h is None:
            raise TypeError(f"ping_client() needs a ClientInfo, got {type(client).__name__}")
        return h.ping(float(timeout))

    def ping_client_async(self, client: ClientInfo, callback: Callable[[float | None], Any], timeout: float = 5.0) -> None:
        """Ping in a daemon thread and call ``callback(ms or None)`` (None if the ping
        raised)."""

        def run() -> None:
            try:
                result = self.ping_client(client, timeout)
            except Exception:  # noqa: BLE001
                result = None
            try:
                callback(result)
            except Exception as e:  # noqa: BLE001
                _runtime.make_error_reporter(lambda: self._bus)(callback, e)

        threading.Thread(target=run, name="veltix-ping", daemon=True).start()

    # -- clients ----------------------------------------------------------------------------

    def close_client(self, client: ClientInfo, id_: int | None = None) -> bool:
        """Close one client (queued data is flushed first). With ``id_``, the client is looked
        up by id. False (and a warning) if it is not connected."""
        if id_ is not None:
            target = next((c for c in self.clients if c.thread_id == id_), None)
        else:
            target = client if isinstance(client, ClientInfo) else None
        h = _handle(target) if target is not None else None
        if h is None or not self._native.close_client(h):
            self._bus.warning("close_client: client not found")
            return False
        return True

    def get_clients_by_tag(self, tag: str, value: Any = None) -> list[ClientInfo]:
        """Clients that have ``tag`` (``value=None``) or whose ``tag`` equals ``value``."""
        if value is None:
            return [c for c in self.clients if c.has_tag(tag)]
        return [c for c in self.clients if c.has_tag(tag) and c.get_tag(tag) == value]

    def stats(self) -> dict[str, Any]:
        """veltix_rs extra: the core's counters since the server was created: ``connections``
        (open now), ``connections_opened``, ``frames_in``/``bytes_in``, ``frames_out``/
        ``bytes_out``, ``dropped`` (``queue_full``, ``closed``, ``pongs``, ``unrouted``),
        ``rejected``, ``refused``, ``handshake_failures`` (by reason, including ``tls``: failed
        TLS handshakes, and ``auth``: clients the authenticate hook refused or did not answer for
        in time), ``keepalive_timeouts``."""
        import json

        return json.loads(self._native.stats_json())

    def __repr__(self) -> str:
        return f"Server(host={self._config.host!r}, port={self.port or self._config.port}, running={self.is_running})"


def _send_failed(bus: VeltixBus, mode: str) -> None:
    if bus.has_subscribers(ErrorEvent.SEND):
        bus.emit(ErrorEvent.SEND, {"error": "send failed: link closed, outbound queue full or invalid message", "mode": mode})


_OBSERVED = (MessageEvent.RECEIVED, MessageEvent.ROUTED, MessageEvent.UNHANDLED)


# The core's connection events (`veltix::observe`, see `_native.NativeServer.set_events`): which
# bus events each bit of the mask feeds. Only the watched groups are copied out of the I/O
# threads (PING/PONG are hot-path events, as in 3.3.0).
_EVENT_BITS: tuple[tuple[int, tuple[Any, ...]], ...] = (
    (1, (ProtocolEvent.PING,)),
    (2, (ProtocolEvent.PONG,)),
    (4, (ProtocolEvent.HANDSHAKE_START, ProtocolEvent.HANDSHAKE_DONE, ProtocolEvent.HANDSHAKE_FAIL)),
    (8, (ServerEvent.CLIENT_REJECTED, ErrorEvent.CONNECTION_REFUSED)),
    (16, (ErrorEvent.ACCEPT,)),
    (32, (ErrorEvent.HANDLER,)),
    (64, (ReconnectEvent.CANCELLED,)),
)


def _event_mask(bus: VeltixBus) -> int:
    return sum(bit for bit, events in _EVENT_BITS if any(bus.has_subscribers(e) for e in events))


def _event_forwarder(bus: VeltixBus, role: str) -> Callable[..., None]:
    """``on_event(kind, *args)`` for the native layer: turns the core's connection events into
    3.3.0's bus events and payloads. Runs on the package's event thread (``veltix-py-events``),
    in the order the events happened; ``connect()`` and ``ON_CONNECT`` wait for it, so the
    handshake events are on the bus before them."""
    peer = "client" if role == "server" else "server"

    def emit(event: Any, payload: Any) -> None:
        _runtime.report_bus_errors(bus, bus.emit(event, payload), event.name)

    def on_event(kind: str, *args: Any) -> None:
        if kind == "ping":
            emit(ProtocolEvent.PING, {"request_id": args[0], "from": peer})
        elif kind == "pong":
            emit(ProtocolEvent.PONG, {"request_id": args[0]})
        elif kind == "handshake_start":
            emit(ProtocolEvent.HANDSHAKE_START, {"role": role})
        elif kind == "handshake_done":
            emit(ProtocolEvent.HANDSHAKE_DONE, {"role": role, "peer_version": args[0]})
        elif kind == "handshake_fail":
            payload: dict[str, Any] = {"role": role, "reason": args[0]}
            if args[1] is not None:
                payload["peer_version"] = args[1]
            emit(ProtocolEvent.HANDSHAKE_FAIL, payload)
        elif kind == "server_full":
            addr, current, max_client = args
            emit(ErrorEvent.CONNECTION_REFUSED, {"max_client": max_client, "current": current, "addr": addr})
            emit(
                ServerEvent.CLIENT_REJECTED,
                {"max_client": max_client, "current": current, "reason": "server_full", "addr": addr},
            )
        elif kind == "accept":
            emit(ErrorEvent.ACCEPT, {"error": args[0]})
        elif kind == "protocol":
            addr, reason = args
            source = str(addr) if role == "server" else "server"
            emit(ErrorEvent.HANDLER, {"error": reason, "source": source})
        elif kind == "reconnect_cancelled":
            emit(ReconnectEvent.CANCELLED, {"attempt": args[0]})

    return on_event


def _observing(bus: VeltixBus) -> bool:
    return any(bus.has_subscribers(e) for e in _OBSERVED)


_unhandled_lock = threading.Lock()
_unhandled_state = {"last": 0.0, "dropped": 0}


def _unhandled_warning(mtype: Any, length: int) -> None:
    """Warn about a message nobody handles: at most once a second, with the count since."""
    now = time.monotonic()
    with _unhandled_lock:
        _unhandled_state["dropped"] += 1
        if now - _unhandled_state["last"] < 1.0:
            return
        n, _unhandled_state["dropped"], _unhandled_state["last"] = _unhandled_state["dropped"], 0, now
    log.warning("no handler for message type %s (%d bytes): dropped (%d unhandled since the last warning)",
                mtype, length, n)


def _observed(bus: VeltixBus, side: str, response: Response, kind: str, origin: dict[str, Any]) -> None:
    """``RECEIVED`` + ``ROUTED``/``UNHANDLED`` for one message delivered to Python (3.3.0
    payloads); an unhandled message is also logged as a warning."""
    mtype = response.type
    length = len(response.content)
    if bus.has_subscribers(MessageEvent.RECEIVED):
        bus.emit(MessageEvent.RECEIVED, {"type": mtype, "length": length, **origin})
    if kind == "unhandled":
        _unhandled_warning(mtype, length)
        if bus.has_subscribers(MessageEvent.UNHANDLED):
            bus.emit(MessageEvent.UNHANDLED, {"type": mtype, "length": length, "source": side})
    elif bus.has_subscribers(MessageEvent.ROUTED):
        bus.emit(MessageEvent.ROUTED, {"type": mtype, "route": kind, "source": side})


def _wait(bus: VeltixBus, request: Request, call: Callable[[int, bytes, int | None], Response | None], timeout: float) -> Response | None:
    p = _payload(request)
    if p is None:
        return None
    if bus.has_subscribers(MessageEvent.PENDING_REGISTERED):
        bus.emit(MessageEvent.PENDING_REGISTERED, {"request_id": p[2]})
    reply = call(*p)
    if reply is None:
        if bus.has_subscribers(MessageEvent.PENDING_TIMEOUT):
            bus.emit(MessageEvent.PENDING_TIMEOUT, {"request_id": p[2], "timeout": timeout})
        return None
    if request.request_id is None and not isinstance(reply.request_id, bytes):
        request.request_id = reply.request_id
    if bus.has_subscribers(MessageEvent.PENDING_SATISFIED):
        bus.emit(MessageEvent.PENDING_SATISFIED, {"request_id": reply.request_id})
    return reply


def _sender_for_server(server: Server) -> "Sender":
    from .sender import Sender

    return Sender(Mode.SERVER, _server=server)


from .sender import Sender  # noqa: E402  (type name used in annotations)
