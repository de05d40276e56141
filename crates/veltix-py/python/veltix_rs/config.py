"""``ServerConfig`` and ``ClientConfig`` with 3.3.0's validation (``TypeError`` for a wrong type,
``ValueError`` for a value out of range, each with a fix hint), plus the veltix_rs TLS and
authentication options (keyword arguments whose defaults keep Veltix's plaintext behaviour).

TLS files are only checked for their type here; they are read, parsed and matched by
``Server.start()`` / ``Client.connect()``, which raise ``TlsConfigError`` (a ``ValueError``) for
a missing, unreadable, non-PEM or mismatched file."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Union

PathLike = Union[str, "os.PathLike[str]"]

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


def _path(obj: Any, name: str, value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(
            f"{type(obj).__name__}.{name} must be a path (str or os.PathLike) to a PEM file, "
            f"got {type(value).__name__} ({value!r})."
        )
    if os.fspath(value) == "":
        raise ValueError(f"{type(obj).__name__}.{name} must be a path to a PEM file, got ''.")


def _opt_str(obj: Any, name: str, value: Any) -> None:
    if value is not None:
        _str(obj, name, value)
        _check(obj, value != "", name, value, "a non-empty str")


def _pair(obj: Any, cert: str, key: str) -> None:
    c, k = getattr(obj, cert), getattr(obj, key)
    if (c is None) != (k is None):
        missing = key if k is None else cert
        raise ValueError(
            f"{type(obj).__name__}.{cert} and {key} go together (a certificate chain and its "
            f"private key). Fix: {missing}='...pem'"
        )


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

    veltix_rs extras (TLS, default off): ``tls_cert`` and ``tls_key``, PEM files of the
    certificate chain (leaf first) and its private key, make every connection TLS 1.3/1.2
    (plaintext clients are refused); ``tls_client_ca``, a PEM file of the CA(s) client
    certificates must chain to, requires one (mutual TLS; ``ClientInfo.tls.peer_subject``
    shows it). Files are read by ``start()`` (``TlsConfigError`` if unusable).
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
    tls_cert: PathLike | None = None
    tls_key: PathLike | None = None
    tls_client_ca: PathLike | None = None

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
        for name in ("tls_cert", "tls_key", "tls_client_ca"):
            _path(self, name, getattr(self, name))
        _pair(self, "tls_cert", "tls_key")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError(
                "ServerConfig.tls_client_ca (mutual TLS) needs a server certificate. "
                "Fix: tls_cert='server.pem', tls_key='server.key'"
            )

    @property
    def tls(self) -> bool:
        """True when the server speaks TLS (``tls_cert`` and ``tls_key`` are set)."""
        return self.tls_cert is not None


@dataclass(slots=True)
class ClientConfig:
    """Client settings (3.3.0 fields and defaults, except ``socket_core`` = ``RUST``).

    ``retry`` >= 0 reconnect attempts (used for the initial ``connect()`` and for drops),
    ``retry_delay`` > 0 seconds between attempts (constant, as in Veltix).

    veltix_rs extras (default off): ``tls=True`` speaks TLS 1.3/1.2 trusting the system's CA
    store; ``tls_ca`` (a PEM file of CA certificates, e.g. a private CA or a self-signed server
    certificate) trusts those instead and implies ``tls``; ``tls_server_name`` is the name the
    server's certificate must carry (default: ``server_addr``, which may be an IP address);
    ``tls_cert`` + ``tls_key`` present a client certificate (servers with mutual TLS). Files
    are read by ``connect()`` (``TlsConfigError`` if unusable). ``token`` presents a
    credential to the server's authenticate hook (the hello's ``meta`` gets
    ``{"token": token}``); ``meta`` is any JSON-serialisable dict sent as the hello's ``meta``
    (merged with ``token``). A token sent without TLS travels in the clear.
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
    tls: bool = False
    tls_ca: PathLike | None = None
    tls_server_name: str | None = None
    tls_cert: PathLike | None = None
    tls_key: PathLike | None = None
    token: str | None = None
    meta: dict[str, Any] | None = None

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
        if not isinstance(self.tls, bool):
            raise TypeError(f"ClientConfig.tls must be a bool, got {type(self.tls).__name__} ({self.tls!r}).")
        for name in ("tls_ca", "tls_cert", "tls_key"):
            _path(self, name, getattr(self, name))
        _opt_str(self, "tls_server_name", self.tls_server_name)
        _pair(self, "tls_cert", "tls_key")
        if not self.uses_tls and (self.tls_server_name is not None or self.tls_cert is not None):
            raise ValueError(
                "ClientConfig.tls_server_name / tls_cert / tls_key only apply to a TLS link. "
                "Fix: tls=True (system CA store) or tls_ca='ca.pem'"
            )
        _opt_str(self, "token", self.token)
        if self.meta is not None:
            if not isinstance(self.meta, dict):
                raise TypeError(f"ClientConfig.meta must be a dict, got {type(self.meta).__name__} ({self.meta!r}).")
            for k in self.meta:
                if not isinstance(k, str):
                    raise TypeError(f"ClientConfig.meta keys must be str, got {type(k).__name__} ({k!r}).")
            try:
                json.dumps(self.meta)
            except (TypeError, ValueError) as e:
                raise TypeError(f"ClientConfig.meta must be JSON-serialisable: {e}") from None
            if self.token is not None and "token" in self.meta and self.meta["token"] != self.token:
                raise ValueError(
                    "ClientConfig.token and meta['token'] disagree. Fix: give the token once"
                )

    @property
    def uses_tls(self) -> bool:
        """True when the link is TLS (``tls=True`` or a ``tls_ca``)."""
        return self.tls or self.tls_ca is not None

    def hello_meta(self) -> dict[str, Any]:
        """The ``meta`` object the hello carries: ``meta`` plus ``{"token": token}``."""
        m = dict(self.meta or {})
        if self.token is not None:
            m["token"] = self.token
        return m

    def __repr__(self) -> str:
        # Never print credentials: meta values and the token are hidden.
        shown = []
        for f in self.__dataclass_fields__:  # type: ignore[attr-defined]
            v = getattr(self, f)
            if f == "token" and v is not None:
                v = "***"
            elif f == "meta" and v is not None:
                v = {k: "***" for k in v}
            shown.append(f"{f}={v!r}")
        return f"ClientConfig({', '.join(shown)})"
