"""``veltix.network.response``: ``Response``."""

from .._native import Response

__all__ = ["Response"]
