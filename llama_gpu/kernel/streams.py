"""Caps on long-lived connections (SSE streams, Socket.IO connections), and a per-address attempt counter.

Under gunicorn's ``gthread`` worker every open stream or WebSocket holds one of the
worker's threads for its whole life. :class:`StreamLimiter` counts them per identity, per
client address and in total, so that one caller (or one address) cannot take every thread
and leave ``/health`` or other callers unanswered. Counts are per process, as the threads
are. :class:`AttemptCounter` is a sliding one-minute window per key (Socket.IO connects).
"""

from __future__ import annotations

import collections
import math
import threading
import time

from .errors import RateLimitExceeded

#: Seconds a refused stream is told to wait (``Retry-After``): a slot frees when any stream ends.
STREAM_RETRY_AFTER = 5


class StreamLease:
    """One held stream slot; :meth:`release` (idempotent) gives it back."""

    def __init__(self, limiter: StreamLimiter, keys: tuple[str, ...]) -> None:
        self._limiter = limiter
        self._keys = keys
        self._released = False

    def release(self) -> None:
        """Give the slot back (a second call does nothing)."""
        with self._limiter._lock:
            if self._released:
                return
            self._released = True
            for key in self._keys:
                left = self._limiter._counts[key] - 1
                if left > 0:
                    self._limiter._counts[key] = left
                else:
                    del self._limiter._counts[key]


class StreamLimiter:
    """Concurrent streams per identity, per address and in total (``0`` means unlimited)."""

    def __init__(self, per_identity: int, per_address: int, total: int) -> None:
        self.limits = {"identity": per_identity, "address": per_address, "total": total}
        self._lock = threading.Lock()
        self._counts: collections.Counter[str] = collections.Counter()

    def acquire(
        self, identity: str | None = None, address: str | None = None, *, count_total: bool = True
    ) -> StreamLease:
        """Take a slot for ``identity`` and ``address`` (each optional); RATE_LIMIT_EXCEEDED when one is full."""
        wanted: list[tuple[str, str]] = []
        if identity is not None:
            wanted.append(("identity", f"identity:{identity}"))
        if address is not None:
            wanted.append(("address", f"address:{address}"))
        if count_total:
            wanted.append(("total", "total"))
        with self._lock:
            for scope, key in wanted:
                limit = self.limits[scope]
                if limit > 0 and self._counts[key] >= limit:
                    error = RateLimitExceeded(
                        f"too many open streams: at most {limit} per {scope}; retry when one has ended",
                        details={"limit": limit, "scope": scope, "retry_after": STREAM_RETRY_AFTER},
                    )
                    error.retry_after = STREAM_RETRY_AFTER
                    raise error
            for _scope, key in wanted:
                self._counts[key] += 1
        return StreamLease(self, tuple(key for _scope, key in wanted))

    def open(self, scope: str, name: str | None = None) -> int:
        """Streams open now for one identity or address (``scope`` ``total``: all of them)."""
        with self._lock:
            return self._counts["total" if scope == "total" else f"{scope}:{name}"]


class AttemptCounter:
    """Events per key in the last minute; refuses beyond ``per_minute`` (``0``: unlimited)."""

    WINDOW = 60.0

    def __init__(self, per_minute: int, what: str) -> None:
        self.per_minute = per_minute
        self.what = what
        self._lock = threading.Lock()
        self._times: dict[str, collections.deque[float]] = {}

    def _recent(self, key: str, now: float) -> collections.deque[float]:
        times = self._times.setdefault(key, collections.deque())
        while times and times[0] <= now - self.WINDOW:
            times.popleft()
        return times

    def check(self, key: str) -> None:
        """RATE_LIMIT_EXCEEDED when ``key`` has used its minute's allowance (nothing is counted)."""
        if self.per_minute <= 0:
            return
        now = time.monotonic()
        with self._lock:
            times = self._recent(key, now)
            if len(times) >= self.per_minute:
                retry = max(1, math.ceil(times[0] + self.WINDOW - now))
                error = RateLimitExceeded(
                    f"too many {self.what}: at most {self.per_minute} per minute; retry in {retry}s",
                    details={"limit": self.per_minute, "window_s": int(self.WINDOW), "retry_after": retry},
                )
                error.retry_after = retry
                raise error

    def add(self, key: str) -> None:
        """Count one event for ``key``."""
        if self.per_minute <= 0:
            return
        now = time.monotonic()
        with self._lock:
            self._recent(key, now).append(now)
            if len(self._times) > 10_000:  # forget keys whose window is empty
                for stale in [k for k, v in self._times.items() if not v or v[-1] <= now - self.WINDOW]:
                    del self._times[stale]
