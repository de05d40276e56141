"""Exceptions of veltix_rs: the same classes and hierarchy as Python Veltix 3.3.0.

Network failures are reported through return values (``False`` / ``None``) and events, as in
Veltix; the exceptions are ``ServerFullError`` from ``Client.connect()``, ``OSError`` from
``Server.start()``, ``TypeError``/``ValueError`` from config validation, ``RequestError`` and
``MessageTypeError`` from bad messages, and ``InvalidContentError`` from ``Response.text/json``.
"""

from __future__ import annotations

__all__ = [
    "VeltixError",
    "MessageTypeError",
    "SenderError",
    "RequestError",
    "NetworkError",
    "TimeoutError",
    "InvalidContentError",
    "ServerFullError",
    "IDsExhaustedError",
]


class VeltixError(Exception):
    """Base class of every veltix_rs exception."""


class MessageTypeError(VeltixError):
    """A bad, reserved or duplicate message type code, or no free code left to allocate."""


class SenderError(VeltixError):
    """A ``Sender`` used without what it needs (CLIENT mode without a connection)."""


class RequestError(VeltixError):
    """Invalid ``Request`` arguments (payload, request_id) or content too large."""


class NetworkError(VeltixError):
    """Exported for compatibility; never raised (as in Veltix 3.3.0)."""


class TimeoutError(VeltixError):  # noqa: A001 - same name as Veltix's (not builtins.TimeoutError)
    """Exported for compatibility; never raised (as in Veltix 3.3.0)."""


class InvalidContentError(VeltixError):
    """``Response.text`` / ``Response.json`` on content that is not UTF-8 / JSON."""


class ServerFullError(VeltixError):
    """``Client.connect()`` was rejected by a full server (``{"error": "server_full"}``)."""


class IDsExhaustedError(VeltixError):
    """Every request id of the window is pending."""
