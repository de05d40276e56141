"""Registration-time checks of callback signatures (3.3.0 behaviour: a callback that cannot take
the arguments it will be called with raises ``TypeError`` when it is registered, with a fix)."""

from __future__ import annotations

import inspect
from typing import Any, Callable

__all__ = ["check_signature"]

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
_VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


def check_signature(
    func: Callable[..., Any],
    *,
    label: str,
    nargs: int,
    dispatched: str,
    fix: str,
    target: str | None = None,
) -> None:
    """Raise ``TypeError`` unless ``func`` accepts exactly ``nargs`` positional arguments.

    Callables that cannot be inspected, and ones taking ``*args``/``**kwargs``, are accepted.
    """
    if not callable(func):
        raise TypeError(f"{label} must be callable, got {type(func).__name__}")
    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):
        return
    if any(p.kind in _VARIADIC for p in params):
        return
    positional = [p for p in params if p.kind in _POSITIONAL]
    low = sum(1 for p in positional if p.default is inspect.Parameter.empty)
    high = len(positional)
    kw_missing = any(
        p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is inspect.Parameter.empty
        for p in params
    )
    if low <= nargs <= high and not kw_missing:
        return
    name = getattr(func, "__name__", type(func).__name__)
    where = f" for '{target}'" if target else ""
    accepts = str(low) if low == high else f"{low}-{high}"
    extra = " and missing keyword-only arguments" if kw_missing else ""
    raise TypeError(
        f"{label} '{name}'{where} cannot be called with ({dispatched}): "
        f"its signature accepts {accepts} positional argument(s){extra}. "
        f"Fix: def {name}({fix}) -> None."
    )
