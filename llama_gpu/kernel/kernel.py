"""The Kernel: lifecycle, request accounting, and a typed facade over the hooks.

One :class:`Kernel` owns one pluggy manager, one event bus and one model registry;
nothing is a module global, so tests build a fresh kernel each time. Plugin loading and
hook dispatch are the :class:`~.plugin_host.PluginHost`'s (``kernel.host``).

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
from typing import Any, TypeVar

from .backend import LoadOptions
from .config import Settings
from .errors import (
    AuthenticationFailed,
    ConfigurationError,
    InvalidInput,
    LlamaGPUError,
    ModelNotLoaded,
    PermissionDenied,
    ServiceUnavailable,
)
from .events import EventBus
from .inference import InferenceStream, RunningRequests, SequenceQuota, start_inference
from .manager import (
    PluginManager,
    PluginRecord,
)
from .plugin_host import PluginHost
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
        #: Plugin lifecycle and hook dispatch.
        self.host = PluginHost(self)

    # ---------------------------------------------------------------- lifecycle
    def load_plugins(self) -> None:
        """Register built-ins, then allowed third-party plugins; fail on any error.

        Safe to call once; ``start()`` calls it when it has not been called.
        """
        self.host.load_all()

    def start(self) -> Kernel:
        """Load plugins, call ``startup``, and accept requests."""
        if self.state is not KernelState.CREATED:
            raise ConfigurationError(f"kernel cannot start from state {self.state.value!r}")
        # the package's records follow LLAMA_GPU_LOG_LEVEL whatever the root logger was set to (by a host
        # program, a test runner or gunicorn): the monitoring plugin's log view depends on it
        logging.getLogger(__package__.rpartition(".")[0]).setLevel(self.settings.log_level.upper())
        self.load_plugins()
        self.host.start_all()
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

    # ---------------------------------------------------------------- plugins (see plugin_host)
    def load_plugin(self, plugin_id: str, config: Mapping[str, Any] | None = None) -> PluginRecord:
        """Load an installed, allowed plugin at runtime (or reconfigure a loaded one)."""
        return self.host.load(plugin_id, config)

    def register_plugin(
        self, plugin_id: str, plugin: Any, config: Mapping[str, Any] | None = None, *, name: str | None = None
    ) -> PluginRecord:
        """Add a plugin object (or class) from Python, as a program embedding the kernel does.

        It then behaves like an installed plugin: listed, configurable, unloadable. The
        HTTP API cannot do this; it only loads installed entry points.
        """
        return self.host.register_plugin(plugin_id, plugin, config, name=name)

    def unload_plugin(self, plugin_id: str) -> PluginRecord:
        """Unload a plugin at runtime; essential plugins refuse."""
        return self.host.unload(plugin_id)

    def configure_plugin(self, plugin_id: str, config: Mapping[str, Any]) -> PluginRecord:
        """Change a plugin's enabled flag, priority or settings; refused settings change nothing."""
        return self.host.configure_plugin(plugin_id, config)

    def plugin_settings(self, plugin_id: str) -> dict[str, dict[str, Any]]:
        """A plugin's effective settings and where each comes from (``llama-gpu plugins config ID``)."""
        return self.host.describe_settings(self.plugins.get(plugin_id))

    def describe_plugins(self) -> list[dict[str, Any]]:
        """Every known plugin as the API shows it (rediscovers installed ones)."""
        return self.host.describe()

    def fails_closed(self, record: PluginRecord) -> bool:
        """Whether ``record`` guards access (an access hook, or ``PluginInfo.fail_closed``): never auto-disabled."""
        return self.host.fails_closed(record)

    def plugin_failed(self, record: PluginRecord, hook: str, exc: BaseException) -> None:
        """Report a plugin failure; disable the plugin after repeated ones (never a fail-closed one)."""
        self.host.plugin_failed(record, hook, exc)

    def run_pipeline(self, hook: str, **kwargs: Any) -> None:
        """Call a pipeline hook implementation by implementation, each in its own boundary."""
        self.host.run_pipeline(hook, **kwargs)

    def call_first(self, hook: str, **kwargs: Any) -> Any:
        """Call a firstresult hook in priority order; a failing implementation fails the call."""
        return self.host.call_first(hook, **kwargs)

    def call_all(self, hook: str, **kwargs: Any) -> list[tuple[PluginRecord, Any]]:
        """Call every implementation of a broadcast hook; failures are reported and skipped."""
        return self.host.call_all(hook, **kwargs)

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
        return list(self.host.commands.values())

    def routes(self) -> list[Any]:
        """Flask blueprints registered by plugins."""
        return list(self.host.routes.values())

    def benchmark_metrics(self) -> dict[str, Callable[[list[Any]], float | None]]:
        """Benchmark and evaluation metrics registered by plugins: name → fn(list of RequestMetrics)."""
        return dict(self.host.benchmark_metrics)

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
        """Cancel a running or queued request of ``identity`` (any, for one ``check_permission`` lets admin them)."""
        any_owner = identity is not None and self.check_permission(identity, "admin", "requests")
        return self.requests.cancel(request_id, identity, any_owner)

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
