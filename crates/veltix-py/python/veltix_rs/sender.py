"""``Sender``: the low-level send API (3.3.0's ``veltix.network.sender``)."""

from __future__ import annotations

from typing import Any, Sequence

from ._enums import Mode
from .exceptions import SenderError

__all__ = ["Sender", "Mode"]


class Sender:
    """Sends ``Request``s for a server (``Mode.SERVER``) or a client (``Mode.CLIENT``).

    ``server.sender`` / ``client.sender`` give the sender of an existing server or client.
    ``Sender(Mode.CLIENT)`` without a connection raises ``SenderError``, as in 3.3.0; ``conn``
    may be a veltix_rs ``Client``. In SERVER mode, ``send`` accepts a ``ClientInfo`` or its
    ``conn`` (3.3.0 only accepted the socket).
    """

    def __init__(
        self,
        mode: "Mode | str",
        conn: Any = None,
        bus: Any = None,
        get_all_clients: Any = None,
        id_allocator: Any = None,
        use_rust: bool | None = None,
        *,
        _server: Any = None,
    ) -> None:
        self.mode = Mode(mode) if isinstance(mode, str) else mode
        if not isinstance(self.mode, Mode):
            raise SenderError(f"mode must be a Mode, got {mode!r}")
        if self.mode is Mode.CLIENT and conn is None:
            raise SenderError("Sender in CLIENT mode needs a connection (conn=...)")
        self.conn = conn
        self._server = _server
        self._get_all_clients = get_all_clients

    def send(self, data: Any, client: Any = None) -> bool:
        """Send one message; False if ``data`` is not a ``Request``, there is no target, or it
        cannot be queued."""
        from .request import Request

        if not isinstance(data, Request):
            return False
        if self.mode is Mode.CLIENT:
            return bool(self.conn.send(data))
        if client is None or self._server is None:
            return False
        return self._server.send(data, client)

    def broadcast(self, data: Any, list_of_clients: Sequence[Any] | None = None,
                  except_clients: Sequence[Any] | None = None) -> bool:
        """SERVER mode: send to ``list_of_clients`` (default: every client) except
        ``except_clients``; True if every send succeeded."""
        if self.mode is not Mode.SERVER or self._server is None:
            return False
        if list_of_clients is None:
            return self._server.broadcast(data, list(except_clients or ()))
        from .server import _handle

        skip = {h.id for h in (_handle(c) for c in (except_clients or ())) if h is not None}
        ok = True
        for c in list_of_clients:
            h = _handle(c)
            if h is None or h.id in skip:
                continue
            ok = self._server.send(data, h) and ok
        return ok
