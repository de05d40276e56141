"""The event enums of the bus (3.3.0's ``veltix.internal.events``); see FEATURES.md §10 for each
event's payload. ``veltix_rs.internal.events`` re-exports them under 3.3.0's module path."""

from __future__ import annotations

from enum import Enum, auto

__all__ = [
    "ServerEvent",
    "ClientEvent",
    "MessageEvent",
    "ProtocolEvent",
    "ErrorEvent",
    "LogEvent",
    "ReconnectEvent",
    "ALL_EVENTS",
]


class ServerEvent(Enum):
    """Server lifecycle: ``ON_CONNECT``/``ON_DISCONNECT`` (payload ``ClientInfo``),
    ``STARTED``/``STOPPED`` (``{"host", "port"}``), ``CLIENT_REJECTED``."""

    ON_CONNECT = auto()
    ON_DISCONNECT = auto()
    STARTED = auto()
    STOPPED = auto()
    CLIENT_REJECTED = auto()


class ClientEvent(Enum):
    """Client lifecycle and (on the server bus) tag changes."""

    ON_CONNECT = auto()
    ON_DISCONNECT = auto()
    SOCKET_DISCONNECTED = auto()
    CONNECTING = auto()
    DISCONNECTING = auto()
    TAG_ADDED = auto()
    TAG_UPDATED = auto()
    TAG_REMOVED = auto()
    TAG_CLEARED = auto()


class MessageEvent(Enum):
    """Message flow: sent, routed, pending request registration/satisfaction/timeout, routes."""

    RECEIVED = auto()
    SENT = auto()
    ROUTED = auto()
    UNHANDLED = auto()
    PENDING_REGISTERED = auto()
    PENDING_SATISFIED = auto()
    PENDING_TIMEOUT = auto()
    ROUTE_REGISTERED = auto()
    ROUTE_UNREGISTERED = auto()


class ProtocolEvent(Enum):
    """Protocol-level events (PING/PONG and handshake)."""

    PING = auto()
    PONG = auto()
    HANDSHAKE_START = auto()
    HANDSHAKE_DONE = auto()
    HANDSHAKE_FAIL = auto()


class ErrorEvent(Enum):
    """Errors: ``CALLBACK`` carries ``{"error", "func"}`` for an exception in a user callback."""

    NETWORK = auto()
    HANDLER = auto()
    CALLBACK = auto()
    SEND = auto()
    ACCEPT = auto()
    CONNECTION_REFUSED = auto()


class LogEvent(Enum):
    """Every internal log line, payload ``str``."""

    TRACE = auto()
    DEBUG = auto()
    INFO = auto()
    SUCCESS = auto()
    WARNING = auto()
    ERROR = auto()
    CRITICAL = auto()


class ReconnectEvent(Enum):
    """Reconnect loop: ``ATTEMPT {"attempt", "max_retry"}``, ``FAIL``/``SUCCESS``/``CANCELLED``
    ``{"attempt"}``."""

    ATTEMPT = auto()
    FAIL = auto()
    SUCCESS = auto()
    CANCELLED = auto()


ALL_EVENTS = (
    ServerEvent,
    ClientEvent,
    MessageEvent,
    ProtocolEvent,
    ErrorEvent,
    LogEvent,
    ReconnectEvent,
)
