"""Encoding helpers (3.3.0's ``veltix.utils``)."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["encode_utf8", "decode_utf8", "encode_json", "decode_json", "format_bytes"]


def encode_utf8(data: "str | bytes") -> bytes:
    """UTF-8 encode a str; bytes pass through."""
    return data if isinstance(data, bytes) else data.encode("utf-8")


def decode_utf8(data: bytes) -> str:
    """Decode UTF-8 bytes."""
    return data.decode("utf-8")


def encode_json(obj: Any) -> bytes:
    """``json.dumps(obj).encode("utf-8")``."""
    return json.dumps(obj).encode("utf-8")


def decode_json(data: bytes) -> Any:
    """``json.loads`` of bytes."""
    return json.loads(data)


def format_bytes(size: float) -> str:
    """A human-readable size: ``format_bytes(1536) == "1.5 KB"`` (negative values too)."""
    sign = "-" if size < 0 else ""
    value = float(abs(size))
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024:
            return f"{sign}{value:.4g} {unit}"
        value /= 1024
    return f"{sign}{value:.4g} TB"
