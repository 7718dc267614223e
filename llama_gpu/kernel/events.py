"""The event bus: thread-safe, and a slow or failing subscriber never blocks a publisher.

Each subscriber has its own bounded queue and its own delivery thread. ``publish``
only appends to those queues (never waits); a subscriber whose queue is full loses the
event and the loss is counted. A subscriber that raises is reported through its
``on_error`` callback and keeps receiving later events.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from .errors import InvalidInput
from .types import Event

log = logging.getLogger(__name__)

Subscriber = Callable[[Event], None]
ErrorCallback = Callable[["Subscription", Event, BaseException], None]

_STOP = object()


class Subscription:
    """One subscriber's queue and delivery thread."""

    def __init__(self, name: str, callback: Subscriber, maxsize: int, on_error: ErrorCallback | None) -> None:
        self.name = name
        self.callback = callback
        self.on_error = on_error
        self.delivered = 0
        self.dropped = 0
        self.failed = 0
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=maxsize)
        self._thread = threading.Thread(target=self._run, name=f"events-{name}", daemon=True)
        self._thread.start()

    def offer(self, event: Event) -> bool:
        """Queue ``event`` without waiting; False (and counted) when the queue is full."""
        try:
            self._queue.put_nowait(event)
            return True
        except queue.Full:
            self.dropped += 1
            return False

    def close(self, timeout: float = 2.0) -> None:
        """Deliver what is queued (within ``timeout``), then stop the thread."""
        with contextlib.suppress(queue.Full):
            self._queue.put(_STOP, timeout=timeout)
        if threading.current_thread() is not self._thread:  # a subscriber may unsubscribe itself
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            try:
                self.callback(item)
                self.delivered += 1
            except BaseException as exc:
                self.failed += 1
                log.exception("event subscriber %s failed on %s", self.name, item.type)
                if self.on_error is not None:
                    try:
                        self.on_error(self, item, exc)
                    except Exception:
                        log.exception("error callback of %s failed", self.name)


class EventBus:
    """Publish events to every subscriber, each on its own thread."""

    def __init__(self, queue_size: int = 1000) -> None:
        self._queue_size = queue_size
        self._lock = threading.Lock()
        self._subscriptions: dict[str, Subscription] = {}
        self._types: dict[str, str] = {}
        self.published = 0

    # event types -------------------------------------------------------
    def add_type(self, name: str, description: str) -> None:
        """Declare an event type; a second declaration of one name fails."""
        if not isinstance(name, str) or not name.replace("_", "").replace(".", "").isalnum():
            raise ValueError(f"invalid event type name {name!r}: use letters, digits, '_' and '.'")
        with self._lock:
            if name in self._types:
                raise ValueError(f"event type {name!r} is declared twice")
            self._types[name] = description

    def remove_type(self, name: str) -> None:
        """Forget an event type (when the plugin that declared it is unloaded)."""
        with self._lock:
            self._types.pop(name, None)

    @property
    def types(self) -> dict[str, str]:
        """Declared event types and their descriptions."""
        with self._lock:
            return dict(self._types)

    # subscribers ---------------------------------------------------------
    def subscribe(self, name: str, callback: Subscriber, on_error: ErrorCallback | None = None) -> Subscription:
        """Add a subscriber under a unique ``name``; it receives events published from now on."""
        with self._lock:
            if name in self._subscriptions:
                raise ValueError(f"subscriber {name!r} already exists")
            sub = Subscription(name, callback, self._queue_size, on_error)
            self._subscriptions[name] = sub
            return sub

    def unsubscribe(self, name: str) -> None:
        """Remove a subscriber, delivering what it has queued first."""
        with self._lock:
            sub = self._subscriptions.pop(name, None)
        if sub is not None:
            sub.close()

    def subscriptions(self) -> list[Subscription]:
        """The current subscriptions."""
        with self._lock:
            return list(self._subscriptions.values())

    # publishing ------------------------------------------------------------
    def publish(self, type: str, data: dict[str, Any] | None = None) -> Event:
        """Send an event of a declared ``type`` to every subscriber; never blocks."""
        with self._lock:
            if type not in self._types:
                raise InvalidInput(f"unknown event type {type!r}", details={"known": sorted(self._types)})
            subs = list(self._subscriptions.values())
            self.published += 1
        event = Event(type=type, data=dict(data or {}))
        for sub in subs:
            sub.offer(event)
        return event

    def close(self) -> None:
        """Stop every subscriber after it has delivered what it holds."""
        with self._lock:
            subs = list(self._subscriptions.values())
            self._subscriptions.clear()
        for sub in subs:
            sub.close()
