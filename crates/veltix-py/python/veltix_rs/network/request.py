"""``veltix.network.request``: ``Request``."""

from ..request import Request

__all__ = ["Request"]
