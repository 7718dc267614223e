"""Backends and models: which exist, which are loaded, loading each once, and unloading.

The registry owns the model lifecycle: a load is coalesced (concurrent callers share one),
checked against memory, may evict the least recently used idle model to stay within
``LLAMA_GPU_MAX_LOADED_MODELS``, and reports ``model_status`` events with progress and
an ETA. Loaded models idle past their keep-alive are unloaded by a reaper thread.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import psutil

from .backend import Backend, LoadedModel, LoadOptions, ModelSpec
from .config import Settings
from .errors import (
    BackendUnavailable,
    InsufficientMemory,
    InvalidInput,
    LlamaGPUError,
    ModelLoadFailed,
    ModelNotFound,
    ModelNotLoaded,
    ServerOverloaded,
)
from .scheduler import Engine

log = logging.getLogger(__name__)

Publish = Callable[[str, dict[str, Any]], Any]

#: What a load request may name as ``backend``: a backend, a device, or a format alias.
DEVICE_CHOICES = ("cpu", "cuda")
BACKEND_ALIASES = {"gguf": "llamacpp", "llama.cpp": "llamacpp", "pytorch": "torch"}


@dataclasses.dataclass
class ModelState:
    """What the registry knows of one model at runtime."""

    spec: ModelSpec
    owner: str
    model: LoadedModel | None = None
    #: The engine serving ``model`` (set while it is loaded).
    engine: Engine | None = None
    status: str = "unloaded"  # unloaded | loading | loaded | failed
    error: str | None = None
    options: LoadOptions | None = None
    load_time: float | None = None
    loaded_at: float | None = None
    last_used: float = 0.0
    expires_at: float | None = None
    active: int = 0
    requests: int = 0
    failures: int = 0
    tokens: int = 0
    busy_seconds: float = 0.0
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, repr=False)

    def performance(self) -> dict[str, Any]:
        """Live figures: tokens per second, average latency, request count."""
        return {
            "tokens_per_second": round(self.tokens / self.busy_seconds, 2) if self.busy_seconds else 0.0,
            "avg_latency": round(self.busy_seconds / self.requests, 4) if self.requests else 0.0,
            "total_requests": self.requests,
        }


class ModelRegistry:
    """Backends by name, models by id, and their load state."""

    def __init__(self, settings: Settings, publish: Publish | None = None) -> None:
        self.settings = settings
        self._publish = publish or (lambda _type, _data: None)
        self._lock = threading.RLock()
        self._backends: dict[str, tuple[Backend, str]] = {}
        self._models: dict[str, ModelState] = {}
        self._reaper: threading.Thread | None = None
        self._stop = threading.Event()

    # ------------------------------------------------------------------ backends and specs
    def add_backend(self, backend: Backend, owner: str) -> None:
        """Add a backend registered by plugin ``owner``, with its built-in models."""
        name = getattr(backend, "name", None)
        if not isinstance(backend, Backend) or not isinstance(name, str) or not name:
            raise TypeError(f"register_backends expects Backend instances with a name, got {backend!r}")
        with self._lock:
            if name in self._backends:
                raise ValueError(f"backend {name!r} is registered twice ({self._backends[name][1]} and {owner})")
            models = backend.builtin_models()
            self._check_new([m.id for m in models])
            self._backends[name] = (backend, owner)
            for spec in models:
                self._models[spec.id] = ModelState(spec=spec, owner=owner)

    def add_model(self, spec: ModelSpec, owner: str) -> None:
        """Add a model declared by plugin ``owner`` (``register_models``)."""
        if not isinstance(spec, ModelSpec) or not spec.id:
            raise TypeError(f"register_models expects ModelSpec instances with an id, got {spec!r}")
        with self._lock:
            self._check_new([spec.id])
            self._models[spec.id] = ModelState(spec=spec, owner=owner)

    def _check_new(self, ids: list[str]) -> None:
        clash = [i for i in ids if i in self._models or i == "default"]
        if clash:
            raise ValueError(f"model id(s) declared twice or reserved: {clash}")

    def remove_owner(self, owner: str) -> None:
        """Remove every backend and model that plugin ``owner`` registered, unloading models."""
        with self._lock:
            backends = {name for name, (_, o) in self._backends.items() if o == owner}
            gone = [mid for mid, st in self._models.items() if st.owner == owner]
            orphaned = [mid for mid, st in self._models.items() if st.model and st.model.backend_name in backends]
        for mid in {*gone, *orphaned}:
            self.unload(mid, reason="plugin unloaded")
        with self._lock:
            for mid in gone:
                self._models.pop(mid, None)
            for name in backends:
                del self._backends[name]

    def backends(self) -> dict[str, Backend]:
        """Registered backends by name."""
        with self._lock:
            return {name: b for name, (b, _) in self._backends.items()}

    def resolve(self, model_id: str | None) -> ModelSpec:
        """The spec of ``model_id`` (``default`` or empty means the default model)."""
        return self.state(model_id).spec

    def state(self, model_id: str | None) -> ModelState:
        """The runtime state of ``model_id``; MODEL_NOT_FOUND lists the available ids."""
        wanted = self.settings.default_model if model_id in (None, "", "default") else model_id
        with self._lock:
            state = self._models.get(wanted)  # type: ignore[arg-type]
            if state is None:
                raise ModelNotFound(
                    f"model {wanted!r} does not exist", details={"model": wanted, "available": sorted(self._models)}
                )
            return state

    def specs(self) -> list[ModelSpec]:
        """Every known model."""
        with self._lock:
            return [st.spec for st in self._models.values()]

    def loaded(self) -> dict[str, LoadedModel]:
        """Models in memory by id."""
        with self._lock:
            return {mid: st.model for mid, st in self._models.items() if st.model is not None}

    # ------------------------------------------------------------------ serving
    def acquire(self, model_id: str | None) -> LoadedModel:
        """The loaded model for a request (loaded first when ``LLAMA_GPU_AUTOLOAD`` allows); pair with ``release``.

        ``default-only`` (the default) lets a request load the default model only: which other
        models take memory (and which get evicted for them) is an admin's decision.
        """
        state = self.state(model_id)
        while True:
            with self._lock:
                if state.model is not None:
                    state.active += 1
                    state.last_used = time.time()
                    return state.model
            if not self.settings.may_autoload(state.spec.id):
                raise ModelNotLoaded(
                    f"model {state.spec.id!r} is not loaded; an admin loads it "
                    f"(POST /api/v1/models/{state.spec.id}/load)",
                    details={"model": state.spec.id, "status": state.status, "autoload": self.settings.autoload},
                )
            self.load(state.spec.id)

    def engine(self, model_id: str) -> Engine:
        """The engine of a loaded model (acquired first)."""
        state = self.state(model_id)
        engine = state.engine
        if engine is None:
            raise ModelNotLoaded(f"model {model_id!r} was unloaded", details={"model": model_id})
        return engine

    def release(self, model_id: str, *, tokens: int, seconds: float, ok: bool, keep_alive: float | None) -> None:
        """Record a finished request and restart the model's keep-alive clock."""
        with self._lock:
            state = self._models.get(model_id)
            if state is None:
                return
            state.active = max(0, state.active - 1)
            state.requests += 1
            state.failures += 0 if ok else 1
            state.tokens += tokens
            state.busy_seconds += seconds
            state.last_used = time.time()
            alive = self.settings.keep_alive if keep_alive is None else keep_alive
            state.expires_at = None if alive < 0 else state.last_used + alive
        if alive == 0:
            self.reap()

    # ------------------------------------------------------------------ loading
    def load(self, model_id: str, options: LoadOptions | None = None, backend: str | None = None) -> ModelState:
        """Load a model once, however many callers ask at the same time."""
        state = self.state(model_id)
        spec = state.spec
        options = options or LoadOptions()
        with state.lock:  # concurrent loads of one model wait here and find it loaded
            if state.model is not None:
                return state
            if spec.unavailable:
                raise ModelLoadFailed(
                    f"model {spec.id!r} cannot be loaded here: {spec.unavailable}", details={"model": spec.id}
                )
            chosen, options = self._choose_backend(spec, backend, options)
            required = chosen.estimate_memory(spec, options)
            if options.max_memory is not None and required > options.max_memory:
                raise InsufficientMemory(
                    f"model {spec.id!r} needs about {required} bytes, more than max_memory",
                    details={"required": required, "available": options.max_memory},
                )
            self._make_room(spec.id, required)
            state.status, state.error = "loading", None
            eta = self._eta(state)
            self._status(spec, "loading", progress=0, eta_seconds=eta, backend=chosen.name)
            start = time.perf_counter()
            try:
                path = spec.locate(self._progress(spec, start, eta)) if spec.locate else spec.path
                model = chosen.load(spec, path, options)
                engine = self._start_engine(spec, model)
            except Exception as exc:
                state.status = "failed"
                error = (
                    exc
                    if isinstance(exc, LlamaGPUError)
                    else ModelLoadFailed(
                        f"model {spec.id!r} failed to load: {type(exc).__name__}: {exc}", details={"model": spec.id}
                    )
                )
                state.error = error.message
                if not isinstance(exc, LlamaGPUError):
                    log.exception("loading model %s failed", spec.id)
                self._status(spec, "failed", error=error.code, message=error.message)
                if error is exc:
                    raise
                raise error from exc
            with self._lock:
                state.model, state.engine, state.options, state.status = model, engine, options, "loaded"
                state.load_time = time.perf_counter() - start
                state.loaded_at = state.last_used = time.time()
                state.expires_at = None if self.settings.keep_alive < 0 else state.loaded_at + self.settings.keep_alive
            self._status(
                spec,
                "loaded",
                progress=100,
                load_time=round(state.load_time, 3),
                memory_usage=model.memory_bytes,
                backend=chosen.name,
                device=model.device,
            )
            return state

    def _start_engine(self, spec: ModelSpec, model: LoadedModel) -> Engine:
        try:
            runner = model.batch_runner(self.settings.parallel)
            return Engine(spec.id, runner, max_queue=self.settings.max_queue, queue_timeout=self.settings.queue_timeout)
        except BaseException:
            model.close()
            raise

    def _choose_backend(
        self, spec: ModelSpec, requested: str | None, options: LoadOptions
    ) -> tuple[Backend, LoadOptions]:
        name = spec.backend
        if requested in DEVICE_CHOICES:
            options = dataclasses.replace(options, device=requested)
        elif requested:
            name = BACKEND_ALIASES.get(requested, requested)
        with self._lock:
            entry = self._backends.get(name)
            known = sorted(self._backends) + list(DEVICE_CHOICES) + sorted(BACKEND_ALIASES)
        if entry is None:
            raise BackendUnavailable(f"backend {name!r} is not available", details={"backend": name, "choices": known})
        backend = entry[0]
        if not backend.supports(spec):
            raise InvalidInput(
                f"backend {name!r} cannot load model {spec.id!r} (format {spec.format})",
                details={"backend": name, "format": spec.format},
            )
        if not backend.is_available():
            raise BackendUnavailable(
                f"backend {name!r} is not installed on this server (pip install 'llama-gpu[{_extra(name)}]')",
                details={"backend": name},
            )
        return backend, options

    def _make_room(self, model_id: str, required: int) -> None:
        """Evict least recently used idle models for the count limit and memory; else refuse."""
        while True:
            with self._lock:
                loaded = [st for st in self._models.values() if st.model is not None and st.spec.id != model_id]
                used = sum(st.model.memory_bytes for st in loaded if st.model)
                available = psutil.virtual_memory().available
                limit = self.settings.memory_limit
                over_count = len(loaded) >= self.settings.max_loaded_models
                over_memory = required > available or (limit and used + required > limit)
                if not over_count and not over_memory:
                    return
                idle = sorted((st for st in loaded if st.active == 0), key=lambda st: st.last_used)
            if not idle:
                if over_count:
                    raise ServerOverloaded(
                        f"{len(loaded)} models are loaded and busy (LLAMA_GPU_MAX_LOADED_MODELS="
                        f"{self.settings.max_loaded_models}); retry when one is idle",
                        details={"loaded": [st.spec.id for st in loaded]},
                    )
                raise InsufficientMemory(
                    f"not enough memory to load {model_id!r}",
                    details={
                        "required": required,
                        "available": available if not limit else min(available, max(0, limit - used)),
                        "memory_limit": limit or None,
                    },
                )
            self.unload(idle[0].spec.id, reason="evicted (least recently used)")

    def _eta(self, state: ModelState) -> float | None:
        if state.load_time is not None:
            return round(state.load_time, 1)
        size = state.spec.size_bytes
        return round(size / 200e6, 1) if size else None  # ~200 MB/s from disk into memory

    def _progress(self, spec: ModelSpec, start: float, eta: float | None) -> Callable[[float], None]:
        last = [-1]

        def progress(fraction: float) -> None:
            percent = int(max(0.0, min(1.0, fraction)) * 90)  # preparing the file; loading is the rest
            if percent >= last[0] + 10:
                last[0] = percent
                elapsed = time.perf_counter() - start
                left = elapsed / fraction - elapsed if fraction > 0 else eta
                self._status(spec, "loading", progress=percent, eta_seconds=round(left, 1) if left else None)

        return progress

    def _status(self, spec: ModelSpec, status: str, **data: Any) -> None:
        if status != "loading":  # one line per change of state, with its figures as metadata
            level = logging.WARNING if status == "failed" else logging.INFO
            log.log(level, "model %s %s", spec.id, status, extra={"model": spec.id, "details": data})
        self._publish("model_status", {"model": spec.id, "status": status, **data})

    # ------------------------------------------------------------------ unloading
    def unload(self, model_id: str, reason: str = "requested") -> int:
        """Unload a model; returns the bytes freed (0 when it was not loaded)."""
        with self._lock:
            state = self._models.get(model_id)
            model = state.model if state else None
            if state is None or model is None:
                return 0
            freed = model.memory_bytes
            engine = state.engine
            state.model, state.engine, state.status, state.expires_at = None, None, "unloaded", None
        try:
            if engine is not None:
                engine.stop(
                    reason="the server shut down" if reason == "shutdown" else f"the model was unloaded ({reason})"
                )
            model.close()
        except Exception:
            log.exception("closing model %s failed", model_id)
        self._status(state.spec, "unloaded", freed_memory=freed, reason=reason)
        return freed

    def unload_all(self) -> None:
        """Unload every model."""
        for model_id in list(self.loaded()):
            self.unload(model_id, reason="shutdown")

    def reap(self) -> list[str]:
        """Unload idle models whose keep-alive has passed; returns their ids."""
        now = time.time()
        with self._lock:
            due = [
                mid
                for mid, st in self._models.items()
                if st.model is not None and st.active == 0 and st.expires_at is not None and st.expires_at <= now
            ]
        for mid in due:
            self.unload(mid, reason="idle (keep-alive expired)")
        return due

    def start_reaper(self, interval: float = 1.0) -> None:
        """Check keep-alives every ``interval`` seconds on a daemon thread."""

        def run() -> None:
            while not self._stop.wait(interval):
                try:
                    self.reap()
                except Exception:
                    log.exception("model reaper failed")

        self._reaper = threading.Thread(target=run, name="model-reaper", daemon=True)
        self._reaper.start()

    def stop_reaper(self) -> None:
        """Stop the reaper thread."""
        self._stop.set()
        if self._reaper is not None:
            self._reaper.join(5)

    # ------------------------------------------------------------------ description
    def describe(self, model_id: str) -> dict[str, Any]:
        """Catalog facts, load state, memory and live performance of one model."""
        state = self.state(model_id)
        spec, model = state.spec, state.model
        info: dict[str, Any] = {
            "id": spec.id,
            "name": spec.name or spec.id,
            "type": spec.type,
            "format": spec.format,
            "backend": state.model.backend_name if model else spec.backend,
            "capabilities": list(spec.capabilities),
            "architecture": spec.architecture,
            "parameters": spec.parameters,
            "vocab_size": spec.vocab_size,
            "context_length": spec.context_length,
            "quantization": spec.quantization,
            "size_bytes": spec.size_bytes,
            "loaded": model is not None,
            "status": state.status,
            "performance": state.performance(),
        }
        if model is not None:
            info.update(memory_usage=model.memory_bytes, load_time=state.load_time, runtime=model.describe())
            if state.engine is not None:
                info["engine"] = state.engine.stats()
        else:
            backend = self._backends.get(spec.backend)
            options = state.options or LoadOptions()
            info["estimated_memory"] = backend[0].estimate_memory(spec, options) if backend else None
        if spec.unavailable:
            info["unavailable"] = spec.unavailable
        if state.error:
            info["error"] = state.error
        return info


def _extra(backend: str) -> str:
    return {"llamacpp": "gguf", "torch": "torch"}.get(backend, backend)
