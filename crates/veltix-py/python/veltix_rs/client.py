"""``Client`` (the 3.3.0 API) on the veltix-rs core."""

from __future__ import annotations

import threading
import weakref
from typing import Any, Callable

from . import _native, _runtime
from ._enums import DisconnectReason, DisconnectState, Mode
from ._sig import check_signature
from ._types import MessageType
from .bus import VeltixBus
from .config import ClientConfig
from .events import ClientEvent, ErrorEvent, MessageEvent, ReconnectEvent
from .exceptions import RejectedError, ServerFullError, TlsConfigError
from .request import Request, Response
from .sender import Sender
from .server import RequestHandler, _event_forwarder, _event_mask, _observed, _observing, _send_failed, _wait

__all__ = ["Client", "ClientConfig", "DisconnectReason", "DisconnectState"]

_REASONS = {
    "MANUAL": DisconnectReason.MANUAL,
    "SERVER_CLOSED": DisconnectReason.SERVER_CLOSED,
    "KEEPALIVE_TIMEOUT": DisconnectReason.SERVER_CLOSED,
    "SERVER_FULL": DisconnectReason.SERVER_CLOSED,
    "HANDSHAKE_FAILED": DisconnectReason.ERROR,
    "ERROR": DisconnectReason.ERROR,
}

#: How long connect()/disconnect() wait for their callbacks to have run on the handler pool.
_CALLBACK_WAIT = 10.0


class Client:
    """A Veltix client on the veltix-rs core: connect + handshake, routes (``func(response)`` on
    ``max_workers`` handler threads, in arrival order), ``send``, ``send_and_wait``,
    ``ping_server``, reconnects (``retry``/``retry_delay``), and the event bus.

    Differences from Veltix 3.3.0 (improvements): ``send`` returns False while disconnected or
    reconnecting (nothing is queued); ``send_and_wait``/``ping_server`` return None at once when
    the link drops; routes and ``on_recv`` survive reconnects; ``on_connect`` runs on the
    handler pool (``connect()`` returns after it ran).
    """

    def __init__(self, config: ClientConfig) -> None:
        if not isinstance(config, ClientConfig):
            raise TypeError(f"Client(config) needs a ClientConfig, got {type(config).__name__}")
        self._config = config
        self._bus = VeltixBus()
        self._request_handler = RequestHandler(self)
        self._closed = threading.Event()
        self._closed.set()
        self._connected_evt = threading.Event()
        self._lock = threading.RLock()
        self._dropped = False
        self._attempt = 0
        self._last_error: str | None = None
        self._rejection: str | None = None
        self._native = self._make_native()
        self._sender = Sender(Mode.CLIENT, conn=self)
        _runtime.track(self)

    def _generation(self) -> int:
        return 3

    def _performance_mode(self) -> str:
        return "balanced"

    def _make_native(self) -> _native.NativeClient:
        me = weakref.ref(self)
        bus = self._bus

        def on_connect() -> None:
            c = me()
            if c is not None:
                c._dispatch_connect()

        def on_disconnect(permanent: bool, attempt: int, retry_max: int, reason: str) -> None:
            c = me()
            if c is not None:
                c._dispatch_disconnect(permanent, attempt, retry_max, reason)

        def on_observe(response: Response, kind: str) -> None:
            _observed(bus, "client", response, kind, {"from": "server"})

        c = self._config
        native = _native.NativeClient(
            c.server_addr, c.port, int(c.buffer_size), c.max_message_size, float(c.handshake_timeout),
            c.max_workers, c.retry, float(c.retry_delay), self._generation(), self._performance_mode(),
            on_connect, on_disconnect, _runtime.make_error_reporter(lambda: bus), on_observe,
            tls=c.uses_tls, tls_ca=c.tls_ca, tls_server_name=c.tls_server_name,
            tls_cert=c.tls_cert, tls_key=c.tls_key, meta_json=self._meta_json(),
            on_event=_event_forwarder(bus, "client"),
        )
        bus._watchers.append(lambda: native.set_observe(_observing(bus)))
        bus._watchers.append(lambda: native.set_events(_event_mask(bus)))
        native.set_events(_event_mask(bus))

        def fast_send() -> None:
            c = me()
            if c is not None:
                c._update_fast_send(native)

        bus._watchers.append(fast_send)
        self._update_fast_send(native)
        return native

    def _meta_json(self) -> str | None:
        import json

        meta = self._config.hello_meta()
        return json.dumps(meta) if meta else None

    def _update_fast_send(self, native: _native.NativeClient) -> None:
        # While nobody watches SENT / SEND errors, `client.send` is the native method itself
        # (no Python frame per message); otherwise the class method, which emits the events.
        if self._bus.watching_sends:
            self.__dict__.pop("send", None)
        else:
            self.__dict__["send"] = native.send_request

    # -- dispatchers (handler pool) ---------------------------------------------------------

    def _dispatch_connect(self) -> None:
        if self._dropped:
            self._dropped = False
            self._bus.emit(ReconnectEvent.SUCCESS, {"attempt": self._attempt + 1})
        self._closed.clear()
        self._connected_evt.set()
        self._bus.info("connected to %s:%s", self._config.server_addr, self._config.port)
        _runtime.report_bus_errors(self._bus, self._bus.emit(ClientEvent.ON_CONNECT, None), "on_connect")

    def _dispatch_disconnect(self, permanent: bool, attempt: int, retry_max: int, reason: str) -> None:
        r = _REASONS.get(reason, DisconnectReason.ERROR)
        if reason == "SERVER_FULL":
            state = DisconnectState(False, 0, 0, r)
        else:
            state = DisconnectState(permanent, attempt, retry_max, r)
        if not permanent:
            self._attempt = attempt
            if attempt == 0:
                self._dropped = True
                if r is DisconnectReason.SERVER_CLOSED:
                    self._bus.emit(ClientEvent.SOCKET_DISCONNECTED, None)
            else:
                self._bus.emit(ReconnectEvent.FAIL, {"attempt": attempt})
            if attempt < retry_max:
                self._bus.emit(ReconnectEvent.ATTEMPT, {"attempt": attempt + 1, "max_retry": retry_max})
        self._bus.info("disconnected: %s", state)
        _runtime.report_bus_errors(self._bus, self._bus.emit(ClientEvent.ON_DISCONNECT, state), "on_disconnect")
        if permanent:
            self._closed.set()

    # -- properties -------------------------------------------------------------------------

    @property
    def config(self) -> ClientConfig:
        """The configuration."""
        return self._config

    @property
    def bus(self) -> VeltixBus:
        """This client's event bus (kept across reconnects)."""
        return self._bus

    @property
    def sender(self) -> Sender:
        """The low-level ``Sender`` (CLIENT mode)."""
        return self._sender

    @property
    def request_handler(self) -> RequestHandler:
        """The route table."""
        return self._request_handler

    @property
    def socket(self) -> _native.NativeClient:
        """The native (Rust) client object."""
        return self._native

    @property
    def is_connected(self) -> bool:
        """True while connected."""
        return self._native.is_connected

    @property
    def last_error(self) -> str | None:
        """veltix_rs extra: why the last ``connect()`` failed (e.g. ``"server rejected the
        connection: unauthorized"``, ``"TLS handshake failed: invalid peer certificate:
        UnknownIssuer"``, ``"connection to ... refused"``), None after a success."""
        return self._last_error

    @property
    def rejection_reason(self) -> str | None:
        """veltix_rs extra: the reason the server gave when it refused the last ``connect()``
        (its authenticate hook's, e.g. ``"unauthorized"``; ``"server_full"``), else None."""
        return self._rejection

    @property
    def running(self) -> bool:
        """False after ``disconnect()`` or a permanent give-up."""
        return not self._closed.is_set()

    # -- lifecycle --------------------------------------------------------------------------

    def connect(self, _from_retry: bool = False) -> bool:
        """Connect and complete the handshake (GIL released). True when connected (the
        ``on_connect`` callbacks have run). With ``retry > 0`` a failed attempt runs the
        reconnect loop first. False on failure, including (veltix_rs extras) a refusal by the
        server's authenticate hook (as 3.3.0 reports a refusal after its hello; not retried;
        ``rejection_reason`` holds the server's reason) and a failed TLS handshake (wrong CA or
        server name, client certificate refused). Raises ``ServerFullError`` if the server is
        full, ``TlsConfigError`` (a ``ValueError``; not retried) if a TLS file is unusable.
        ``last_error`` says why the last attempt failed."""
        if self._native.is_connected:
            return True
        self._connected_evt.clear()
        self._closed.clear()
        self._bus.emit(ClientEvent.CONNECTING, {"host": self._config.server_addr, "port": self._config.port})
        wait = not _runtime.on_foreign_thread()
        self._rejection = None
        try:
            self._native.connect()
        except ServerFullError as e:
            self._last_error = str(e)
            self._rejection = e.reason
            if wait:
                self._closed.wait(_CALLBACK_WAIT)
            raise
        except RejectedError as e:
            self._last_error = f"server rejected the connection: {e.reason}"
            self._rejection = e.reason
            self._bus.emit(ErrorEvent.NETWORK, {"error": self._last_error, "host": self._config.server_addr, "port": self._config.port})
            self._bus.warning("connect to %s:%s refused by the server: %s",
                              self._config.server_addr, self._config.port, e.reason)
            if wait:
                self._closed.wait(_CALLBACK_WAIT)
            return False
        except TlsConfigError as e:
            self._last_error = str(e)
            if wait:
                self._closed.wait(_CALLBACK_WAIT)
            raise
        except OSError as e:
            self._last_error = str(e)
            self._bus.emit(ErrorEvent.NETWORK, {"error": str(e), "host": self._config.server_addr, "port": self._config.port})
            self._bus.warning("connect to %s:%s failed: %s", self._config.server_addr, self._config.port, e)
            if wait:
                self._closed.wait(_CALLBACK_WAIT)
            return False
        self._last_error = None
        if wait:
            self._connected_evt.wait(_CALLBACK_WAIT)
        return True

    def disconnect(self) -> bool:
        """Close the link (queued data is flushed), cancel reconnects; ``on_disconnect`` gets
        ``DisconnectState(permanent=True, reason=MANUAL)``; releases ``wait_until_closed``."""
        self._bus.emit(ClientEvent.DISCONNECTING, None)
        self._native.disconnect()
        if not _runtime.on_foreign_thread():
            self._closed.wait(_CALLBACK_WAIT)
        self._closed.set()
        return True

    def stop_retry(self) -> None:
        """Cancel a running reconnect loop (its current wait is interrupted). As in 3.3.0,
        ``ReconnectEvent.CANCELLED`` is emitted only when an attempt that was under way
        connects after this call (that connection is closed again at once)."""
        self._native.stop_retry()

    def retry(self, max_: int | None = None) -> None:
        """Start a reconnect loop in the background with ``max_`` attempts (default
        ``config.retry``, which is not changed). Ignored with a warning when there is nothing
        to do."""
        if max_ is None and self._config.retry == 0:
            self._bus.warning("retry(): config.retry is 0 and no max_ given, ignored")
            return
        self._closed.clear()
        self._native.retry(max_)

    def wait_until_closed(self) -> None:
        """Block (GIL released) until ``disconnect()`` or a permanent give-up; Ctrl+C
        disconnects."""
        try:
            while not self._closed.wait(1.0):
                pass
        except KeyboardInterrupt:
            self.disconnect()

    def _shutdown(self) -> None:
        self._native.disconnect()

    def init_components(self) -> None:
        """Accepted for compatibility: the core rebuilds a connection's components on every
        (re)connect by itself; routes, callbacks and the bus are kept."""

    # -- routing ----------------------------------------------------------------------------

    def _register_route(self, type_: MessageType, func: Callable[..., Any]) -> bool:
        if type_.code in self._request_handler.routes:
            self._bus.warning("Route for %s already registered, ignored", type_.name)
            return False
        self._request_handler.routes[type_.code] = func
        self._native.route(type_.code, func)
        if self._bus.has_subscribers(MessageEvent.ROUTE_REGISTERED):
            self._bus.emit(MessageEvent.ROUTE_REGISTERED, {"type": type_, "name": type_.name})
        return True

    def route(self, type_: MessageType) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator: handle messages of ``type_`` with ``func(response)`` on the handler pool
        (``TypeError`` at registration for a wrong signature; a duplicate is ignored with a
        warning)."""
        if not hasattr(type_, "code"):
            raise TypeError(f"route() needs a MessageType, got {type(type_).__name__}")

        def deco(func: Callable[..., Any]) -> Callable[..., Any]:
            check_signature(func, label="Route handler", nargs=1, dispatched="response",
                            fix="response: Response", target=type_.name)
            self._register_route(type_, func)
            return func

        return deco

    def on_recv(self, func: Callable[[Response], Any]) -> Callable[..., Any]:
        """Set the fallback ``func(response)`` for messages without a route."""
        check_signature(func, label="on_recv callback", nargs=1, dispatched="response", fix="response: Response")
        self._request_handler.on_recv = func
        self._native.on_recv(func)
        return func

    def on_connect(self, func: Callable[[], Any]) -> Callable[..., Any]:
        """Add ``func()``, called after every successful (re)connect."""
        check_signature(func, label="on_connect callback", nargs=0, dispatched="", fix="")
        self._bus.subscribe(ClientEvent.ON_CONNECT, lambda e, p: func())
        return func

    def on_disconnect(self, func: Callable[[DisconnectState], Any]) -> Callable[..., Any]:
        """Add ``func(state)``, called with every ``DisconnectState`` notification."""
        check_signature(func, label="on_disconnect callback", nargs=1, dispatched="state", fix="state: DisconnectState")
        self._bus.subscribe(ClientEvent.ON_DISCONNECT, lambda e, p: func(p))
        return func

    # -- messaging --------------------------------------------------------------------------

    def send(self, request: Request) -> bool:
        """Send one message; False when not connected (nothing is queued) or invalid."""
        if not isinstance(request, Request):
            return False
        ok = self._native.send_request(request)
        if self._bus.watching_sends:
            if not ok:
                _send_failed(self._bus, "client")
            elif self._bus.has_subscribers(MessageEvent.SENT):
                self._bus.emit(MessageEvent.SENT, {"type": request.type, "length": len(request.content), "mode": "client"})
        return ok

    def send_and_wait(self, request: Request, timeout: float = 5.0) -> Response | None:
        """Send and block (GIL released) for the server's reply with the same request id.
        None on timeout, when not connected, or at once when the link drops."""
        return _wait(self._bus, request, lambda code, content, rid: self._native.send_and_wait(code, content, rid, float(timeout)), timeout)

    def ping_server(self, timeout: float = 5.0) -> float | None:
        """PING round trip in ms (float), or None on timeout / when not connected."""
        return self._native.ping(float(timeout))

    def stats(self) -> dict[str, Any]:
        """veltix_rs extra: the core's counters of this client across reconnects (same keys as
        ``Server.stats()``)."""
        import json

        return json.loads(self._native.stats_json())

    def __repr__(self) -> str:
        return f"Client(server={self._config.server_addr}:{self._config.port}, connected={self.is_connected})"
