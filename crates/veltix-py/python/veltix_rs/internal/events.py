"""``from veltix_rs.internal.events import ServerEvent, ClientEvent`` (3.3.0's path)."""

from ..events import (  # noqa: F401
    ClientEvent,
    ErrorEvent,
    LogEvent,
    MessageEvent,
    ProtocolEvent,
    ReconnectEvent,
    ServerEvent,
)

__all__ = ["ServerEvent", "ClientEvent", "MessageEvent", "ProtocolEvent", "ErrorEvent", "LogEvent", "ReconnectEvent"]
