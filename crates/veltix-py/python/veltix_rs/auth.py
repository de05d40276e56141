"""Authentication (veltix_rs extra): the answers of ``Server.authenticate`` hooks.

A hook ``func(request: AuthRequest)`` decides, for every client that completed the handshake,
whether it is let in. It may return:

- ``True`` or ``None``: accept;
- ``Accept(tags={...})`` (or a ``dict`` of tags): accept and set these tags on the client's
  ``ClientInfo`` before ``on_connect`` runs (values must be JSON-serialisable: they are stored
  by the core);
- ``False``: reject with the reason ``"unauthorized"``;
- a ``str`` or ``Reject("reason")``: reject with that reason (sent to the client as
  ``{"error": REASON}``: a veltix_rs client's ``connect()`` returns False with the reason in
  ``client.rejection_reason``; a Python Veltix 3.3.0 client's ``connect()`` returns False);
- a tuple ``(True, tags_dict_or_None)`` or ``(False, reason_or_None)``.

Anything else, or an exception in the hook, rejects the client with ``"authentication
failed"`` and is logged with its traceback (logger ``veltix_rs``, ``ErrorEvent.CALLBACK``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ._native import AuthRequest, TlsInfo

__all__ = ["Accept", "Reject", "AuthRequest", "TlsInfo", "DEFAULT_REASON"]

#: The reason sent for ``False`` and for an empty reason.
DEFAULT_REASON = "unauthorized"


@dataclass(frozen=True, slots=True)
class Accept:
    """Let the client in, setting ``tags`` (str keys, JSON-serialisable values) on its
    ``ClientInfo``."""

    tags: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Reject:
    """Refuse the client with ``reason`` (sent as ``{"error": reason}``, cut to 1024 bytes)."""

    reason: str = DEFAULT_REASON


def _tags_json(tags: Any) -> str | None:
    if tags is None:
        return None
    if not isinstance(tags, dict):
        raise TypeError(f"authenticate tags must be a dict, got {type(tags).__name__}")
    if not tags:
        return None
    for k in tags:
        if not isinstance(k, str):
            raise TypeError(f"authenticate tag names must be str, got {type(k).__name__} ({k!r})")
    try:
        return json.dumps(tags)
    except (TypeError, ValueError) as e:
        raise TypeError(f"authenticate tag values must be JSON-serialisable: {e}") from e


def _reason(reason: Any) -> str:
    if reason is None or reason == "":
        return DEFAULT_REASON
    if not isinstance(reason, str):
        raise TypeError(f"a rejection reason must be a str, got {type(reason).__name__} ({reason!r})")
    return reason


def normalize(answer: Any) -> tuple[bool, str, str | None]:
    """A hook's answer as ``(accept, reason, tags_json)`` (what the native layer takes);
    ``TypeError`` for an answer of no documented shape."""
    if answer is None or answer is True:
        return (True, "", None)
    if answer is False:
        return (False, DEFAULT_REASON, None)
    if isinstance(answer, str):
        return (False, _reason(answer), None)
    if isinstance(answer, Accept):
        return (True, "", _tags_json(answer.tags))
    if isinstance(answer, Reject):
        return (False, _reason(answer.reason), None)
    if isinstance(answer, dict):
        return (True, "", _tags_json(answer))
    if isinstance(answer, tuple) and len(answer) == 2 and isinstance(answer[0], bool):
        ok, extra = answer
        if ok:
            return (True, "", _tags_json(extra))
        return (False, _reason(extra), None)
    raise TypeError(
        f"authenticate hook returned {type(answer).__name__} ({answer!r}); return True/None, "
        "False, a reason str, Accept(tags={...}), Reject(reason), a tags dict, or "
        "(True, tags) / (False, reason)"
    )
