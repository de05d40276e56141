"""Process-level plumbing: native hooks, callback error reporting, interpreter-exit cleanup."""

from __future__ import annotations

import atexit
import logging
import threading
import weakref
from typing import Any, Callable

from . import _native
from ._types import type_for_code
from .events import ErrorEvent
from .exceptions import InvalidContentError

log = logging.getLogger("veltix_rs")

_native.init(type_for_code, InvalidContentError)

#: Live servers and clients, closed at interpreter exit.
_live: "weakref.WeakSet[Any]" = weakref.WeakSet()
_live_lock = threading.Lock()


def track(obj: Any) -> None:
    """Close ``obj`` (``_shutdown()``) at interpreter exit if it is still alive."""
    with _live_lock:
        _live.add(obj)


#: How long interpreter exit waits for callbacks that are still running (seconds).
EXIT_CALLBACK_WAIT = 5.0


@atexit.register
def _at_exit() -> None:
    """Close live servers and clients, stop calling into Python from the handler pools, and
    wait (bounded) for callbacks still running: a worker that re-entered Python while the
    interpreter finalizes would be killed by CPython (pthread_exit) through Rust frames."""
    with _live_lock:
        objs = list(_live)
    for obj in objs:
        try:
            obj._shutdown()
        except Exception:  # noqa: BLE001 - never fail interpreter exit
            log.debug("veltix_rs: error while closing %r at exit", obj, exc_info=True)
    left = _native.shutdown(EXIT_CALLBACK_WAIT)
    if left:
        log.warning("veltix_rs: %d callback batch(es) still running at interpreter exit", left)


def func_name(func: Any) -> str:
    """A readable name for a callback."""
    return getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or repr(func)


def make_error_reporter(bus_ref: Callable[[], Any]) -> Callable[[Any, BaseException], None]:
    """``on_error(func, exc)`` for the native layer: logs the exception with its traceback and
    emits ``ErrorEvent.CALLBACK {"error", "func"}`` on the owner's bus."""

    def on_error(func: Any, exc: BaseException) -> None:
        name = func_name(func)
        log.error("callback %s raised %s: %s", name, type(exc).__name__, exc,
                  exc_info=(type(exc), exc, exc.__traceback__))
        bus = bus_ref()
        if bus is not None and bus.has_subscribers(ErrorEvent.CALLBACK):
            bus.emit(ErrorEvent.CALLBACK, {"error": str(exc), "func": name})

    return on_error


def report_bus_errors(bus: Any, errors: list, what: str) -> None:
    """Log (with tracebacks) the subscriber exceptions an ``emit`` returned."""
    for fn, exc in errors:
        name = func_name(fn)
        log.error("%s callback %s raised %s: %s", what, name, type(exc).__name__, exc,
                  exc_info=(type(exc), exc, exc.__traceback__))
        if bus.has_subscribers(ErrorEvent.CALLBACK):
            bus.emit(ErrorEvent.CALLBACK, {"error": str(exc), "func": name})


def on_foreign_thread() -> bool:
    """True on a thread Python did not start (a veltix_rs handler-pool worker)."""
    return isinstance(threading.current_thread(), threading._DummyThread)  # type: ignore[attr-defined]
