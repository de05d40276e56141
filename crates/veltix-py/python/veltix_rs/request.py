"""``Request``: one outgoing message (3.3.0 API)."""

from __future__ import annotations

import json as _json
from typing import Any

from ._native import RequestBase, Response
from ._types import MessageType
from .exceptions import RequestError

__all__ = ["Request", "Response"]

_UNSET: Any = object()
_MAX_CONTENT = 2**32 - 1


class Request(RequestBase):
    """An outgoing message: ``Request(TYPE, b"bytes")``, ``Request(TYPE, text="hi")`` or
    ``Request(TYPE, json={...})``; exactly one payload.

    ``request_id`` (0-65535) correlates a reply with ``send_and_wait``; ``None`` lets the core
    assign one at send time. Unlike 3.3.0 the assigned id is not written back to the object
    (each send of an id-less request gets a fresh id); ``send_and_wait`` stores the id of the
    reply on the request. Raises ``RequestError`` for invalid arguments.
    """

    # The four fields live in the native base (a send reads them without attribute lookups).
    __slots__ = ()
    type: MessageType
    content: bytes
    request_id: "int | None"
    flags: int

    def __init__(
        self,
        _type: MessageType,
        content: bytes = _UNSET,
        *,
        text: "str | bytes" = _UNSET,
        json: Any = _UNSET,
        request_id: int | None = None,
    ) -> None:
        given = [n for n, v in (("content", content), ("text", text), ("json", json)) if v is not _UNSET]
        if len(given) != 1:
            raise RequestError(
                "A Request needs exactly one payload, got "
                + (", ".join(given) if given else "none")
                + '. Fix: Request(TYPE, b"raw"), Request(TYPE, text="hi") or '
                "Request(TYPE, json={...})."
            )
        if not isinstance(_type, MessageType) and not hasattr(_type, "code"):
            raise RequestError(f"_type must be a MessageType, got {type(_type).__name__}")
        if content is not _UNSET:
            if not isinstance(content, bytes):
                raise RequestError(
                    f"content must be bytes, got {type(content).__name__}. "
                    "Fix: use text= for strings, json= for objects, bytes(x) for buffers."
                )
            data = content
        elif text is not _UNSET:
            if isinstance(text, bytes):
                data = text
            elif isinstance(text, str):
                data = text.encode("utf-8")
            else:
                raise RequestError(f"text must be str or bytes, got {type(text).__name__}")
        else:
            try:
                data = _json.dumps(json).encode("utf-8")
            except (TypeError, ValueError) as e:
                raise RequestError(f"json payload is not JSON-serialisable: {e}") from e
        if len(data) > _MAX_CONTENT:
            raise RequestError(f"content of {len(data)} bytes exceeds {_MAX_CONTENT}")
        if request_id is not None:
            if isinstance(request_id, bool) or not isinstance(request_id, int) or not 0 <= request_id <= 65535:
                raise RequestError(f"request_id must be an int in 0-65535 or None, got {request_id!r}")
        self.type = _type
        self.content: bytes = data
        self.request_id: int | None = request_id
        self.flags: int = 0

    def respond(self, response: Response) -> "Request":
        """Copy ``response.request_id`` so the peer's ``send_and_wait`` is satisfied. Returns
        ``self`` (3.3.0 returns None: do not chain if the code must also run on Veltix)."""
        self.request_id = response.request_id
        return self

    def compile(self, use_rust: bool | None = None) -> bytes:
        """The Gen 3 wire frame of this request (15-byte header + content)."""
        import struct
        import zlib

        header = struct.pack(
            ">2sBHI4sH",
            b"VX",
            self.flags,
            self.type.code,
            len(self.content),
            zlib.crc32(self.content).to_bytes(4, "big"),
            self.request_id or 0,
        )
        return header + self.content

    def __repr__(self) -> str:
        shown = self.content[:20]
        more = "..." if len(self.content) > 20 else ""
        return f"Request(type={self.type!r}, request_id={self.request_id}, content={shown!r}{more})"
