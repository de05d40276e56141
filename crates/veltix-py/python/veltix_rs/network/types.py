"""``veltix.network.types``: ``MessageType`` and the process-wide ``MessageTypeRegistry``."""

from .._types import MessageType, MessageTypeRegistry

__all__ = ["MessageType", "MessageTypeRegistry"]
