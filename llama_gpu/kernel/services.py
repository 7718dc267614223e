"""Typed services: the objects plugins share with each other and with the HTTP layer.

In the spirit of pytest's ``Stash``/``StashKey[T]``: the plugin that shares an object exports a
:class:`ServiceKey` from an import-light module (its package's ``__init__``), and consumers look
the object up with that key, getting a typed object or an error naming the plugin that is missing::

    ACCOUNTS: ServiceKey[Accounts] = ServiceKey("accounts", plugin="api_keys")

    kernel.services[ACCOUNTS] = accounts          # the providing plugin, at start-up
    accounts = kernel.service(ACCOUNTS)           # -> Accounts, or SERVICE_UNAVAILABLE naming api_keys
    maybe = kernel.services.get(ACCOUNTS)         # -> Accounts | None, for optional use

A plain string is still accepted where a key is expected and means the key of that name (the
untyped ``kernel.services["db"]`` of earlier versions); new code uses the keys.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any, Generic, TypeVar, overload

from .errors import ServiceUnavailable

__all__ = ["ServiceKey", "Services"]

T = TypeVar("T")
D = TypeVar("D")


class ServiceKey(Generic[T]):
    """The typed name of a shared object and the plugin that provides it."""

    __slots__ = ("name", "plugin")

    def __init__(self, name: str, plugin: str | None = None) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError("a ServiceKey needs a non-empty name")
        self.name = name
        #: The id of the plugin that shares it (named in the error when it is missing).
        self.plugin = plugin or name

    def __repr__(self) -> str:
        return f"ServiceKey({self.name!r}, plugin={self.plugin!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ServiceKey) and (other.name, other.plugin) == (self.name, self.plugin)

    def __hash__(self) -> int:
        return hash(self.name)

    def missing(self) -> ServiceUnavailable:
        """The error for a lookup of this key when nothing is shared under it."""
        return ServiceUnavailable(
            f"the {self.plugin} plugin is not loaded (it shares the {self.name!r} service)",
            details={"plugin_id": self.plugin, "service": self.name},
        )


class Services:
    """The kernel's shared objects, keyed by :class:`ServiceKey` (thread-safe)."""

    def __init__(self) -> None:
        self._items: dict[str, tuple[ServiceKey[Any], Any]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _name(key: ServiceKey[Any] | str) -> str:
        if isinstance(key, ServiceKey):
            return key.name
        if isinstance(key, str):
            return key
        raise TypeError(f"services are looked up by ServiceKey, got {key!r}")

    @staticmethod
    def _key(key: ServiceKey[T] | str) -> ServiceKey[T]:
        return key if isinstance(key, ServiceKey) else ServiceKey(Services._name(key))

    def __setitem__(self, key: ServiceKey[T], value: T) -> None:
        if value is None:
            raise ValueError(f"cannot share None as {key!r}")
        with self._lock:
            self._items[self._name(key)] = (self._key(key), value)

    @overload
    def __getitem__(self, key: ServiceKey[T]) -> T: ...
    @overload
    def __getitem__(self, key: str) -> Any: ...
    def __getitem__(self, key: ServiceKey[T] | str) -> Any:
        """The shared object; SERVICE_UNAVAILABLE naming the providing plugin when absent."""
        item = self._items.get(self._name(key))
        if item is None:
            raise self._key(key).missing()
        return item[1]

    @overload
    def get(self, key: ServiceKey[T]) -> T | None: ...
    @overload
    def get(self, key: ServiceKey[T], default: D) -> T | D: ...
    @overload
    def get(self, key: str, default: Any = None) -> Any: ...
    def get(self, key: ServiceKey[Any] | str, default: Any = None) -> Any:
        """The shared object, or ``default`` when nothing is shared under ``key``."""
        item = self._items.get(self._name(key))
        return default if item is None else item[1]

    def setdefault(self, key: ServiceKey[T], value: T) -> T:
        """Share ``value`` unless something is shared already; the object shared now."""
        with self._lock:
            item = self._items.setdefault(self._name(key), (self._key(key), value))
        return item[1]

    def pop(self, key: ServiceKey[T] | str, default: Any = None) -> Any:
        """Stop sharing ``key``; what was shared, or ``default``."""
        with self._lock:
            item = self._items.pop(self._name(key), None)
        return default if item is None else item[1]

    def discard(self, key: ServiceKey[T], value: T) -> None:
        """Stop sharing ``key`` if ``value`` is what is shared (a plugin's shutdown)."""
        with self._lock:
            item = self._items.get(self._name(key))
            if item is not None and item[1] is value:
                del self._items[self._name(key)]

    def __delitem__(self, key: ServiceKey[Any] | str) -> None:
        if self.pop(key) is None:
            raise self._key(key).missing()

    def __contains__(self, key: object) -> bool:
        return isinstance(key, ServiceKey | str) and self._name(key) in self._items

    def __iter__(self) -> Iterator[ServiceKey[Any]]:
        return iter([key for key, _ in list(self._items.values())])

    def __len__(self) -> int:
        return len(self._items)

    def keys(self) -> list[ServiceKey[Any]]:
        """The keys shared now."""
        return list(self)

    def values(self) -> list[Any]:
        """The objects shared now."""
        return [value for _, value in list(self._items.values())]

    def items(self) -> list[tuple[ServiceKey[Any], Any]]:
        """(key, object) pairs shared now."""
        return list(self._items.values())

    def __repr__(self) -> str:
        return f"Services({sorted(self._items)})"
