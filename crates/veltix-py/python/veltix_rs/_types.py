"""Message types (3.3.0 semantics): a process-wide registry, code ranges, auto-allocation.

Codes 0-199 are reserved for system messages (``PING`` = 0, ``PONG`` = 1), 200-9999 are user
codes (``MessageType("chat")`` takes the lowest free one), 10000-65535 are plugin codes.
"""

from __future__ import annotations

import threading

from .exceptions import MessageTypeError

__all__ = ["MessageType", "MessageTypeRegistry", "PING", "PONG", "type_for_code"]

USER_MIN = 200
USER_MAX = 9999
PLUGIN_MIN = 10000
CODE_MAX = 65535


class MessageTypeRegistry:
    """The process-wide ``code -> MessageType`` table (thread-safe)."""

    _types: dict[int, "MessageType"] = {}
    _lock = threading.Lock()

    @classmethod
    def register(cls, message_type: "MessageType") -> None:
        """Register ``message_type``; ``MessageTypeError`` if its code is taken."""
        with cls._lock:
            old = cls._types.get(message_type.code)
            if old is not None:
                if message_type.code < USER_MIN:
                    raise MessageTypeError(
                        f"Code {message_type.code} is reserved for system messages "
                        f"(0-{USER_MIN - 1}); '{old.name}' is registered there."
                    )
                raise MessageTypeError(
                    f"Code {message_type.code} already registered as '{old.name}'. "
                    'Fix: use another code, or MessageType("name") to auto-allocate one.'
                )
            cls._types[message_type.code] = message_type

    @classmethod
    def allocate(cls, message_type: "MessageType") -> int:
        """Give ``message_type`` the lowest free user code (200-9999) and register it."""
        with cls._lock:
            for code in range(USER_MIN, USER_MAX + 1):
                if code not in cls._types:
                    message_type.code = code
                    cls._types[code] = message_type
                    return code
        raise MessageTypeError(f"No available codes in range {USER_MIN}-{USER_MAX}")

    @classmethod
    def get(cls, code: int) -> "MessageType | None":
        """The type registered under ``code``, or None."""
        with cls._lock:
            return cls._types.get(code)

    @classmethod
    def list_all(cls) -> "list[MessageType]":
        """Every registered type."""
        with cls._lock:
            return list(cls._types.values())


class MessageType:
    """A message type: ``MessageType(200, "chat")`` (explicit code) or ``MessageType("chat")``
    (auto-allocated user code). Equality and hash use the code.

    Raises ``MessageTypeError`` for a code outside 0-65535, a reserved code (< 200), a code
    already registered, or a non-int code.
    """

    __slots__ = ("code", "name", "description")

    def __init__(
        self,
        code: "int | str | None" = None,
        name: str | None = None,
        description: str | None = None,
        *,
        _system: bool = False,
    ) -> None:
        if isinstance(code, str):
            if name is not None:
                raise MessageTypeError(
                    "A name was given both as the first argument and as 'name'. "
                    'Fix: MessageType("chat"), MessageType(name="chat") or '
                    'MessageType(code=200, name="chat").'
                )
            name, code = code, None
        self.code: int
        if code is None:
            if _system:
                raise MessageTypeError("System messages must have an explicit code")
            MessageTypeRegistry.allocate(self)
        else:
            if isinstance(code, bool) or not isinstance(code, int):
                raise MessageTypeError(
                    f"Code must be an int, str, or None, got: {type(code).__name__}. "
                    'Fix: MessageType("chat") auto-allocates a code.'
                )
            if not 0 <= code <= CODE_MAX:
                raise MessageTypeError(f"Code must be between 0 and {CODE_MAX}, got: {code}.")
            if code < USER_MIN and not _system:
                raise MessageTypeError(
                    f"Code {code} is reserved for system messages (0-{USER_MIN - 1}). "
                    f"Use a code between {USER_MIN} and {USER_MAX} for user messages."
                )
            self.code = code
            MessageTypeRegistry.register(self)
        self.name: str = name or f"type_{self.code}"
        self.description: str | None = description

    @classmethod
    def _unregistered(cls, code: int) -> "MessageType":
        t = cls.__new__(cls)
        t.code = code
        t.name = f"type_{code}"
        t.description = None
        return t

    def __repr__(self) -> str:
        return f"MessageType(code={self.code}, name='{self.name}')"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MessageType):
            return NotImplemented
        return self.code == other.code

    def __hash__(self) -> int:
        return hash(self.code)


PING = MessageType(0, "ping", _system=True)
"""The system PING type (code 0); peers answer it with PONG automatically."""
PONG = MessageType(1, "pong", _system=True)
"""The system PONG type (code 1)."""

#: Extra resolvers consulted by :func:`type_for_code` (``veltix_rs.v1`` adds its table).
extra_tables: list[dict[int, object]] = []


def type_for_code(code: int) -> object:
    """The ``MessageType`` for a received code (``Response.type``)."""
    t = MessageTypeRegistry.get(code)
    if t is not None:
        return t
    for table in extra_tables:
        found = table.get(code)
        if found is not None:
            return found
    return MessageType._unregistered(code)
