"""``veltix.network.sender``: ``Sender`` and ``Mode``."""

from ..sender import Mode, Sender

__all__ = ["Sender", "Mode"]
