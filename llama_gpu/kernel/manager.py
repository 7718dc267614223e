"""Plugin discovery, records, allow/deny lists, and hook calls with error boundaries.

Built-in plugins are listed in :data:`BUILTIN_PLUGINS` and registered first, so that
third-party implementations (registered later) run first in pluggy's order. Third-party
plugins are found through the entry-point group ``llama_gpu``; the entry-point name is
the plugin id. Nothing else is ever imported: an id is looked up among installed
entry points, never treated as a module or file path.

The :class:`~llama_gpu.kernel.plugin_host.PluginHost` drives loading, unloading and dispatch (it
owns what plugins register); this module keeps the records and the ordered hook implementations.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import logging
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pluggy

from . import hookspecs
from .config import Settings
from .errors import InvalidInput, PluginLoadFailed, PluginNotFound
from .types import PluginInfo

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "llama_gpu"

#: Built-in plugins, as ``(id, "module[:attribute]")``, registered in this order.
BUILTIN_PLUGINS: tuple[tuple[str, str], ...] = (
    ("core", "llama_gpu.plugins.core:CorePlugin"),
    ("persistence", "llama_gpu.plugins.persistence:Persistence"),
    ("open_access", "llama_gpu.plugins.auth.open_access"),
    ("api_keys", "llama_gpu.plugins.auth.keys:ApiKeyAuth"),
    ("echo", "llama_gpu.plugins.backends.echo:EchoPlugin"),
    ("llamacpp", "llama_gpu.plugins.backends.llamacpp:LlamaCppPlugin"),
    ("torch", "llama_gpu.plugins.backends.torch:TorchPlugin"),
    ("embedded_models", "llama_gpu.plugins.models.embedded:EmbeddedModels"),
    ("local_models", "llama_gpu.plugins.models.local:LocalModels"),
    ("limits", "llama_gpu.plugins.filters.limits:LimitsFilter"),
    ("rate_limits", "llama_gpu.plugins.auth.ratelimit:RateLimiter"),
    ("monitoring", "llama_gpu.plugins.monitoring.monitor:Monitoring"),
    ("prometheus", "llama_gpu.plugins.monitoring.prometheus:PrometheusExporter"),
    ("socketio_bridge", "llama_gpu.plugins.monitoring.socketio_bridge:SocketIOBridge"),
    ("benchmarks", "llama_gpu.jobs.benchmark:BenchmarkJobs"),
    ("conversions", "llama_gpu.jobs.conversion:ConversionJobs"),
    ("evaluations", "llama_gpu.jobs.evaluation:EvaluationJobs"),
)

#: What a plugin id may look like: an entry-point name, never a path.
PLUGIN_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,63}$")

STATUS_LOADED = "loaded"
STATUS_AVAILABLE = "available"
STATUS_DISABLED = "disabled"
STATUS_BLOCKED = "blocked"
STATUS_ERROR = "error"


@dataclasses.dataclass
class PluginConfig:
    """What an operator configures for a plugin."""

    enabled: bool = True
    #: ``None`` means the plugin's own ``PLUGIN_INFO.priority``.
    priority: int | None = None
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class PluginRecord:
    """Everything the kernel knows of one plugin, loaded or not."""

    id: str
    source: str  # "builtin", "entrypoint" or "python" (added by the embedding program)
    target: str  # "module[:attribute]" it loads from
    #: For ``python`` plugins: makes the plugin object instead of importing ``target``.
    factory: Callable[[], Any] | None = None
    dist_name: str | None = None
    dist_version: str | None = None
    dist_author: str | None = None
    dist_summary: str | None = None
    info: PluginInfo | None = None
    obj: Any = None
    status: str = STATUS_AVAILABLE
    status_detail: str | None = None
    config: PluginConfig = dataclasses.field(default_factory=PluginConfig)
    failures: int = 0
    total_failures: int = 0
    last_error: str | None = None
    load_time: float | None = None
    loaded_at: float | None = None

    @property
    def essential(self) -> bool:
        """Essential plugins cannot be unloaded or disabled."""
        return bool(self.info and self.info.essential)

    @property
    def loaded(self) -> bool:
        """Whether the plugin is registered in the plugin manager now."""
        return self.status == STATUS_LOADED

    @property
    def priority(self) -> int:
        """The configured priority, else the plugin's default (lower runs earlier)."""
        if self.config.priority is not None:
            return self.config.priority
        return self.info.priority if self.info else PluginInfo.priority

    def config_dict(self) -> dict[str, Any]:
        """The configuration as the API shows it."""
        return {"enabled": self.config.enabled, "priority": self.priority, "settings": dict(self.config.settings)}

    def effective_settings(self) -> dict[str, Any]:
        """Default settings overlaid with the configured ones."""
        defaults = dict(self.info.default_settings) if self.info else {}
        return {**defaults, **self.config.settings}

    def describe(self, hooks: list[str]) -> dict[str, Any]:
        """The plugin as the API and the CLI show it."""
        info = self.info or PluginInfo()
        from .. import __version__

        version = info.version or self.dist_version or (__version__ if self.source == "builtin" else None)
        author = info.author or self.dist_author or ("LLaMA GPU" if self.source == "builtin" else None)
        return {
            "id": self.id,
            "name": info.name or self.id.replace("_", " ").replace("-", " ").title(),
            "version": version or "unknown",
            "status": self.status,
            "category": info.category if self.info else "unknown",  # listing never imports a plugin
            "author": author or "unknown",
            "description": info.description or self.dist_summary or "",
            "source": self.source,
            "package": self.dist_name,
            "essential": self.essential,
            "priority": self.priority,
            "config": self.config_dict(),
            "hooks": hooks,
            "failures": self.total_failures,
            "last_error": self.last_error,
            "status_detail": self.status_detail,
            "load_time": self.load_time,
        }


def validate_plugin_id(plugin_id: str) -> str:
    """Refuse ids that are not entry-point names (module paths, file paths…)."""
    if not isinstance(plugin_id, str) or not PLUGIN_ID_RE.match(plugin_id):
        raise InvalidInput(
            "invalid plugin id: plugins are loaded by their installed entry-point name "
            "(lower-case letters, digits, '_' and '-'), never by module or file path",
            details={"plugin_id": str(plugin_id)[:200], "pattern": PLUGIN_ID_RE.pattern},
        )
    return plugin_id


def _placement(impl: Any) -> int:
    """``tryfirst`` implementations come before every priority, ``trylast`` after."""
    return 0 if impl.tryfirst else 2 if impl.trylast else 1


def find_info(obj: Any) -> PluginInfo | None:
    """The ``PLUGIN_INFO`` an object declares, if any."""
    info = getattr(obj, "PLUGIN_INFO", None)
    return info if isinstance(info, PluginInfo) else None


def _import_target(target: str) -> Any:
    module_name, _, attr = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in filter(None, attr.split(".")):
        obj = getattr(obj, part)
    return obj


class PluginManager:
    """The records of every known plugin and the pluggy manager they register in."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.records: dict[str, PluginRecord] = {}
        self.lock = threading.RLock()
        self._ordered: dict[tuple[str, bool], list[tuple[PluginRecord, Any]]] = {}

    # discovery -----------------------------------------------------------------
    def discover(self) -> None:
        """Find built-ins and installed entry points; new ones get a record."""
        with self.lock:
            for plugin_id, target in BUILTIN_PLUGINS:
                self.records.setdefault(plugin_id, PluginRecord(id=plugin_id, source="builtin", target=target))
            importlib.invalidate_caches()
            for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
                self._add_entry_point(ep)
            for record in self.records.values():
                if record.status in (STATUS_AVAILABLE, STATUS_BLOCKED):
                    blocked = self.blocked_reason(record)
                    record.status = STATUS_BLOCKED if blocked else STATUS_AVAILABLE
                    record.status_detail = blocked

    def _add_entry_point(self, ep: importlib.metadata.EntryPoint) -> None:
        if ep.name in self.records:
            existing = self.records[ep.name]
            if existing.source == "builtin" or existing.target != ep.value:
                log.warning("entry point %s=%s ignored: the id is taken by %s", ep.name, ep.value, existing.target)
            return
        if not PLUGIN_ID_RE.match(ep.name):
            log.warning("entry point %r ignored: not a valid plugin id", ep.name)
            return
        dist = ep.dist
        meta = dist.metadata if dist is not None else None
        author = None
        if meta is not None:
            author = meta.get("Author") or meta.get("Author-email")
        self.records[ep.name] = PluginRecord(
            id=ep.name,
            source="entrypoint",
            target=ep.value,
            dist_name=meta.get("Name") if meta is not None else None,
            dist_version=dist.version if dist is not None else None,
            dist_author=author,
            dist_summary=meta.get("Summary") if meta is not None else None,
        )

    def blocked_reason(self, record: PluginRecord) -> str | None:
        """Why the allow/deny lists keep ``record`` out, or ``None``."""
        if record.id in self.settings.disable_plugins:
            return "listed in LLAMA_GPU_DISABLE_PLUGINS"
        if record.source != "builtin" and self.settings.plugins is not None and record.id not in self.settings.plugins:
            return "not listed in LLAMA_GPU_PLUGINS"
        return None

    def get(self, plugin_id: str) -> PluginRecord:
        """The record of ``plugin_id``; PLUGIN_NOT_FOUND lists the known ids."""
        validate_plugin_id(plugin_id)
        with self.lock:
            record = self.records.get(plugin_id)
            if record is None:
                self.discover()  # it may have been installed since
                record = self.records.get(plugin_id)
        if record is None:
            raise PluginNotFound(
                f"plugin {plugin_id!r} is not installed",
                details={"plugin_id": plugin_id, "available": sorted(self.records)},
            )
        return record

    # registration ------------------------------------------------------------------
    def instantiate(self, record: PluginRecord) -> Any:
        """Import the plugin's object (a class is instantiated once per kernel)."""
        try:
            obj = record.factory() if record.factory is not None else _import_target(record.target)
            if isinstance(obj, type):
                obj = obj()
        except Exception as exc:
            raise PluginLoadFailed(
                f"plugin {record.id!r} failed to import: {type(exc).__name__}: {exc}",
                details={"plugin_id": record.id, "target": record.target},
            ) from exc
        return obj

    def register(self, record: PluginRecord, obj: Any) -> None:
        """Register ``obj`` under the record's id and check its hooks exist."""
        with self.lock:
            try:
                self.pm.register(obj, name=record.id)
            except Exception as exc:
                raise PluginLoadFailed(
                    f"plugin {record.id!r} could not be registered: {exc}", details={"plugin_id": record.id}
                ) from exc
            try:
                self.pm.check_pending()
            except pluggy.PluginValidationError as exc:
                self.pm.unregister(obj, name=record.id)
                raise PluginLoadFailed(
                    f"plugin {record.id!r} implements an unknown hook: {exc}", details={"plugin_id": record.id}
                ) from exc
            record.obj = obj
            record.info = find_info(obj) or record.info
            self._ordered.clear()

    def unregister(self, record: PluginRecord) -> None:
        """Take the record's object out of the plugin manager."""
        with self.lock:
            if record.obj is not None and self.pm.is_registered(record.obj):
                self.pm.unregister(record.obj, name=record.id)
            record.obj = None
            self._ordered.clear()

    def invalidate_order(self) -> None:
        """Forget the cached hook order (after a priority change)."""
        with self.lock:
            self._ordered.clear()

    # hook calls ------------------------------------------------------------------------
    def ordered_impls(self, hook: str) -> list[tuple[PluginRecord, Any]]:
        """The implementations of ``hook`` in call order: priority, then pluggy's order (wrappers apart)."""
        return self._order(hook, wrappers=False)

    def ordered_wrappers(self, hook: str) -> list[tuple[PluginRecord, Any]]:
        """The ``wrapper=True``/``hookwrapper=True`` implementations of ``hook``, outermost first."""
        return self._order(hook, wrappers=True)

    def _order(self, hook: str, wrappers: bool) -> list[tuple[PluginRecord, Any]]:
        with self.lock:
            cached = self._ordered.get((hook, wrappers))
            if cached is None:
                impls = list(reversed(getattr(self.pm.hook, hook).get_hookimpls()))
                pairs = [
                    (self.records[i.plugin_name], i)
                    for i in impls
                    if i.plugin_name in self.records and bool(i.wrapper or i.hookwrapper) is wrappers
                ]
                cached = sorted(pairs, key=lambda pair: (_placement(pair[1]), pair[0].priority))
                self._ordered[(hook, wrappers)] = cached
            return cached

    def impls_of(self, hook: str, record: PluginRecord) -> list[Any]:
        """The implementations of ``hook`` that belong to ``record``."""
        return [impl for rec, impl in self.ordered_impls(hook) if rec is record]

    @staticmethod
    def call_impl(impl: Any, kwargs: Mapping[str, Any]) -> Any:
        """Call one implementation with the arguments it asks for."""
        return impl.function(*[kwargs[name] for name in impl.argnames])

    def hooks_of(self, record: PluginRecord) -> list[str]:
        """Names of the hooks ``record`` implements (when loaded)."""
        if record.obj is None:
            return []
        callers = self.pm.get_hookcallers(record.obj) or []
        return sorted(caller.name for caller in callers)

    def iter_records(self) -> Iterator[PluginRecord]:
        """Records in a stable order: built-ins first, then by id."""
        with self.lock:
            records = list(self.records.values())
        builtin_order = {pid: n for n, (pid, _) in enumerate(BUILTIN_PLUGINS)}
        return iter(sorted(records, key=lambda r: (r.source != "builtin", builtin_order.get(r.id, 0), r.id)))
