"""Small enums and value types shared by the server and the client."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, IntEnum, auto

__all__ = ["BufferSize", "SocketCore", "Mode", "DisconnectReason", "DisconnectState"]


class BufferSize(IntEnum):
    """``recv()`` chunk sizes (a plain int is accepted too). Default: ``MEDIUM``."""

    SMALL = 1024
    MEDIUM = 8192
    LARGE = 65536
    HUGE = 1048576


class SocketCore(Enum):
    """The socket backend. ``RUST`` (the default here) is the veltix-rs tokio core.

    ``THREADING`` and ``ASYNC`` are accepted so that programs written for Veltix run unchanged;
    they are served by the same Rust core (there is no Python socket code in veltix_rs).
    """

    RUST = "rust"
    THREADING = "threading"
    ASYNC = "async"


class Mode(Enum):
    """Which side a ``Sender`` sends from."""

    SERVER = "server"
    CLIENT = "client"


class DisconnectReason(Enum):
    """Why a client was disconnected (3.3.0 values)."""

    SERVER_CLOSED = auto()
    """The server closed or reset the link (also a full server's rejection)."""
    ERROR = auto()
    """The connection or the handshake failed."""
    MANUAL = auto()
    """``disconnect()`` was called."""


@dataclass
class DisconnectState:
    """One ``on_disconnect`` notification of a client.

    ``permanent``: no more retries follow. ``attempt``: 0 for the first notification, then the
    failed attempt number. ``retry_max``: the configured retries. ``reason``: a
    ``DisconnectReason``.
    """

    permanent: bool
    attempt: int
    retry_max: int
    reason: DisconnectReason
