"""Exceptions of veltix_rs: the same classes and hierarchy as Python Veltix 3.3.0.

Network failures are reported through return values (``False`` / ``None``) and events, as in
Veltix; the exceptions are ``ServerFullError`` from ``Client.connect()``, ``OSError`` from
``Server.start()``,
``TypeError``/``ValueError`` from config validation, ``TlsConfigError`` (a ``ValueError``) from
``Server.start()`` / ``Client.connect()`` for a bad TLS file, ``RequestError`` and
``MessageTypeError`` from bad messages, and ``InvalidContentError`` from ``Response.text/json``.
A refusal by the server's authenticate hook and a failed TLS handshake are failed connects, as
3.3.0 reports a refusal after the client's hello: ``Client.connect()`` returns False, and
``Client.last_error`` / ``Client.rejection_reason`` say why (``RejectedError`` and ``TlsError``,
both ``ConnectionError`` subclasses, are what the native layer raises for them).
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
    "RejectedError",
    "TlsConfigError",
    "TlsError",
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

    @property
    def reason(self) -> str:
        """The reason the server gave (``"server_full"``)."""
        return str(self.args[0]) if self.args else ""


class RejectedError(VeltixError, ConnectionError):
    """The server refused the client after reading its hello (``{"error": REASON}``), typically
    its authenticate hook: ``reason`` is the server's reason. ``Client.connect()`` reports it
    as Veltix 3.3.0 reports such a refusal, by returning False (``Client.rejection_reason``
    keeps the reason); it is not retried (the same credentials would be refused again)."""

    @property
    def reason(self) -> str:
        """The reason the server gave (e.g. ``"unauthorized"``)."""
        return str(self.args[0]) if self.args else ""


class TlsConfigError(VeltixError, ValueError):
    """A TLS certificate, key or CA file is missing, unreadable or not PEM, or a key does not
    match its certificate: raised by ``Server.start()`` and ``Client.connect()`` (the files are
    read then). A ``ValueError``, like the other configuration errors. Not retried."""


class TlsError(VeltixError, ConnectionError):
    """The TLS handshake failed (server certificate not trusted or for another name, client
    certificate refused, the peer does not speak TLS...). ``Client.connect()`` reports it as a
    failed connect (returns False; ``Client.last_error`` holds the message), as Veltix reports
    network failures."""


class IDsExhaustedError(VeltixError):
    """Every request id of the window is pending."""
