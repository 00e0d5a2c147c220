"""A tiny synchronous publish/subscribe bus.

The engine publishes events (``step``, ``forward_backward``, ``save``, ``load``, ``package``,
``audit``, ``budget_warning``, ``budget_refused``, ``interrupt``, ``close``); widgets, magics and
loggers subscribe. The engine never imports the notebook layer: this bus is the only link.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["Event", "EventBus"]

log = logging.getLogger(__name__)

Event = dict[str, Any]
Handler = Callable[[str, Event], None]


class EventBus:
    """Fan events out to subscribers; a failing subscriber is logged and never breaks training."""

    def __init__(self) -> None:
        self._handlers: list[tuple[str | None, Handler]] = []
        self._lock = threading.Lock()

    def subscribe(self, handler: Handler, *, kind: str | None = None) -> Callable[[], None]:
        """Call ``handler(kind, payload)`` for every event (or only ``kind``); returns an unsubscribe function."""
        entry = (kind, handler)
        with self._lock:
            self._handlers.append(entry)

        def unsubscribe() -> None:
            with self._lock:
                if entry in self._handlers:
                    self._handlers.remove(entry)

        return unsubscribe

    def publish(self, kind: str, payload: Event | None = None) -> None:
        """Deliver ``payload`` to the subscribers of ``kind`` in subscription order."""
        payload = payload or {}
        with self._lock:
            handlers = list(self._handlers)
        for want, handler in handlers:
            if want is None or want == kind:
                try:
                    handler(kind, payload)
                except Exception:  # a widget bug must not stop training
                    log.exception("event subscriber failed on %r", kind)

    def clear(self) -> None:
        """Drop every subscriber (used when a client closes)."""
        with self._lock:
            self._handlers.clear()
