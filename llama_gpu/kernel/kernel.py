"""The Kernel: lifecycle, plugin loading, and a typed facade over the hooks.

One :class:`Kernel` owns one pluggy manager, one event bus and one model registry;
nothing is a module global, so tests build a fresh kernel each time.

Lifecycle: ``created`` → ``started`` → ``draining`` → ``stopped``. While draining, new
requests are refused with ``SERVICE_UNAVAILABLE`` and running ones may finish within
``LLAMA_GPU_DRAIN_TIMEOUT``.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, TypeVar

from .backend import LoadOptions
from .config import Settings
from .errors import (
    AuthenticationFailed,
    ConfigurationError,
    Conflict,
    InvalidInput,
    LlamaGPUError,
    ModelNotLoaded,
    PermissionDenied,
    PluginEssential,
    PluginFailed,
    PluginLoadFailed,
    PluginNotLoaded,
    ServiceUnavailable,
)
from .events import EventBus, Subscription
from .inference import InferenceStream, RunningRequests, SequenceQuota, start_inference
from .manager import (
    STATUS_AVAILABLE,
    STATUS_DISABLED,
    STATUS_ERROR,
    STATUS_LOADED,
    PluginConfig,
    PluginManager,
    PluginRecord,
    find_info,
    validate_plugin_id,
)
from .registry import ModelRegistry
from .services import ServiceKey, Services
from .types import Credentials, Event, Identity, InferenceRequest, RateLimitStatus

log = logging.getLogger(__name__)

T = TypeVar("T")


class KernelState(enum.StrEnum):
    """Where the kernel is in its life."""

    CREATED = "created"
    STARTED = "started"
    DRAINING = "draining"
    STOPPED = "stopped"


#: Access hooks: a plugin implementing one is never disabled after failures (disabling it would
#: open what it guards); each failure refuses the request it was deciding.
FAIL_CLOSED_HOOKS: frozenset[str] = frozenset({"authenticate", "check_permission", "rate_limit"})

#: Collector hooks, called in this order when a plugin is activated.
COLLECTORS: tuple[str, ...] = (
    "register_event_types",
    "register_backends",
    "register_models",
    "register_commands",
    "register_routes",
    "register_benchmark_metrics",
)


class Kernel:
    """The microkernel: owns the plugins, the event bus, the models and the lifecycle."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings if settings is not None else Settings.from_env()
        self.plugins = PluginManager(self.settings)
        self.events = EventBus(self.settings.event_queue_size)
        self.registry = ModelRegistry(self.settings, publish=self.publish)
        self.state = KernelState.CREATED
        self.started_at: float | None = None
        self.stats: dict[str, int] = {"requests": 0, "succeeded": 0, "failed": 0, "tokens": 0}
        self._inflight = 0
        #: Requests in flight by id (for ``DELETE /api/v1/requests/{id}``).
        self.requests = RunningRequests()
        self.sequences = SequenceQuota(self.settings.max_concurrent_sequences)
        #: Objects plugins share, by typed key (``kernel.services[DATABASE]``; see :mod:`.services`).
        self.services = Services()
        self._cond = threading.Condition()
        self._owned: dict[str, list[tuple[str, str]]] = {}
        self._commands: dict[str, Any] = {}
        self._routes: dict[str, Any] = {}
        self._benchmark_metrics: dict[str, Callable[[list[Any]], float | None]] = {}
        self._plugins_loaded = False

    # ---------------------------------------------------------------- lifecycle
    def load_plugins(self) -> None:
        """Register built-ins, then allowed third-party plugins; fail on any error.

        Safe to call once; ``start()`` calls it when it has not been called.
        """
        if self._plugins_loaded:
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
            if record.source != "builtin" and not self.settings.autoload_plugins:
                continue
            try:
                self._activate(record)
            except PluginLoadFailed as exc:
                record.status, record.last_error = STATUS_ERROR, exc.message
                raise ConfigurationError(
                    f"plugin {record.id!r} failed to load at start-up: {exc.message}. "
                    f"Fix it or list it in LLAMA_GPU_DISABLE_PLUGINS.",
                    details={"plugin_id": record.id},
                ) from exc
        self._plugins_loaded = True

    def start(self) -> Kernel:
        """Load plugins, call ``startup``, and accept requests."""
        if self.state is not KernelState.CREATED:
            raise ConfigurationError(f"kernel cannot start from state {self.state.value!r}")
        # the package's records follow LLAMA_GPU_LOG_LEVEL whatever the root logger was set to (by a host
        # program, a test runner or gunicorn): the monitoring plugin's log view depends on it
        logging.getLogger(__package__.rpartition(".")[0]).setLevel(self.settings.log_level.upper())
        self.load_plugins()
        for record, impl in self.plugins.ordered_impls("startup"):
            try:
                self.plugins.call_impl(impl, {"kernel": self})
            except Exception as exc:
                raise ConfigurationError(f"plugin {record.id!r} failed in startup: {exc}") from exc
        self.state = KernelState.STARTED
        self.started_at = time.time()
        self.publish("kernel_state", {"state": self.state.value})
        log.info("kernel started with %d plugins", len(self.plugins.records), extra={"state": self.state.value})
        self.registry.start_reaper()
        if self.settings.preload:
            threading.Thread(target=self._preload, name="preload", daemon=True).start()
        return self

    def _preload(self) -> None:
        try:
            self.registry.load("default")
        except LlamaGPUError as exc:
            log.error("could not preload the default model %r: %s", self.settings.default_model, exc.message)

    def stop(self, timeout: float | None = None) -> bool:
        """Refuse new requests, wait for running ones, shut plugins down.

        Returns True when every running request finished within ``timeout`` (default:
        ``LLAMA_GPU_DRAIN_TIMEOUT``).
        """
        if self.state in (KernelState.STOPPED, KernelState.DRAINING):
            return True
        self.state = KernelState.DRAINING
        self.publish("kernel_state", {"state": self.state.value})
        deadline = time.monotonic() + (self.settings.drain_timeout if timeout is None else timeout)
        with self._cond:
            while self._inflight and (left := deadline - time.monotonic()) > 0:
                self._cond.wait(left)
            drained = self._inflight == 0
        self.call_all("shutdown", kernel=self)
        self.registry.stop_reaper()
        self.registry.unload_all()
        self.state = KernelState.STOPPED
        self.events.close()
        return drained

    @property
    def uptime(self) -> float:
        """Seconds since start (0 before)."""
        return time.time() - self.started_at if self.started_at else 0.0

    @property
    def inflight(self) -> int:
        """Requests running now."""
        return self._inflight

    def enter_request(self) -> None:
        """Count a request in; refused unless the kernel is started."""
        with self._cond:
            if self.state is not KernelState.STARTED:
                raise ServiceUnavailable(
                    f"the server is {self.state.value}, not accepting requests", details={"state": self.state.value}
                )
            self._inflight += 1
            self.stats["requests"] += 1

    def leave_request(self, ok: bool, tokens: int = 0) -> None:
        """Count a request out."""
        with self._cond:
            self._inflight -= 1
            self.stats["succeeded" if ok else "failed"] += 1
            self.stats["tokens"] += tokens
            self._cond.notify_all()

    # ---------------------------------------------------------------- plugins
    def _activate(self, record: PluginRecord) -> None:
        """Register a plugin and everything it contributes; on failure leave no trace."""
        obj = self.plugins.instantiate(record)
        start = time.perf_counter()
        self.plugins.register(record, obj)
        try:
            self._configure(record, record.effective_settings())  # first: collectors may need the settings
            for hook in COLLECTORS:
                for impl in self.plugins.impls_of(hook, record):
                    self.plugins.call_impl(impl, {"register": self._registrar(hook, record)})
            for impl in self.plugins.impls_of("on_event", record):
                self.events.subscribe(
                    f"plugin:{record.id}", self._event_caller(impl), on_error=self._event_failed(record)
                )
            if self.state is KernelState.STARTED:
                for impl in self.plugins.impls_of("startup", record):
                    self.plugins.call_impl(impl, {"kernel": self})
        except Exception as exc:
            self._deactivate(record, call_shutdown=False)
            if isinstance(exc, PluginLoadFailed | InvalidInput):
                raise
            raise PluginLoadFailed(
                f"plugin {record.id!r} failed to load: {type(exc).__name__}: {exc}",
                details={"plugin_id": record.id},
            ) from exc
        record.status, record.status_detail, record.failures = STATUS_LOADED, None, 0
        record.load_time = time.perf_counter() - start
        record.loaded_at = time.time()

    def _deactivate(self, record: PluginRecord, call_shutdown: bool = True) -> None:
        """Remove a plugin and what it registered; always completes."""
        if call_shutdown:
            for impl in self.plugins.impls_of("shutdown", record):
                try:
                    self.plugins.call_impl(impl, {"kernel": self})
                except Exception:
                    log.exception("plugin %s failed in shutdown", record.id)
        self.events.unsubscribe(f"plugin:{record.id}")
        for kind, name in self._owned.pop(record.id, []):
            if kind == "register_event_types":
                self.events.remove_type(name)
            elif kind == "register_commands":
                self._commands.pop(name, None)
            elif kind == "register_routes":
                self._routes.pop(name, None)
            elif kind == "register_benchmark_metrics":
                self._benchmark_metrics.pop(name, None)
        self.registry.remove_owner(record.id)
        self.plugins.unregister(record)
        record.status = STATUS_AVAILABLE

    def _registrar(self, hook: str, record: PluginRecord) -> Callable[..., None]:
        def register(*args: Any) -> None:
            if hook == "register_backends":
                self.registry.add_backend(args[0], record.id)
                return
            if hook == "register_models":
                self.registry.add_model(args[0], record.id)
                return
            if hook == "register_event_types":
                name, description = args
                self.events.add_type(name, description)
            elif hook == "register_benchmark_metrics":
                name, fn = args
                if not isinstance(name, str) or not name or not callable(fn):
                    raise TypeError(f"{hook} expects (name, callable), got {args!r}")
                if name in self._benchmark_metrics:
                    raise ValueError(f"{hook}: {name!r} is registered twice")
                self._benchmark_metrics[name] = fn
            else:
                target = self._commands if hook == "register_commands" else self._routes
                name = getattr(args[0], "name", None)
                if not isinstance(name, str) or not name:
                    raise TypeError(f"{hook} expects an object with a name, got {args[0]!r}")
                if name in target:
                    raise ValueError(f"{hook}: {name!r} is registered twice")
                target[name] = args[0]
            self._owned.setdefault(record.id, []).append((hook, name))

        return register

    def _configure(self, record: PluginRecord, settings: dict[str, Any]) -> None:
        for impl in self.plugins.impls_of("configure", record):
            try:
                self.plugins.call_impl(impl, {"kernel": self, "settings": MappingProxyType(dict(settings))})
            except (ValueError, TypeError) as exc:
                raise InvalidInput(
                    f"plugin {record.id!r} refused its settings: {exc}", details={"plugin_id": record.id}
                ) from exc

    def load_plugin(self, plugin_id: str, config: Mapping[str, Any] | None = None) -> PluginRecord:
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
            record.config = self._merge_config(record, config or {})
            if not record.config.enabled:
                record.status, record.status_detail = STATUS_DISABLED, "disabled by configuration"
                return record
            try:
                self._activate(record)
            except Exception as exc:
                record.config = previous
                record.status, record.last_error = STATUS_AVAILABLE, str(exc)
                raise
            self.plugins.invalidate_order()
        log.info("plugin %s loaded", plugin_id, extra={"plugin_id": plugin_id, "load_time": record.load_time})
        self.publish("plugin_loaded", {"plugin_id": plugin_id, "load_time": record.load_time})
        return record

    def register_plugin(
        self, plugin_id: str, plugin: Any, config: Mapping[str, Any] | None = None, *, name: str | None = None
    ) -> PluginRecord:
        """Add a plugin object (or class) from Python, as a program embedding the kernel does.

        It then behaves like an installed plugin: listed, configurable, unloadable. The
        HTTP API cannot do this; it only loads installed entry points.
        """
        validate_plugin_id(plugin_id)
        with self.plugins.lock:
            if plugin_id in self.plugins.records:
                raise Conflict(f"plugin id {plugin_id!r} is taken", details={"plugin_id": plugin_id})
            record = PluginRecord(id=plugin_id, source="python", target=name or repr(plugin), factory=lambda: plugin)
            self.plugins.records[plugin_id] = record
        try:
            return self.load_plugin(plugin_id, config)
        except Exception:
            with self.plugins.lock:
                self.plugins.records.pop(plugin_id, None)
            raise

    def unload_plugin(self, plugin_id: str) -> PluginRecord:
        """Unload a plugin at runtime; essential plugins refuse."""
        with self.plugins.lock:
            record = self.plugins.get(plugin_id)
            if record.essential:
                raise PluginEssential(f"plugin {plugin_id!r} is essential and cannot be unloaded")
            if not record.loaded:
                raise PluginNotLoaded(f"plugin {plugin_id!r} is not loaded", details={"status": record.status})
            self._deactivate(record)
        log.info("plugin %s unloaded", plugin_id, extra={"plugin_id": plugin_id})
        self.publish("plugin_unloaded", {"plugin_id": plugin_id})
        return record

    def configure_plugin(self, plugin_id: str, config: Mapping[str, Any]) -> PluginRecord:
        """Change a plugin's enabled flag, priority or settings; refused settings change nothing."""
        with self.plugins.lock:
            record = self.plugins.get(plugin_id)
            new = self._merge_config(record, config)
            if not new.enabled and record.essential:
                raise PluginEssential(f"plugin {plugin_id!r} is essential and cannot be disabled")
            if record.loaded:
                if new.enabled:
                    self._configure(record, {**(record.info.default_settings if record.info else {}), **new.settings})
                    record.config = new
                else:
                    record.config = new
                    self._deactivate(record)
                    record.status, record.status_detail = STATUS_DISABLED, "disabled by configuration"
            else:
                record.config = new
                if new.enabled and record.status == STATUS_DISABLED and not self.plugins.blocked_reason(record):
                    self._activate(record)
            self.plugins.invalidate_order()
        self.publish("plugin_configured", {"plugin_id": plugin_id, "config": record.config_dict()})
        return record

    @staticmethod
    def _merge_config(record: PluginRecord, config: Mapping[str, Any]) -> PluginConfig:
        current = record.config
        enabled = config.get("enabled", current.enabled)
        priority = config.get("priority", current.priority)
        settings = config.get("settings", current.settings)
        if not isinstance(enabled, bool):
            raise InvalidInput("config.enabled must be a boolean", details={"field": "config.enabled"})
        if priority is not None and (
            not isinstance(priority, int) or isinstance(priority, bool) or not -1000 <= priority <= 1000
        ):
            raise InvalidInput(
                "config.priority must be an integer in [-1000, 1000]", details={"field": "config.priority"}
            )
        if not isinstance(settings, Mapping):
            raise InvalidInput("config.settings must be an object", details={"field": "config.settings"})
        return PluginConfig(enabled=enabled, priority=priority, settings=dict(settings))

    def describe_plugins(self) -> list[dict[str, Any]]:
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
        self.publish(
            "plugin_error",
            {
                "plugin_id": record.id,
                "hook": hook,
                "error": f"{type(exc).__name__}: {exc}",
                "failures": record.failures,
            },
        )
        if (
            record.failures >= self.settings.plugin_failure_threshold
            and not record.essential
            and record.loaded
            and not self.fails_closed(record)
        ):
            with self.plugins.lock:
                self._deactivate(record)
                record.status = STATUS_DISABLED
                record.status_detail = (
                    f"disabled after {record.failures} consecutive failures; last: {record.last_error}"
                )
            log.error("plugin %s disabled: %s", record.id, record.status_detail)
            self.publish("plugin_disabled", {"plugin_id": record.id, "reason": record.status_detail})

    def run_pipeline(self, hook: str, **kwargs: Any) -> None:
        """Call a pipeline hook implementation by implementation, each in its own boundary."""
        for record, impl in self.plugins.ordered_impls(hook):
            try:
                self.plugins.call_impl(impl, kwargs)
            except LlamaGPUError:
                raise
            except Exception as exc:
                self.plugin_failed(record, hook, exc)
                raise PluginFailed(
                    f"plugin {record.id!r} failed in {hook}: {type(exc).__name__}",
                    details={"plugin_id": record.id, "hook": hook},
                ) from exc
            if record.failures:
                record.failures = 0

    def call_first(self, hook: str, **kwargs: Any) -> Any:
        """Call a firstresult hook in priority order; a failing implementation fails the call."""
        for record, impl in self.plugins.ordered_impls(hook):
            try:
                result = self.plugins.call_impl(impl, kwargs)
            except LlamaGPUError:
                raise
            except Exception as exc:
                self.plugin_failed(record, hook, exc)
                raise PluginFailed(
                    f"plugin {record.id!r} failed in {hook}", details={"plugin_id": record.id, "hook": hook}
                ) from exc
            if result is not None:
                return result
        return None

    def call_all(self, hook: str, **kwargs: Any) -> list[tuple[PluginRecord, Any]]:
        """Call every implementation; failures are reported and skipped."""
        results = []
        for record, impl in self.plugins.ordered_impls(hook):
            try:
                results.append((record, self.plugins.call_impl(impl, kwargs)))
            except Exception as exc:  # noqa: BLE001 - one plugin must not break the others
                self.plugin_failed(record, hook, exc)
        return results

    def _event_caller(self, impl: Any) -> Callable[[Event], None]:
        return lambda event: self.plugins.call_impl(impl, {"event": event})

    def _event_failed(self, record: PluginRecord) -> Callable[[Subscription, Event, BaseException], None]:
        return lambda _sub, _event, exc: self.plugin_failed(record, "on_event", exc)

    # ---------------------------------------------------------------- facade
    def service(self, key: ServiceKey[T]) -> T:
        """The object shared under ``key``; SERVICE_UNAVAILABLE naming the providing plugin when absent."""
        return self.services[key]

    def publish(self, type: str, data: dict[str, Any] | None = None) -> Event | None:
        """Publish an event of a declared type (ignored once stopped)."""
        if self.state is KernelState.STOPPED:
            return None
        return self.events.publish(type, data)

    def authenticate(self, credentials: Credentials) -> Identity | None:
        """Who is calling, or ``None`` when no plugin recognises the credentials."""
        return self.call_first("authenticate", credentials=credentials, kernel=self)

    def check_permission(self, identity: Identity | None, permission: str, resource: str | None = None) -> bool:
        """Whether ``identity`` may do ``permission``; nobody answering denies."""
        return bool(self.call_first("check_permission", identity=identity, permission=permission, resource=resource))

    def require(self, identity: Identity | None, permission: str, resource: str | None = None) -> None:
        """Raise AUTHENTICATION_FAILED or PERMISSION_DENIED unless allowed."""
        if self.check_permission(identity, permission, resource):
            return
        if identity is None:
            raise AuthenticationFailed("authentication required", details={"permission": permission})
        raise PermissionDenied(
            f"{permission!r} permission required", details={"permission": permission, "resource": resource}
        )

    def rate_limit(self, identity: Identity | None, group: str, client: str, cost: int = 1) -> RateLimitStatus | None:
        """Count a call (``cost`` units: its sequences) against its rate limit; the standing, or ``None``."""
        return self.call_first(
            "rate_limit", identity=identity, group=group, client=client, kernel=self, cost=max(1, int(cost))
        )

    def collect_metrics(self) -> dict[str, float]:
        """Every plugin's metrics, keyed ``<plugin_id>.<name>``."""
        merged: dict[str, float] = {}
        for record, values in self.call_all("collect_metrics", kernel=self):
            for name, value in (values or {}).items():
                merged[f"{record.id}.{name}"] = value
        return merged

    def commands(self) -> list[Any]:
        """Click commands registered by plugins."""
        return list(self._commands.values())

    def routes(self) -> list[Any]:
        """Flask blueprints registered by plugins."""
        return list(self._routes.values())

    def benchmark_metrics(self) -> dict[str, Callable[[list[Any]], float | None]]:
        """Benchmark and evaluation metrics registered by plugins: name → fn(list of RequestMetrics)."""
        return dict(self._benchmark_metrics)

    def load_model(
        self, model_id: str, backend: str | None = None, options: LoadOptions | None = None
    ) -> dict[str, Any]:
        """Load a model (``backend``: a backend name, ``gguf``, ``torch``, ``cpu`` or ``cuda``)."""
        self.registry.load(model_id, options, backend)
        return self.registry.describe(self.registry.resolve(model_id).id)

    def unload_model(self, model_id: str) -> int:
        """Unload a model; returns the bytes freed. MODEL_NOT_LOADED when it was not loaded."""
        spec = self.registry.resolve(model_id)
        if spec.id not in self.registry.loaded():
            raise ModelNotLoaded(f"model {spec.id!r} is not loaded", details={"model": spec.id})
        return self.registry.unload(spec.id)

    def detokenize(self, model_id: str, token_lists: list[list[int]]) -> list[str]:
        """The texts of token-id lists in ``model_id``'s vocabulary (the model loads only as autoload allows)."""
        model = self.registry.acquire(model_id)
        try:
            return [model.detokenize(ids) for ids in token_lists]
        finally:
            self.registry.release(model.spec.id, tokens=0, seconds=0.0, ok=True, keep_alive=None)

    def embed(self, model_id: str, texts: list[str]) -> list[list[float]]:
        """Embeddings of ``texts`` from an embedding model."""
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise InvalidInput("input must be a non-empty list of strings", details={"field": "input"})
        self.enter_request()
        start, ok, model = time.perf_counter(), False, None
        try:
            model = self.registry.acquire(model_id)
            vectors = model.embed(texts)
            ok = True
            return vectors
        finally:
            if model is not None:
                self.registry.release(
                    model.spec.id, tokens=0, seconds=time.perf_counter() - start, ok=ok, keep_alive=None
                )
            self.leave_request(ok)

    def generate(self, request: InferenceRequest) -> InferenceStream:
        """Start serving ``request``: filters, model, stream of chunks.

        Refusals (bad input, unknown model, draining) raise here, before any output.
        """
        return start_inference(self, request)

    def cancel_request(self, request_id: str, identity: Identity | None) -> int:
        """Cancel a running or queued request of ``identity`` (any, when ``check_permission`` says admin)."""
        return self.requests.cancel(request_id, identity, admin=self.check_permission(identity, "admin", "requests"))

    def complete(self, request: InferenceRequest) -> Any:
        """Serve ``request`` to the end and return its :class:`InferenceResponse`."""
        return self.generate(request).result()

    # ------------------------------------------------------- models, as the HTTP layer sees them
    def model_ids(self) -> list[str]:
        """The id of every known model, loaded or not."""
        return [spec.id for spec in self.registry.specs()]

    def resolve_model(self, model_id: str) -> str:
        """The id ``model_id`` (or an alias such as ``default``) names; MODEL_NOT_FOUND otherwise."""
        return self.registry.resolve(model_id).id

    def describe_model(self, model_id: str) -> dict[str, Any]:
        """Catalog facts, load state (``last_used`` included), memory and live performance of one model."""
        info = self.registry.describe(model_id)
        info["last_used"] = self.registry.state(model_id).last_used or None
        return info

    def loaded_model_count(self) -> int:
        """How many models are loaded now."""
        return len(self.registry.loaded())

    def count_tokens(self, model_id: str, texts: list[str]) -> int:
        """The tokens of ``texts`` in a loaded model's vocabulary (0 when the model is not loaded)."""
        model = self.registry.loaded().get(self.registry.resolve(model_id).id)
        return sum(model.count_tokens(text) for text in texts) if model is not None else 0

    def not_ready(self) -> str | None:
        """Why the default model cannot serve now (loading, failed, missing…), or ``None`` when it can."""
        if self.state is not KernelState.STARTED:
            return f"kernel is {self.state.value}"
        try:
            state = self.registry.state("default")
            spec = state.spec
            backend = self.registry.backends().get(spec.backend)
            if state.status == "loaded":
                return None
            if state.status == "loading":
                return f"the default model {spec.id!r} is loading"
            if state.status == "failed":
                return f"the default model {spec.id!r} failed to load: {state.error}"
            if spec.unavailable:
                return f"the default model {spec.id!r} is unavailable: {spec.unavailable}"
            if backend is None or not backend.is_available():
                return f"backend {spec.backend!r} of the default model is not available"
            if not self.settings.may_autoload(spec.id):
                return f"the default model {spec.id!r} is not loaded"
        except LlamaGPUError as exc:
            return exc.message
        return None
