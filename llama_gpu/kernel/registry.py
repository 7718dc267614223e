"""Backends and models: which exist, which are loaded, and loading them once.

This is the foundation's registry: backends come from ``register_backends``, models from
the backends' built-in lists, and a model is loaded on first use. The backends issue adds
the catalog, memory accounting and eviction here.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from .backend import Backend, LoadedModel, ModelSpec
from .errors import BackendUnavailable, LlamaGPUError, ModelLoadFailed, ModelNotFound

log = logging.getLogger(__name__)


class ModelRegistry:
    """Backends by name, model specs by id, loaded models by id."""

    def __init__(self, default_model: str) -> None:
        self.default_model = default_model
        self._lock = threading.RLock()
        self._backends: dict[str, tuple[Backend, str]] = {}
        self._specs: dict[str, tuple[ModelSpec, str]] = {}
        self._loaded: dict[str, LoadedModel] = {}
        self._load_locks: dict[str, threading.Lock] = {}
        self.load_times: dict[str, float] = {}

    # backends ---------------------------------------------------------------
    def add_backend(self, backend: Backend, owner: str) -> None:
        """Add a backend registered by plugin ``owner``, with its built-in models."""
        name = getattr(backend, "name", None)
        if not isinstance(backend, Backend) or not isinstance(name, str) or not name:
            raise TypeError(f"register_backends expects Backend instances with a name, got {backend!r}")
        with self._lock:
            if name in self._backends:
                raise ValueError(f"backend {name!r} is registered twice ({self._backends[name][1]} and {owner})")
            models = backend.builtin_models()
            clash = [m.id for m in models if m.id in self._specs]
            if clash:
                raise ValueError(f"backend {name!r} declares models that already exist: {clash}")
            self._backends[name] = (backend, owner)
            for spec in models:
                self._specs[spec.id] = (spec, owner)

    def remove_owner(self, owner: str) -> None:
        """Remove every backend and model that plugin ``owner`` registered, unloading models."""
        with self._lock:
            backends = [name for name, (_, o) in self._backends.items() if o == owner]
            models = [mid for mid, (spec, o) in self._specs.items() if o == owner or spec.backend in backends]
            for mid in models:
                self.unload(mid)
                del self._specs[mid]
            for name in backends:
                del self._backends[name]

    def backends(self) -> dict[str, Backend]:
        """Registered backends by name."""
        with self._lock:
            return {name: b for name, (b, _) in self._backends.items()}

    # models -------------------------------------------------------------------
    def resolve(self, model_id: str | None) -> ModelSpec:
        """The spec of ``model_id`` (``default`` or empty means the default model)."""
        wanted = self.default_model if model_id in (None, "", "default") else model_id
        with self._lock:
            entry = self._specs.get(wanted)
            if entry is None:
                raise ModelNotFound(
                    f"model {wanted!r} does not exist",
                    details={"model": wanted, "available": sorted(self._specs)},
                )
            return entry[0]

    def specs(self) -> list[ModelSpec]:
        """Every known model."""
        with self._lock:
            return [spec for spec, _ in self._specs.values()]

    def loaded(self) -> dict[str, LoadedModel]:
        """Models in memory by id."""
        with self._lock:
            return dict(self._loaded)

    def get_loaded(self, model_id: str | None) -> LoadedModel:
        """The loaded model for ``model_id``, loading it first if needed."""
        spec = self.resolve(model_id)
        with self._lock:
            model = self._loaded.get(spec.id)
            if model is not None:
                return model
        return self.load(spec.id)

    def load(self, model_id: str) -> LoadedModel:
        """Load a model once, however many callers ask at the same time."""
        spec = self.resolve(model_id)
        with self._lock:
            lock = self._load_locks.setdefault(spec.id, threading.Lock())
        with lock:
            with self._lock:
                if spec.id in self._loaded:
                    return self._loaded[spec.id]
                entry = self._backends.get(spec.backend)
            if entry is None or not entry[0].is_available():
                raise BackendUnavailable(
                    f"backend {spec.backend!r} for model {spec.id!r} is not available",
                    details={"backend": spec.backend, "available": sorted(self._backends)},
                )
            start = time.perf_counter()
            try:
                model = entry[0].load(spec)
            except LlamaGPUError:
                raise
            except Exception as exc:
                log.exception("loading model %s failed", spec.id)
                raise ModelLoadFailed(
                    f"model {spec.id!r} failed to load: {type(exc).__name__}: {exc}", details={"model": spec.id}
                ) from exc
            with self._lock:
                self._loaded[spec.id] = model
                self.load_times[spec.id] = time.perf_counter() - start
            return model

    def unload(self, model_id: str) -> bool:
        """Unload a model; False when it was not loaded."""
        with self._lock:
            model = self._loaded.pop(model_id, None)
        if model is None:
            return False
        try:
            model.close()
        except Exception:
            log.exception("closing model %s failed", model_id)
        return True

    def unload_all(self) -> None:
        """Unload every model."""
        for model_id in list(self.loaded()):
            self.unload(model_id)

    def describe(self, spec: ModelSpec) -> dict[str, Any]:
        """A JSON-ready summary of one model."""
        loaded = self.loaded().get(spec.id)
        return {
            "id": spec.id,
            "name": spec.name or spec.id,
            "backend": spec.backend,
            "type": spec.type,
            "loaded": loaded is not None,
            "capabilities": list(spec.capabilities),
        }
