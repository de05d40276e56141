"""``veltix.network.system_types``: ``PING`` and ``PONG``."""

from .._types import PING, PONG

__all__ = ["PING", "PONG"]
