"""Rate limits per endpoint group and caller, counted with the ``limits`` library.

Each call is counted against the hourly limit of its endpoint group (``infer``, ``batch``,
``stream``, ``models``, ``plugins``, ``system``, ``auth``; any other group counts as
``system``), as many times as it asks for sequences: a completion of 8 prompts with
``best_of`` 2 counts 16 (at most the limit itself). An authenticated caller is counted by
its owner (``Identity.owner``: the user an API key belongs to, or the root key of its
lineage; so minting keys does not multiply limits) or else its identity (kind and id);
anyone else (no identity, or the anonymous identity of ``LLAMA_GPU_AUTH=off``) by client
address, with the smaller anonymous limits. Premium identities get 10x the inference
limits and 5x the management limits.
``LLAMA_GPU_RATE_LIMIT_OVERRIDES`` (``infer=2000/200,batch=50/5``: authenticated/anonymous
per hour) replaces defaults; it is parsed strictly at start-up.

**Window: moving window.** A caller never gets more than N calls in any 60 minutes. A
fixed window would let a caller spend N calls at the end of one window and N more at the
start of the next (2N GPU-heavy calls in a few seconds); the moving window does not, and its
reset time is exact: ``Retry-After`` says when the oldest counted call leaves the window,
which is when the next call is allowed. The price is one timestamp per counted call and key
(at most the limit: refused calls are not stored), which is small at hourly limits.

**Storage:** ``memory://`` (per process) unless ``LLAMA_GPU_REDIS_URL`` is set, so that
several instances share their counters. Redis keys start with the plugin setting
``key_prefix`` (default ``llama_gpu``): give each deployment sharing a Redis its own.
Instances should keep their clocks in sync (NTP): entries are stamped with local time.

**Redis unreachable: fail open, to local counting.** A Redis error never refuses a call:
for ``fallback_seconds`` (default 30) this instance counts in its own memory, then tries
Redis again. The limits keep holding per instance (at worst N times the limit across N
instances) instead of all traffic failing (closed) or all limits vanishing (open). Counters
are not an access control: authentication still applies. Each outage is logged once and
shows in the metrics ``storage_errors_total`` and ``fallback_active``.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from limits import RateLimitItem, RateLimitItemPerHour
from limits.errors import ConfigurationError as LimitsConfigurationError
from limits.errors import StorageError
from limits.storage import MemoryStorage, Storage, storage_from_string
from limits.strategies import MovingWindowRateLimiter
from marshmallow import Schema, fields, validate

from ...kernel.config import ENV_PREFIX
from ...kernel.errors import ConfigurationError
from ...kernel.hookspecs import hookimpl
from ...kernel.kernel import Kernel
from ...kernel.types import Identity, PluginInfo, RateLimitStatus

log = logging.getLogger(__name__)

#: Calls per hour by endpoint group: (authenticated, anonymous).
DEFAULT_LIMITS: dict[str, tuple[int, int]] = {
    "infer": (1000, 100),
    "batch": (100, 10),
    "stream": (500, 50),
    "system": (6000, 600),
    "models": (1000, 100),
    "plugins": (500, 50),
    "auth": (60, 30),
}
#: The group of any call whose group has no limit of its own.
FALLBACK_GROUP = "system"
#: Multipliers of the authenticated limit for premium identities.
PREMIUM_FACTORS: dict[str, int] = {
    "infer": 10,
    "batch": 10,
    "stream": 10,
    "models": 5,
    "plugins": 5,
    "system": 5,
    "auth": 5,
}
OVERRIDES_VARIABLE = f"{ENV_PREFIX}RATE_LIMIT_OVERRIDES"
_OVERRIDE = re.compile(r"^([a-z_]+)=(\d+)/(\d+)$")
_KEY_PREFIX = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")


def parse_overrides(raw: str) -> dict[str, tuple[int, int]]:
    """Parse ``infer=2000/200,batch=50/5``; ConfigurationError naming the variable when it does not parse."""
    overrides: dict[str, tuple[int, int]] = {}
    for entry in (part.strip() for part in raw.split(",")):
        if not entry and not raw.strip():
            continue
        match = _OVERRIDE.match(entry.replace(" ", ""))
        problem = None
        if match is None:
            problem = "expected group=AUTHENTICATED/ANONYMOUS calls per hour"
        elif match[1] not in DEFAULT_LIMITS:
            problem = f"unknown group {match[1]!r} (known: {', '.join(DEFAULT_LIMITS)})"
        elif match[1] in overrides:
            problem = f"group {match[1]!r} given twice"
        elif int(match[2]) <= 0 or int(match[3]) <= 0:
            problem = "limits must be positive integers"
        if problem or match is None:
            raise ConfigurationError(
                f"{OVERRIDES_VARIABLE}={raw!r} is invalid at {entry!r}: {problem}, e.g. 'infer=2000/200,batch=50/5'",
                details={"variable": OVERRIDES_VARIABLE, "value": raw, "entry": entry},
            )
        overrides[match[1]] = (int(match[2]), int(match[3]))
    return overrides


def make_storage(url: str, key_prefix: str, timeout: float) -> Storage:
    """The counters' storage: ``memory://`` for an empty ``url``, else Redis (errors wrapped in StorageError)."""
    if not url:
        return MemoryStorage()
    try:
        return storage_from_string(
            url, key_prefix=key_prefix, wrap_exceptions=True, socket_connect_timeout=timeout, socket_timeout=timeout
        )
    except (LimitsConfigurationError, ValueError) as exc:
        raise ConfigurationError(
            f"{ENV_PREFIX}REDIS_URL is not a usable Redis URL: {exc}", details={"variable": f"{ENV_PREFIX}REDIS_URL"}
        ) from exc


def _close(storage: Storage | None) -> None:
    client = getattr(storage, "storage", None)
    if client is not None and hasattr(client, "close"):
        try:
            client.close()
        except Exception:  # closing a broken connection must not fail an unload
            log.debug("closing the rate-limit storage failed", exc_info=True)


class RateLimitSettings(Schema):
    """The ``rate_limits`` plugin's settings (``LLAMA_GPU_RATE_LIMITS_<KEY>``)."""

    enabled = fields.Boolean(load_default=True, metadata={"alias": "rate_limits", "description": "Enforce limits."})
    overrides = fields.String(
        load_default="",
        metadata={"alias": "rate_limit_overrides", "description": "Per-group limits, e.g. infer=2000/200,batch=50/5"},
    )
    key_prefix = fields.String(load_default="llama_gpu", validate=validate.Regexp(_KEY_PREFIX))
    fallback_seconds = fields.Float(load_default=30.0, validate=validate.Range(min=0, min_inclusive=False))
    redis_timeout = fields.Float(load_default=0.5, validate=validate.Range(min=0, min_inclusive=False))


class RateLimiter:
    """Moving-window limits per endpoint group, per identity or client address (``memory://`` or Redis)."""

    PLUGIN_INFO = PluginInfo(
        name="Rate limits",
        category="ratelimit",
        description="Hourly limits per endpoint group and caller (moving window), shared through Redis when set.",
        default_settings={"key_prefix": "llama_gpu", "fallback_seconds": 30.0, "redis_timeout": 0.5},
        settings_schema=RateLimitSettings,
    )

    def __init__(self) -> None:
        self.limits: dict[str, tuple[int, int]] = dict(DEFAULT_LIMITS)
        self.shared = False
        self.enabled = False
        self._primary: MovingWindowRateLimiter | None = None
        self._where: tuple[str, str, float] | None = None
        self._fallback: MovingWindowRateLimiter | None = None
        self._fallback_seconds = 30.0
        self._fallback_until = 0.0
        self._lock = threading.Lock()
        self.stats: dict[str, int] = {"checks": 0, "limited": 0, "storage_errors": 0}

    # ---------------------------------------------------------------- configuration
    @hookimpl
    def configure(self, kernel: Kernel, settings: Mapping[str, Any]) -> None:
        """Parse the overrides (ConfigurationError) and open the storage (the settings are validated already)."""
        limits = {**DEFAULT_LIMITS, **parse_overrides(settings["overrides"])}
        enabled = bool(settings["enabled"])
        key_prefix = settings.get("key_prefix", "llama_gpu")
        if not isinstance(key_prefix, str) or not _KEY_PREFIX.match(key_prefix):
            raise ValueError(f"key_prefix must match {_KEY_PREFIX.pattern}, got {key_prefix!r}")
        fallback_seconds = _positive(settings, "fallback_seconds", 30.0)
        timeout = _positive(settings, "redis_timeout", 0.5)
        where = (kernel.settings.redis_url, key_prefix, timeout)
        primary = self._primary if where == self._where else None  # same storage: keep the counters
        if primary is None and enabled:
            primary = MovingWindowRateLimiter(make_storage(*where))
        with self._lock:
            old, self._primary, self._where = self._primary, primary, where
            self.limits, self.shared, self.enabled = limits, bool(kernel.settings.redis_url), enabled
            self._fallback_seconds, self._fallback_until = fallback_seconds, 0.0
        if old is not primary:
            _close(old.storage if old else None)

    @hookimpl
    def shutdown(self) -> None:
        """Close the Redis connections."""
        with self._lock:
            old, self._primary, self._where = self._primary, None, None
        _close(old.storage if old else None)

    # ---------------------------------------------------------------- the hook
    def limit_for(self, group: str, identity: Identity | None) -> int:
        """Calls per hour allowed in ``group`` to ``identity`` (``None``: anonymous)."""
        authenticated, anonymous = self.limits.get(group) or self.limits[FALLBACK_GROUP]
        if identity is None:
            return anonymous
        if identity.tier == "premium":
            return authenticated * PREMIUM_FACTORS.get(group, PREMIUM_FACTORS[FALLBACK_GROUP])
        return authenticated

    @hookimpl
    def rate_limit(
        self, identity: Identity | None, group: str, client: str, kernel: Kernel, cost: int
    ) -> RateLimitStatus | None:
        """Count the call as ``cost`` units (its sequences); its status (``allowed=False`` over the limit)."""
        primary = self._primary
        if not self.enabled or primary is None:
            return None
        group = group if group in self.limits else FALLBACK_GROUP
        if identity is not None and identity.kind == "anonymous":
            identity = None
        # a key counts against its owner's limits (its user, or the root of its lineage): minting keys adds none
        caller = f"ip:{client}" if identity is None else identity.owner or f"{identity.kind}:{identity.id}"
        item = RateLimitItemPerHour(self.limit_for(group, identity))
        keys = (group, quote(caller, safe=":"))
        limiter = primary if time.monotonic() >= self._fallback_until else self._local()
        try:
            status = self._count(limiter, item, keys, cost)
        except StorageError as exc:
            self._storage_failed(exc)
            status = self._count(self._local(), item, keys, cost)
        else:
            if limiter is primary and self._fallback_until:
                self._fallback_until = 0.0
                log.warning("rate-limit storage reachable again; counters are shared again")
        with self._lock:
            self.stats["checks"] += 1
            self.stats["limited"] += not status.allowed
        return status

    @staticmethod
    def _count(
        limiter: MovingWindowRateLimiter, item: RateLimitItem, keys: tuple[str, ...], cost: int = 1
    ) -> RateLimitStatus:
        allowed = limiter.hit(item, *keys, cost=min(max(1, cost), item.amount))
        stats = limiter.get_window_stats(item, *keys)
        return RateLimitStatus(
            limit=item.amount, remaining=max(0, stats.remaining), reset=stats.reset_time, allowed=allowed
        )

    def _local(self) -> MovingWindowRateLimiter:
        with self._lock:
            if self._fallback is None:
                self._fallback = MovingWindowRateLimiter(MemoryStorage())
            return self._fallback

    def _storage_failed(self, exc: StorageError) -> None:
        with self._lock:
            self.stats["storage_errors"] += 1
            first = not self._fallback_until
            self._fallback_until = time.monotonic() + self._fallback_seconds
        if first:
            log.error(
                "rate-limit storage unreachable (%s: %s); counting in this instance's memory, retrying in %ss",
                type(exc.storage_error).__name__,
                exc.storage_error,
                self._fallback_seconds,
            )

    @hookimpl
    def collect_metrics(self) -> Mapping[str, float]:
        """Calls counted, calls refused, storage errors, and whether the memory fallback is in use."""
        with self._lock:
            return {
                "checks_total": float(self.stats["checks"]),
                "limited_total": float(self.stats["limited"]),
                "storage_errors_total": float(self.stats["storage_errors"]),
                "fallback_active": float(self.shared and time.monotonic() < self._fallback_until),
            }


def _positive(settings: Mapping[str, Any], key: str, default: float) -> float:
    value = settings.get(key, default)
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{key} must be a positive number of seconds, got {value!r}")
    return float(value)
