"""``VeltixBus``: the per-server / per-client event bus (Avyra's API, as in 3.3.0).

Subscribers are ``fn(event, payload)``. ``emit`` calls them synchronously on the emitting thread
in registration order; an exception in a subscriber is caught and returned, never propagated.
Thread-safe: subscriptions are copied on write, so ``emit`` takes no lock.
"""

from __future__ import annotations

import logging
import threading
from enum import Enum, EnumMeta
from typing import Any, Callable, Iterable

from .events import ALL_EVENTS, LogEvent

__all__ = ["EventBus", "VeltixBus"]

Subscriber = Callable[[Enum, Any], Any]

_log = logging.getLogger("veltix_rs")
_LOG_LEVELS = {
    LogEvent.TRACE: 5,
    LogEvent.DEBUG: logging.DEBUG,
    LogEvent.INFO: logging.INFO,
    LogEvent.SUCCESS: 25,
    LogEvent.WARNING: logging.WARNING,
    LogEvent.ERROR: logging.ERROR,
    LogEvent.CRITICAL: logging.CRITICAL,
}


def _members(events: Any) -> list[Enum]:
    if isinstance(events, EnumMeta):
        return list(events)  # type: ignore[arg-type]
    if isinstance(events, Enum):
        return [events]
    if isinstance(events, (list, tuple, set, frozenset)):
        out: list[Enum] = []
        for e in events:
            out.extend(_members(e))
        return out
    raise ValueError(f"not an event, an event enum or a list of them: {events!r}")


class EventBus:
    """A synchronous publish/subscribe bus over registered enum events."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._known: set[Enum] = set()
        self._subs: dict[Enum, tuple[Subscriber, ...]] = {}
        self._watchers: list[Callable[[], None]] = []
        #: True while SENT or SEND-error events have subscribers (checked on every send).
        self.watching_sends = False

    def _changed(self) -> None:
        from .events import ErrorEvent, MessageEvent

        self.watching_sends = bool(self._subs.get(MessageEvent.SENT) or self._subs.get(ErrorEvent.SEND))
        for w in self._watchers:
            w()

    def register(self, events: Any) -> None:
        """Make events (a member, an enum class, or a list) known to the bus."""
        with self._lock:
            self._known.update(_members(events))

    def subscribe(self, events: Any, fn: Subscriber) -> None:
        """Call ``fn(event, payload)`` on each of ``events``. ``ValueError`` for an unknown
        event or if ``fn`` is already subscribed to it."""
        members = _members(events)
        with self._lock:
            for e in members:
                if e not in self._known:
                    raise ValueError(f"unknown event {e!r}: register it first")
                if fn in self._subs.get(e, ()):
                    raise ValueError(f"{fn!r} is already subscribed to {e!r}")
            for e in members:
                self._subs[e] = self._subs.get(e, ()) + (fn,)
        self._changed()

    def unsubscribe(self, events: Any, fn: Subscriber) -> None:
        """Stop calling ``fn`` on ``events`` (no error if it was not subscribed)."""
        with self._lock:
            for e in _members(events):
                self._subs[e] = tuple(s for s in self._subs.get(e, ()) if s is not fn)
        self._changed()

    def once(self, events: Any, fn: Subscriber) -> None:
        """Like ``subscribe``, but ``fn`` is removed after its first call."""
        members = _members(events)

        def wrapper(event: Enum, payload: Any) -> Any:
            self.unsubscribe(members, wrapper)
            return fn(event, payload)

        self.subscribe(members, wrapper)

    def on(self, events: Any) -> Callable[[Subscriber], Subscriber]:
        """Decorator form of ``subscribe``."""

        def deco(fn: Subscriber) -> Subscriber:
            self.subscribe(events, fn)
            return fn

        return deco

    def clear(self, events: Any = None) -> None:
        """Remove every subscriber of ``events`` (all events when None)."""
        with self._lock:
            if events is None:
                self._subs.clear()
            else:
                for e in _members(events):
                    self._subs.pop(e, None)
        self._changed()

    def has_subscriber(self, event: Enum, fn: Subscriber) -> bool:
        """Is ``fn`` subscribed to ``event``?"""
        return fn in self._subs.get(event, ())

    def has_subscribers(self, event: Enum) -> bool:
        """Does ``event`` have any subscriber? (lock-free)"""
        return bool(self._subs.get(event))

    def emit(self, event: Enum, payload: Any = None) -> list[tuple[Subscriber, BaseException]]:
        """Call every subscriber of ``event``; returns the ``(subscriber, exception)`` pairs of
        those that raised."""
        errors: list[tuple[Subscriber, BaseException]] = []
        for fn in self._subs.get(event, ()):
            try:
                fn(event, payload)
            except Exception as e:  # noqa: BLE001 - a subscriber must not break the emitter
                errors.append((fn, e))
        return errors


class VeltixBus(EventBus):
    """The bus of a ``Server`` or ``Client``: every veltix_rs event is registered, and
    ``trace``..``critical`` emit ``LogEvent``s (and log to the ``veltix_rs`` logger)."""

    def __init__(self) -> None:
        super().__init__()
        self.register(list(ALL_EVENTS))

    def _log(self, event: LogEvent, msg: str, args: Iterable[Any]) -> None:
        args = tuple(args)
        text = msg % args if args else msg
        _log.log(_LOG_LEVELS[event], text)
        if self._subs.get(event):
            self.emit(event, text)

    def trace(self, msg: str, *args: Any) -> None:
        """Log at TRACE."""
        self._log(LogEvent.TRACE, msg, args)

    def debug(self, msg: str, *args: Any) -> None:
        """Log at DEBUG."""
        self._log(LogEvent.DEBUG, msg, args)

    def info(self, msg: str, *args: Any) -> None:
        """Log at INFO."""
        self._log(LogEvent.INFO, msg, args)

    def success(self, msg: str, *args: Any) -> None:
        """Log at SUCCESS."""
        self._log(LogEvent.SUCCESS, msg, args)

    def warning(self, msg: str, *args: Any) -> None:
        """Log at WARNING."""
        self._log(LogEvent.WARNING, msg, args)

    def error(self, msg: str, *args: Any) -> None:
        """Log at ERROR."""
        self._log(LogEvent.ERROR, msg, args)

    def critical(self, msg: str, *args: Any) -> None:
        """Log at CRITICAL."""
        self._log(LogEvent.CRITICAL, msg, args)
