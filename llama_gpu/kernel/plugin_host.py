"""The plugin host: runtime load/unload/configure of plugins and the dispatch of every hook.

One table, :data:`HOOKS`, says how each hook is dispatched (its aggregation rule, as stated in
:mod:`.hookspecs`); the host, the meta-tests and the docs all read it:

- ``collector``: called once per plugin at activation with a ``register`` callback; what is
  registered is validated, owned by the plugin, and removed again when it is unloaded
  (:data:`COLLECTORS` says what each collector registers into).
- ``firstresult``: in priority order, the first non-``None`` answer wins (:meth:`PluginHost.call_first`).
- ``pipeline``: every implementation in priority order, each in its own error boundary
  (:meth:`PluginHost.run_pipeline`).
- ``per-plugin``: each implementation with arguments of its own plugin (``configure``).
- ``broadcast``: every implementation; failures are reported and skipped (:meth:`PluginHost.call_all`).
- ``subscriber``: ``on_event``, on the plugin's own event-bus thread.

Wrappers (``@hookimpl(wrapper=True)`` and the old ``hookwrapper=True``) are supported around
``pipeline`` and ``firstresult`` hooks, where cross-cutting concerns such as timing belong: each
wraps the whole call, as in pluggy. On any other hook a wrapper is refused when its plugin is
registered, with an error naming the plugin and the hook.

Access hooks (``fail_closed`` in the table) and plugins declaring ``PluginInfo(fail_closed=True)``
are never disabled after failures (that would open what they guard); their failures refuse the
request they were deciding.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import pluggy

from .errors import (
    ConfigurationError,
    Conflict,
    InvalidInput,
    LlamaGPUError,
    PermissionDenied,
    PluginEssential,
    PluginFailed,
    PluginLoadFailed,
    PluginNotLoaded,
)
from .manager import (
    STATUS_AVAILABLE,
    STATUS_DISABLED,
    STATUS_ERROR,
    STATUS_LOADED,
    PluginConfig,
    PluginRecord,
    find_info,
    validate_plugin_id,
)
from .plugin_settings import resolve_settings, sources_of
from .types import Event

if TYPE_CHECKING:
    from .kernel import Kernel

#: Plugin lifecycle records keep the kernel's logger: the monitoring log view files them under ``kernel.kernel``.
log = logging.getLogger("llama_gpu.kernel.kernel")


class Dispatch(enum.StrEnum):
    """How the host calls a hook (the ``Aggregation:`` line of its spec)."""

    COLLECTOR = "collector"
    FIRSTRESULT = "firstresult"
    PIPELINE = "pipeline"
    PER_PLUGIN = "per-plugin"
    BROADCAST = "broadcast"
    SUBSCRIBER = "subscriber"


@dataclasses.dataclass(frozen=True)
class HookRule:
    """The dispatch of one hook."""

    kind: Dispatch
    #: An access hook: its plugins are never auto-disabled and their failures refuse the request.
    fail_closed: bool = False

    @property
    def wrappable(self) -> bool:
        """Whether ``wrapper=True`` implementations may wrap the call."""
        return self.kind in (Dispatch.PIPELINE, Dispatch.FIRSTRESULT)


_C, _F, _P = Dispatch.COLLECTOR, Dispatch.FIRSTRESULT, Dispatch.PIPELINE

#: Every hook and its dispatch. Collectors are called in this order when a plugin is activated.
HOOKS: Mapping[str, HookRule] = MappingProxyType(
    {
        "configure": HookRule(Dispatch.PER_PLUGIN),
        "startup": HookRule(Dispatch.BROADCAST),
        "shutdown": HookRule(Dispatch.BROADCAST),
        "register_event_types": HookRule(_C),
        "register_backends": HookRule(_C),
        "register_models": HookRule(_C),
        "register_commands": HookRule(_C),
        "register_routes": HookRule(_C),
        "register_benchmark_metrics": HookRule(_C),
        "collect_metrics": HookRule(Dispatch.BROADCAST),
        "prepare_request": HookRule(_P),
        "process_chunk": HookRule(_P),
        "process_response": HookRule(_P),
        "authenticate": HookRule(_F, fail_closed=True),
        "check_permission": HookRule(_F, fail_closed=True),
        "rate_limit": HookRule(_F, fail_closed=True),
        "on_event": HookRule(Dispatch.SUBSCRIBER),
    }
)


def hooks_of_kind(kind: Dispatch) -> tuple[str, ...]:
    """The hooks dispatched as ``kind``, in table order."""
    return tuple(name for name, rule in HOOKS.items() if rule.kind is kind)


#: Collector hooks, in activation order.
COLLECTORS: tuple[str, ...] = hooks_of_kind(Dispatch.COLLECTOR)
#: Access hooks: a plugin implementing one fails closed.
FAIL_CLOSED_HOOKS: frozenset[str] = frozenset(name for name, rule in HOOKS.items() if rule.fail_closed)


def is_wrapper(impl: Any) -> bool:
    """Whether a pluggy ``HookImpl`` is a wrapper (new or old style)."""
    return bool(getattr(impl, "wrapper", False) or getattr(impl, "hookwrapper", False))


def _named(hook: str, args: tuple[Any, ...]) -> str:
    """The name of what a ``register_commands``/``register_routes`` call registers."""
    name = getattr(args[0], "name", None) if len(args) == 1 else None
    if not isinstance(name, str) or not name:
        raise TypeError(f"{hook} expects an object with a name, got {args!r}")
    return name


class PluginHost:
    """Loads, configures and unloads plugins of one kernel, and dispatches its hooks."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.plugins = kernel.plugins
        self.commands: dict[str, Any] = {}
        self.routes: dict[str, Any] = {}
        self.benchmark_metrics: dict[str, Callable[[list[Any]], float | None]] = {}
        self._owned: dict[str, list[tuple[str, str]]] = {}
        self._loaded = False
        #: What each collector's ``register(*args)`` does: add (returns the owned name, or None
        #: when the registry keeps ownership itself) and remove by name.
        self._collectors: dict[str, tuple[Callable[..., str | None], Callable[[str], None]]] = {
            "register_event_types": (self._add_event_type, kernel.events.remove_type),
            "register_backends": (self._add_backend, lambda _name: None),
            "register_models": (self._add_model, lambda _name: None),
            "register_commands": (self._adder("register_commands", self.commands), self._remover(self.commands)),
            "register_routes": (self._adder("register_routes", self.routes), self._remover(self.routes)),
            "register_benchmark_metrics": (self._add_benchmark_metric, self._remover(self.benchmark_metrics)),
        }
        assert set(self._collectors) == set(COLLECTORS), "every collector hook has a registrar"

    # ---------------------------------------------------------------- collectors
    def _add_event_type(self, record: PluginRecord, name: str, description: str) -> str:
        self.kernel.events.add_type(name, description)
        return name

    def _add_backend(self, record: PluginRecord, backend: Any) -> None:
        self.kernel.registry.add_backend(backend, record.id)

    def _add_model(self, record: PluginRecord, spec: Any) -> None:
        self.kernel.registry.add_model(spec, record.id)

    def _add_benchmark_metric(self, record: PluginRecord, *args: Any) -> str:
        if len(args) != 2 or not isinstance(args[0], str) or not args[0] or not callable(args[1]):
            raise TypeError(f"register_benchmark_metrics expects (name, callable), got {args!r}")
        name, fn = args
        if name in self.benchmark_metrics:
            raise ValueError(f"register_benchmark_metrics: {name!r} is registered twice")
        self.benchmark_metrics[name] = fn
        return name

    @staticmethod
    def _adder(hook: str, target: dict[str, Any]) -> Callable[..., str]:
        def add(record: PluginRecord, *args: Any) -> str:
            name = _named(hook, args)
            if name in target:
                raise ValueError(f"{hook}: {name!r} is registered twice")
            target[name] = args[0]
            return name

        return add

    @staticmethod
    def _remover(target: dict[str, Any]) -> Callable[[str], None]:
        return lambda name: target.pop(name, None) and None

    def _registrar(self, hook: str, record: PluginRecord) -> Callable[..., None]:
        add = self._collectors[hook][0]

        def register(*args: Any) -> None:
            name = add(record, *args)
            if name is not None:
                self._owned.setdefault(record.id, []).append((hook, name))

        return register

    # ---------------------------------------------------------------- lifecycle
    def load_all(self) -> None:
        """Register built-ins, then allowed third-party plugins; fail on any error (once)."""
        if self._loaded:
            return
        self.plugins.discover()
        for record in self.plugins.iter_records():
            if record.status != STATUS_AVAILABLE:
                info = find_info(self.plugins.instantiate(record)) if record.source == "builtin" else None
                if info is not None and info.essential:
                    raise ConfigurationError(
                        f"essential plugin {record.id!r} cannot be disabled ({record.status_detail})"
                    )
                continue
            if record.source != "builtin" and not self.kernel.settings.autoload_plugins:
                continue
            try:
                self.activate(record)
            except (PluginLoadFailed, InvalidInput) as exc:
                record.status, record.last_error = STATUS_ERROR, exc.message
                fields = exc.details.get("fields")
                raise ConfigurationError(
                    f"plugin {record.id!r} failed to load at start-up: {exc.message}"
                    f"{f' {fields}' if fields else ''}. "
                    f"Fix it or list it in LLAMA_GPU_DISABLE_PLUGINS.",
                    details={"plugin_id": record.id},
                ) from exc
        self._loaded = True

    def start_all(self) -> None:
        """Call every ``startup``; a failure fails the kernel's start."""
        for record, impl in self.plugins.ordered_impls("startup"):
            try:
                self.plugins.call_impl(impl, {"kernel": self.kernel})
            except Exception as exc:
                raise ConfigurationError(f"plugin {record.id!r} failed in startup: {exc}") from exc

    def _check_wrappers(self, record: PluginRecord) -> None:
        for caller in self.plugins.pm.get_hookcallers(record.obj) or []:
            rule = HOOKS.get(caller.name)
            for impl in caller.get_hookimpls():
                if impl.plugin_name != record.id or not is_wrapper(impl):
                    continue
                if rule is None or not rule.wrappable:
                    kind = rule.kind.value if rule else "unknown"
                    raise PluginLoadFailed(
                        f"plugin {record.id!r} implements {caller.name!r} as a wrapper, but {caller.name} is a "
                        f"{kind} hook: wrappers are supported only around pipeline and firstresult hooks",
                        details={"plugin_id": record.id, "hook": caller.name},
                    )

    def activate(self, record: PluginRecord) -> None:
        """Register a plugin and everything it contributes; on failure leave no trace."""
        obj = self.plugins.instantiate(record)
        start = time.perf_counter()
        self.plugins.register(record, obj)
        try:
            self._check_wrappers(record)
            self.configure(record)  # first: collectors may need the settings
            for hook in COLLECTORS:
                for impl in self.plugins.impls_of(hook, record):
                    self.plugins.call_impl(impl, {"register": self._registrar(hook, record)})
            for impl in self.plugins.impls_of("on_event", record):
                self.kernel.events.subscribe(
                    f"plugin:{record.id}", self._event_caller(impl), on_error=self._event_failed(record)
                )
            if self.kernel.state.value == "started":
                for impl in self.plugins.impls_of("startup", record):
                    self.plugins.call_impl(impl, {"kernel": self.kernel})
        except Exception as exc:
            self.deactivate(record, call_shutdown=False)
            if isinstance(exc, PluginLoadFailed | InvalidInput):
                raise
            raise PluginLoadFailed(
                f"plugin {record.id!r} failed to load: {type(exc).__name__}: {exc}",
                details={"plugin_id": record.id},
            ) from exc
        record.status, record.status_detail, record.failures = STATUS_LOADED, None, 0
        record.load_time = time.perf_counter() - start
        record.loaded_at = time.time()

    def deactivate(self, record: PluginRecord, call_shutdown: bool = True) -> None:
        """Remove a plugin and what it registered; always completes."""
        if call_shutdown:
            for impl in self.plugins.impls_of("shutdown", record):
                try:
                    self.plugins.call_impl(impl, {"kernel": self.kernel})
                except Exception:
                    log.exception("plugin %s failed in shutdown", record.id)
        self.kernel.events.unsubscribe(f"plugin:{record.id}")
        for hook, name in self._owned.pop(record.id, []):
            self._collectors[hook][1](name)
        self.kernel.registry.remove_owner(record.id)
        self.plugins.unregister(record)
        record.status = STATUS_AVAILABLE

    def settings_of(self, record: PluginRecord, configured: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The plugin's effective settings (schema defaults, environment, configured), validated."""
        return resolve_settings(record, self.kernel.settings, configured=configured)

    def describe_settings(self, record: PluginRecord) -> dict[str, dict[str, Any]]:
        """Each effective setting of ``record``: ``{key: {"value", "source", "env", "alias"}}``."""
        if record.info is None:  # not loaded: its declaration is on the object
            record.info = find_info(self.plugins.instantiate(record))
        values = self.settings_of(record)
        described = sources_of(record, self.kernel.settings)
        for key, value in values.items():
            described.setdefault(key, {"value": value, "source": "default", "env": None, "alias": None})
            described[key]["value"] = value
        return described

    def configure(self, record: PluginRecord, configured: Mapping[str, Any] | None = None) -> None:
        """Validate a plugin's settings and hand them over (per-plugin dispatch); a refusal is INVALID_INPUT."""
        settings = self.settings_of(record, configured)
        for impl in self.plugins.impls_of("configure", record):
            try:
                self.plugins.call_impl(impl, {"kernel": self.kernel, "settings": MappingProxyType(dict(settings))})
            except (ValueError, TypeError) as exc:
                raise InvalidInput(
                    f"plugin {record.id!r} refused its settings: {exc}", details={"plugin_id": record.id}
                ) from exc

    def load(self, plugin_id: str, config: Mapping[str, Any] | None = None) -> PluginRecord:
        """Load an installed, allowed plugin at runtime (or reconfigure a loaded one)."""
        with self.plugins.lock:
            record = self.plugins.get(plugin_id)
            blocked = self.plugins.blocked_reason(record)
            if blocked:
                raise PermissionDenied(
                    f"plugin {plugin_id!r} may not be loaded: {blocked}",
                    details={"plugin_id": plugin_id, "reason": blocked},
                )
            if record.loaded:
                if config:
                    self.configure_plugin(plugin_id, config)
                return record
            previous = record.config
            record.config = merge_config(record, config or {})
            if not record.config.enabled:
                record.status, record.status_detail = STATUS_DISABLED, "disabled by configuration"
                return record
            try:
                self.activate(record)
            except Exception as exc:
                record.config = previous
                record.status, record.last_error = STATUS_AVAILABLE, str(exc)
                raise
            self.plugins.invalidate_order()
        log.info("plugin %s loaded", plugin_id, extra={"plugin_id": plugin_id, "load_time": record.load_time})
        self.kernel.publish("plugin_loaded", {"plugin_id": plugin_id, "load_time": record.load_time})
        return record

    def register_plugin(
        self, plugin_id: str, plugin: Any, config: Mapping[str, Any] | None = None, *, name: str | None = None
    ) -> PluginRecord:
        """Add a plugin object (or class) from Python; it then behaves like an installed plugin."""
        validate_plugin_id(plugin_id)
        with self.plugins.lock:
            if plugin_id in self.plugins.records:
                raise Conflict(f"plugin id {plugin_id!r} is taken", details={"plugin_id": plugin_id})
            record = PluginRecord(id=plugin_id, source="python", target=name or repr(plugin), factory=lambda: plugin)
            self.plugins.records[plugin_id] = record
        try:
            return self.load(plugin_id, config)
        except Exception:
            with self.plugins.lock:
                self.plugins.records.pop(plugin_id, None)
            raise

    def unload(self, plugin_id: str) -> PluginRecord:
        """Unload a plugin at runtime; essential plugins refuse."""
        with self.plugins.lock:
            record = self.plugins.get(plugin_id)
            if record.essential:
                raise PluginEssential(f"plugin {plugin_id!r} is essential and cannot be unloaded")
            if not record.loaded:
                raise PluginNotLoaded(f"plugin {plugin_id!r} is not loaded", details={"status": record.status})
            self.deactivate(record)
        log.info("plugin %s unloaded", plugin_id, extra={"plugin_id": plugin_id})
        self.kernel.publish("plugin_unloaded", {"plugin_id": plugin_id})
        return record

    def configure_plugin(self, plugin_id: str, config: Mapping[str, Any]) -> PluginRecord:
        """Change a plugin's enabled flag, priority or settings; refused settings change nothing."""
        with self.plugins.lock:
            record = self.plugins.get(plugin_id)
            new = merge_config(record, config)
            if not new.enabled and record.essential:
                raise PluginEssential(f"plugin {plugin_id!r} is essential and cannot be disabled")
            if record.loaded:
                if new.enabled:
                    self.configure(record, new.settings)
                    record.config = new
                else:
                    record.config = new
                    self.deactivate(record)
                    record.status, record.status_detail = STATUS_DISABLED, "disabled by configuration"
            else:
                record.config = new
                if new.enabled and record.status == STATUS_DISABLED and not self.plugins.blocked_reason(record):
                    self.activate(record)
            self.plugins.invalidate_order()
        self.kernel.publish("plugin_configured", {"plugin_id": plugin_id, "config": record.config_dict()})
        return record

    def describe(self) -> list[dict[str, Any]]:
        """Every known plugin as the API shows it (rediscovers installed ones)."""
        with self.plugins.lock:
            self.plugins.discover()
            return [r.describe(self.plugins.hooks_of(r)) for r in self.plugins.iter_records()]

    # ---------------------------------------------------------------- error boundaries
    def fails_closed(self, record: PluginRecord) -> bool:
        """Whether ``record`` guards access (an access hook, or ``PluginInfo.fail_closed``): never auto-disabled."""
        if record.info is not None and record.info.fail_closed:
            return True
        return not FAIL_CLOSED_HOOKS.isdisjoint(self.plugins.hooks_of(record))

    def plugin_failed(self, record: PluginRecord, hook: str, exc: BaseException) -> None:
        """Report a plugin failure; disable the plugin after repeated ones (never a fail-closed one)."""
        record.failures += 1
        record.total_failures += 1
        record.last_error = f"{hook}: {type(exc).__name__}: {exc}"
        log.error("plugin %s failed in %s: %s: %s", record.id, hook, type(exc).__name__, exc)
        self.kernel.publish(
            "plugin_error",
            {
                "plugin_id": record.id,
                "hook": hook,
                "error": f"{type(exc).__name__}: {exc}",
                "failures": record.failures,
            },
        )
        if (
            record.failures >= self.kernel.settings.plugin_failure_threshold
            and not record.essential
            and record.loaded
            and not self.fails_closed(record)
        ):
            with self.plugins.lock:
                self.deactivate(record)
                record.status = STATUS_DISABLED
                record.status_detail = (
                    f"disabled after {record.failures} consecutive failures; last: {record.last_error}"
                )
            log.error("plugin %s disabled: %s", record.id, record.status_detail)
            self.kernel.publish("plugin_disabled", {"plugin_id": record.id, "reason": record.status_detail})

    def _failure(self, record: PluginRecord, hook: str, exc: Exception, message: str) -> PluginFailed:
        self.plugin_failed(record, hook, exc)
        return PluginFailed(message, details={"plugin_id": record.id, "hook": hook})

    # ---------------------------------------------------------------- dispatch
    def run_pipeline(self, hook: str, **kwargs: Any) -> None:
        """Call a pipeline hook implementation by implementation, each in its own boundary."""
        self._wrapped(hook, Dispatch.PIPELINE, kwargs, self._pipeline)

    def _pipeline(self, hook: str, kwargs: dict[str, Any]) -> None:
        for record, impl in self.plugins.ordered_impls(hook):
            try:
                self.plugins.call_impl(impl, kwargs)
            except LlamaGPUError:
                raise
            except Exception as exc:
                message = f"plugin {record.id!r} failed in {hook}: {type(exc).__name__}"
                raise self._failure(record, hook, exc, message) from exc
            if record.failures:
                record.failures = 0

    def call_first(self, hook: str, **kwargs: Any) -> Any:
        """Call a firstresult hook in priority order; a failing implementation fails the call."""
        return self._wrapped(hook, Dispatch.FIRSTRESULT, kwargs, self._first)

    def _first(self, hook: str, kwargs: dict[str, Any]) -> Any:
        for record, impl in self.plugins.ordered_impls(hook):
            try:
                result = self.plugins.call_impl(impl, kwargs)
            except LlamaGPUError:
                raise
            except Exception as exc:
                raise self._failure(record, hook, exc, f"plugin {record.id!r} failed in {hook}") from exc
            if result is not None:
                return result
        return None

    def call_all(self, hook: str, **kwargs: Any) -> list[tuple[PluginRecord, Any]]:
        """Call every implementation of a broadcast hook; failures are reported and skipped."""
        if HOOKS[hook].kind is not Dispatch.BROADCAST:
            raise ValueError(f"{hook} is a {HOOKS[hook].kind} hook, not a broadcast one")
        results = []
        for record, impl in self.plugins.ordered_impls(hook):
            try:
                results.append((record, self.plugins.call_impl(impl, kwargs)))
            except Exception as exc:  # noqa: BLE001 - one plugin must not break the others
                self.plugin_failed(record, hook, exc)
        return results

    def _wrapped(
        self, hook: str, kind: Dispatch, kwargs: dict[str, Any], call: Callable[[str, dict[str, Any]], Any]
    ) -> Any:
        """``call`` inside the hook's wrappers, the first in call order outermost."""
        if HOOKS[hook].kind is not kind:
            raise ValueError(f"{hook} is a {HOOKS[hook].kind} hook, not a {kind} one")
        wrappers = self.plugins.ordered_wrappers(hook)
        if not wrappers:
            return call(hook, kwargs)
        inner: Callable[[], Any] = lambda: call(hook, kwargs)  # noqa: E731
        for record, impl in reversed(wrappers):
            inner = self._wrap(record, impl, hook, kwargs, inner)
        return inner()

    def _wrap(
        self, record: PluginRecord, impl: Any, hook: str, kwargs: Mapping[str, Any], inner: Callable[[], Any]
    ) -> Callable[[], Any]:
        def call() -> Any:
            try:
                gen = self.plugins.call_impl(impl, kwargs)
                next(gen)
            except Exception as exc:
                raise self._failure(record, hook, exc, f"plugin {record.id!r} failed in its {hook} wrapper") from exc
            outcome = pluggy.Result.from_call(inner)
            try:
                if impl.hookwrapper:  # old style: the wrapper receives the outcome and may force another
                    try:
                        gen.send(outcome)
                    except StopIteration:
                        return outcome.get_result()
                else:
                    try:
                        if outcome.exception is not None:
                            gen.throw(outcome.exception)
                        else:
                            gen.send(outcome.get_result())
                    except StopIteration as stop:
                        return stop.value
            except BaseException as exc:
                if exc is outcome.exception or isinstance(exc, LlamaGPUError) or not isinstance(exc, Exception):
                    raise
                raise self._failure(record, hook, exc, f"plugin {record.id!r} failed in its {hook} wrapper") from exc
            gen.close()
            error = RuntimeError("the wrapper yielded more than once")
            raise self._failure(record, hook, error, f"plugin {record.id!r} failed in its {hook} wrapper")

        return call

    def _event_caller(self, impl: Any) -> Callable[[Event], None]:
        return lambda event: self.plugins.call_impl(impl, {"event": event})

    def _event_failed(self, record: PluginRecord) -> Callable[[Any, Event, BaseException], None]:
        return lambda _sub, _event, exc: self.plugin_failed(record, "on_event", exc)


def merge_config(record: PluginRecord, config: Mapping[str, Any]) -> PluginConfig:
    """``record``'s configuration with ``config`` applied; INVALID_INPUT for malformed values."""
    current = record.config
    enabled = config.get("enabled", current.enabled)
    priority = config.get("priority", current.priority)
    settings = config.get("settings", current.settings)
    if not isinstance(enabled, bool):
        raise InvalidInput("config.enabled must be a boolean", details={"field": "config.enabled"})
    if priority is not None and (
        not isinstance(priority, int) or isinstance(priority, bool) or not -1000 <= priority <= 1000
    ):
        raise InvalidInput("config.priority must be an integer in [-1000, 1000]", details={"field": "config.priority"})
    if not isinstance(settings, Mapping):
        raise InvalidInput("config.settings must be an object", details={"field": "config.settings"})
    return PluginConfig(enabled=enabled, priority=priority, settings=dict(settings))


def hook_table() -> str:
    """The hook table of ``docs/hooks.md`` (Markdown), made from :data:`HOOKS` and the specs' docstrings."""
    from . import hookspecs

    rows = ["| hook | dispatch | wrappers | fails closed | what |", "| --- | --- | --- | --- | --- |"]
    for name, rule in HOOKS.items():
        summary = (getattr(hookspecs, name).__doc__ or "").strip().splitlines()[0].replace("``", "`")
        wrappers = "yes" if rule.wrappable else "refused"
        rows.append(f"| `{name}` | {rule.kind.value} | {wrappers} | {'yes' if rule.fail_closed else ''} | {summary} |")
    return "\n".join(rows) + "\n"
