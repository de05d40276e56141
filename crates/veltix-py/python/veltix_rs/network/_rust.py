"""``veltix.network._rust``: the protocol-engine switch of 3.3.0. In veltix_rs everything (not
only framing) is Rust, always."""

__all__ = ["rust_enabled", "engine_name"]


def rust_enabled() -> bool:
    """Always True."""
    return True


def engine_name() -> str:
    """Always ``"rust"``."""
    return "rust"
