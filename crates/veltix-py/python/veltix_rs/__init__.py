"""veltix_rs: the Python Veltix API (3.3.0) on the veltix-rs Rust core.

``import veltix_rs as veltix`` runs a program written for Veltix 3.3.0: same names, arguments,
defaults, return values and exceptions. Sockets, framing, CRC, handshakes, routing, request
correlation, ping, reconnects and the worker pool are Rust (``SocketCore.RUST``, the default;
``THREADING``/``ASYNC`` are accepted and served by the same core). The 1.6.9 API, on the
1.6 wire, is ``veltix_rs.v1``.

Python callbacks run on one process-wide pool of handler threads shared by every server and
client (sized to the largest ``max_workers``; ``VELTIX_HANDLER_THREADS`` fixes it), one
connection's messages in arrival order; every call that can block releases the GIL.

veltix_rs extras: TLS (``ServerConfig(tls_cert=..., tls_key=..., tls_client_ca=...)``,
``ClientConfig(tls=True | tls_ca=..., tls_server_name=..., tls_cert=..., tls_key=...)``) and
authentication (``ClientConfig(token=..., meta=...)``, ``@server.authenticate`` returning
``Accept``/``Reject``; see ``veltix_rs.auth``).
"""

from __future__ import annotations

from ._enums import BufferSize, DisconnectReason, DisconnectState, Mode, SocketCore
from ._native import Response
from . import _runtime  # noqa: F401  (installs the native hooks and the atexit cleanup)
from .auth import Accept, AuthRequest, Reject, TlsInfo
from ._types import PING, PONG, MessageType
from .client import Client
from .config import ClientConfig, ServerConfig
from .exceptions import (
    InvalidContentError,
    MessageTypeError,
    NetworkError,
    RejectedError,
    RequestError,
    SenderError,
    ServerFullError,
    TimeoutError,
    TlsConfigError,
    TlsError,
    VeltixError,
)
from .logger import Logger, LoggerConfig, LogLevel
from .request import Request
from .sender import Sender
from .server import ClientInfo, Server
from .utils import decode_json, decode_utf8, encode_json, encode_utf8, format_bytes

__version__ = "0.1.0"
"""The veltix_rs package version."""


def enable_rust() -> None:
    """Accepted for compatibility: veltix_rs always runs on the Rust core."""


def disable_rust() -> None:
    """Accepted for compatibility and ignored: there is no pure-Python engine in veltix_rs."""


__all__ = [
    "__version__",
    "Client",
    "ClientConfig",
    "DisconnectState",
    "DisconnectReason",
    "Server",
    "ServerConfig",
    "ClientInfo",
    "Request",
    "Response",
    "Sender",
    "Mode",
    "MessageType",
    "SocketCore",
    "enable_rust",
    "disable_rust",
    "PING",
    "PONG",
    "decode_json",
    "decode_utf8",
    "encode_json",
    "encode_utf8",
    "format_bytes",
    "BufferSize",
    "Logger",
    "LoggerConfig",
    "LogLevel",
    "VeltixError",
    "MessageTypeError",
    "NetworkError",
    "RequestError",
    "SenderError",
    "TimeoutError",
    "InvalidContentError",
    "ServerFullError",
    "RejectedError",
    "TlsConfigError",
    "TlsError",
    "Accept",
    "Reject",
    "AuthRequest",
    "TlsInfo",
]
