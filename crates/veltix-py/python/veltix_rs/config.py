"""``ServerConfig`` and ``ClientConfig`` with 3.3.0's validation (``TypeError`` for a wrong type,
``ValueError`` for a value out of range, each with a fix hint)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ._enums import BufferSize, SocketCore

__all__ = ["ServerConfig", "ClientConfig"]

MAX_MESSAGE_SIZE = 10 * 1024 * 1024


def _int(obj: Any, name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            f"{type(obj).__name__}.{name} must be an int, got {type(value).__name__} ({value!r}). "
            f"Fix: {name}={int(value) if isinstance(value, float) else '...'}"
        )


def _number(obj: Any, name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"{type(obj).__name__}.{name} must be a number of seconds, got "
            f"{type(value).__name__} ({value!r})."
        )


def _str(obj: Any, name: str, value: Any) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{type(obj).__name__}.{name} must be a str, got {type(value).__name__} ({value!r}).")


def _check(obj: Any, ok: bool, name: str, value: Any, rule: str) -> None:
    if not ok:
        raise ValueError(f"{type(obj).__name__}.{name} must be {rule}, got {value!r}.")


def _core(obj: Any, value: Any) -> None:
    if not isinstance(value, SocketCore):
        raise TypeError(
            f"{type(obj).__name__}.socket_core must be a SocketCore, got {type(value).__name__} "
            f"({value!r}). Fix: socket_core=SocketCore.RUST"
        )


@dataclass(slots=True)
class ServerConfig:
    """Server settings (3.3.0 fields and defaults, except ``socket_core`` = ``RUST``).

    ``host``: listen address. ``port``: 0-65535 (0 = any free port; ``Server.start`` returns
    and ``server.config.port`` keeps the requested value, ``server.port`` the bound one).
    ``buffer_size`` > 0. ``max_connection``: -1 (unlimited) or >= 1. ``max_message_size`` > 0
    (header + body). ``handshake_timeout`` > 0 seconds. ``max_workers`` >= 1 callback threads.
    ``socket_core``: any ``SocketCore`` (all served by the Rust core). ``id_window``: 1-65535,
    capped to 32768.
    """

    host: str = "0.0.0.0"
    port: int = 8080
    buffer_size: int = BufferSize.MEDIUM
    max_connection: int = -1
    max_message_size: int = MAX_MESSAGE_SIZE
    handshake_timeout: float = 5.0
    max_workers: int = 4
    socket_core: SocketCore = SocketCore.RUST
    id_window: int = 30000

    def __post_init__(self) -> None:
        _str(self, "host", self.host)
        for name in ("port", "buffer_size", "max_connection", "max_message_size", "max_workers", "id_window"):
            _int(self, name, getattr(self, name))
        _number(self, "handshake_timeout", self.handshake_timeout)
        _core(self, self.socket_core)
        _check(self, 0 <= self.port <= 65535, "port", self.port, "between 0 and 65535")
        _check(self, self.buffer_size > 0, "buffer_size", self.buffer_size, "> 0")
        _check(self, self.max_connection == -1 or self.max_connection >= 1, "max_connection",
               self.max_connection, "-1 (unlimited) or >= 1")
        _check(self, self.max_message_size > 0, "max_message_size", self.max_message_size, "> 0")
        _check(self, self.handshake_timeout > 0, "handshake_timeout", self.handshake_timeout, "> 0")
        _check(self, self.max_workers >= 1, "max_workers", self.max_workers, ">= 1")
        _check(self, 1 <= self.id_window <= 65535, "id_window", self.id_window, "between 1 and 65535")


@dataclass(slots=True)
class ClientConfig:
    """Client settings (3.3.0 fields and defaults, except ``socket_core`` = ``RUST``).

    ``retry`` >= 0 reconnect attempts (used for the initial ``connect()`` and for drops),
    ``retry_delay`` > 0 seconds between attempts (constant, as in Veltix).
    """

    server_addr: str = "127.0.0.1"
    port: int = 8080
    buffer_size: int = BufferSize.MEDIUM
    max_message_size: int = MAX_MESSAGE_SIZE
    handshake_timeout: float = 5.0
    max_workers: int = 4
    retry: int = 0
    retry_delay: float = 1.0
    socket_core: SocketCore = field(default=SocketCore.RUST)

    def __post_init__(self) -> None:
        _str(self, "server_addr", self.server_addr)
        for name in ("port", "buffer_size", "max_message_size", "max_workers", "retry"):
            _int(self, name, getattr(self, name))
        _number(self, "handshake_timeout", self.handshake_timeout)
        _number(self, "retry_delay", self.retry_delay)
        _core(self, self.socket_core)
        _check(self, 0 <= self.port <= 65535, "port", self.port, "between 0 and 65535")
        _check(self, self.buffer_size > 0, "buffer_size", self.buffer_size, "> 0")
        _check(self, self.max_message_size > 0, "max_message_size", self.max_message_size, "> 0")
        _check(self, self.handshake_timeout > 0, "handshake_timeout", self.handshake_timeout, "> 0")
        _check(self, self.max_workers >= 1, "max_workers", self.max_workers, ">= 1")
        _check(self, self.retry >= 0, "retry", self.retry, ">= 0")
        _check(self, self.retry_delay > 0, "retry_delay", self.retry_delay, "> 0")
