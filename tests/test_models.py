"""Model management in the kernel: catalog, loading, eviction, keep-alive, memory, events."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from llama_gpu import (
    Backend,
    GeneratedToken,
    InferenceRequest,
    Kernel,
    LoadedModel,
    LoadOptions,
    ModelSpec,
    hookimpl,
)
from llama_gpu.errors import (
    BackendUnavailable,
    InsufficientMemory,
    InvalidInput,
    ModelLoadFailed,
    ModelNotFound,
    ModelNotLoaded,
)
from llama_gpu.plugins.models.embedded import assemble_parts

from .conftest import Recorder, make_settings

MiB = 1024 * 1024


class SizedModel(LoadedModel):
    backend_name = "sized"

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        self.closed = False

    def generate(self, request: InferenceRequest) -> Iterator[GeneratedToken]:
        yield GeneratedToken(text=self.spec.id, token_id=0)

    def tokenize(self, text: str) -> list[int]:
        return [0] * len(text.split())

    @property
    def memory_bytes(self) -> int:
        return int(self.spec.options["mib"]) * MiB

    def close(self) -> None:
        self.closed = True


class SizedBackend(Backend):
    """Models of a declared size; counts loads; can be slowed down to test coalescing."""

    name = "sized"

    def __init__(self) -> None:
        self.loads: list[str] = []
        self.delay = 0.0

    def estimate_memory(self, spec: ModelSpec, options: LoadOptions) -> int:
        return int(spec.options["mib"]) * MiB

    def load(self, spec: ModelSpec, path: str | None, options: LoadOptions) -> LoadedModel:
        time.sleep(self.delay)
        if spec.options.get("explode"):
            raise RuntimeError("weights on fire")
        self.loads.append(spec.id)
        return SizedModel(spec)


class Catalog:
    def __init__(self) -> None:
        self.backend = SizedBackend()

    @hookimpl
    def register_backends(self, register: Callable[[Backend], None]) -> None:
        register(self.backend)

    @hookimpl
    def register_models(self, register: Callable[[ModelSpec], None]) -> None:
        for name, mib in (("small", 10), ("medium", 20), ("large", 30)):
            register(ModelSpec(id=name, backend="sized", options={"mib": mib}))
        register(ModelSpec(id="broken", backend="sized", options={"mib": 1, "explode": True}))
        register(ModelSpec(id="absent", backend="sized", unavailable="package not installed", options={"mib": 1}))


def sized_kernel(tmp_path: Path, **overrides: Any) -> tuple[Kernel, Catalog, Recorder]:
    kernel = Kernel(make_settings(tmp_path, **overrides)).start()
    catalog, recorder = Catalog(), Recorder()
    kernel.register_plugin("catalog", catalog)
    kernel.register_plugin("recorder", recorder)
    return kernel, catalog, recorder


def ask(kernel: Kernel, model: str, **kw: Any) -> str:
    return kernel.complete(InferenceRequest(prompt="hi", model=model, **kw)).text


def test_hook_register_models(tmp_path: Path) -> None:
    kernel, _, _ = sized_kernel(tmp_path)
    try:
        ids = {s.id for s in kernel.registry.specs()}
        assert {"small", "medium", "large", "broken", "absent", "echo"} <= ids
        assert ask(kernel, "small") == "small"
        with pytest.raises(ModelLoadFailed, match="package not installed"):
            ask(kernel, "absent")

        class Clash:
            @hookimpl
            def register_models(self, register: Callable[[ModelSpec], None]) -> None:
                register(ModelSpec(id="small", backend="sized"))

        from llama_gpu.errors import PluginLoadFailed

        with pytest.raises(PluginLoadFailed, match="declared twice"):
            kernel.register_plugin("clash", Clash())
        kernel.unload_plugin("catalog")
        assert "small" not in {s.id for s in kernel.registry.specs()}
        assert kernel.registry.loaded() == {}, "unloading the plugin unloads its models"
    finally:
        kernel.stop()


def test_lru_eviction_keeps_within_max_loaded_models(tmp_path: Path) -> None:
    kernel, catalog, recorder = sized_kernel(tmp_path, max_loaded_models=2)
    try:
        ask(kernel, "small")
        ask(kernel, "medium")
        ask(kernel, "small")  # small is now the most recently used
        ask(kernel, "large")
        assert set(kernel.registry.loaded()) == {"small", "large"}
        event = recorder.wait_for("model_status", model="medium", status="unloaded")
        assert event.data["reason"] == "evicted (least recently used)"
        assert event.data["freed_memory"] == 20 * MiB
        assert catalog.backend.loads == ["small", "medium", "large"]
    finally:
        kernel.stop()


def test_busy_models_are_not_evicted(tmp_path: Path) -> None:
    kernel, _, _ = sized_kernel(tmp_path, max_loaded_models=1)
    try:
        stream = kernel.generate(InferenceRequest(prompt="hi", model="small"))
        from llama_gpu.errors import ServerOverloaded

        with pytest.raises(ServerOverloaded, match="busy"):
            ask(kernel, "medium")
        stream.close()
        assert ask(kernel, "medium") == "medium"
    finally:
        kernel.stop()


def test_idle_models_unload_after_keep_alive(tmp_path: Path) -> None:
    kernel, _, recorder = sized_kernel(tmp_path, keep_alive=0.3)
    try:
        ask(kernel, "small")
        ask(kernel, "medium", keep_alive=-1)  # this request keeps its model forever
        event = recorder.wait_for("model_status", model="small", status="unloaded", timeout=10)
        assert event.data["reason"] == "idle (keep-alive expired)"
        time.sleep(0.5)
        assert set(kernel.registry.loaded()) == {"medium"}
        ask(kernel, "large", keep_alive=0)
        assert "large" not in kernel.registry.loaded(), "keep_alive 0 unloads right after the request"
    finally:
        kernel.stop()


def test_memory_limit_refuses_with_required_and_available(tmp_path: Path) -> None:
    kernel, _, _ = sized_kernel(tmp_path, memory_limit=25 * MiB, max_loaded_models=5)
    try:
        ask(kernel, "small")
        with pytest.raises(InsufficientMemory) as info:
            kernel.load_model("large")  # 30 MiB never fits in 25
        assert info.value.details["required"] == 30 * MiB
        assert info.value.details["memory_limit"] == 25 * MiB
        assert info.value.status == 503
        ask(kernel, "medium")  # 10 + 20 > 25: small is evicted to make room
        assert set(kernel.registry.loaded()) == {"medium"}
    finally:
        kernel.stop()


def test_concurrent_loads_are_coalesced(tmp_path: Path) -> None:
    kernel, catalog, recorder = sized_kernel(tmp_path)
    catalog.backend.delay = 0.3
    try:
        threads = [threading.Thread(target=kernel.load_model, args=("small",)) for _ in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert catalog.backend.loads == ["small"]
        recorder.wait_for("model_status", model="small", status="loaded")
        loading = [e for e in recorder.events if e.type == "model_status" and e.data["status"] == "loading"]
        assert len(loading) == 1
        assert loading[0].data["progress"] == 0 and "eta_seconds" in loading[0].data
    finally:
        kernel.stop()


def test_not_loaded_without_autoload_and_explicit_load(tmp_path: Path) -> None:
    kernel, _, _ = sized_kernel(tmp_path, autoload=False)
    try:
        with pytest.raises(ModelNotLoaded) as info:
            ask(kernel, "small")
        assert info.value.status == 409 and info.value.details["model"] == "small"
        described = kernel.load_model("small")
        assert described["loaded"] is True and described["memory_usage"] == 10 * MiB
        assert ask(kernel, "small") == "small"
        assert kernel.unload_model("small") == 10 * MiB
        with pytest.raises(ModelNotLoaded):
            kernel.unload_model("small")
    finally:
        kernel.stop()


def test_failed_load_reports_and_recovers(tmp_path: Path) -> None:
    kernel, _, recorder = sized_kernel(tmp_path)
    try:
        with pytest.raises(ModelLoadFailed, match="weights on fire"):
            kernel.load_model("broken")
        event = recorder.wait_for("model_status", model="broken", status="failed")
        assert event.data["error"] == "MODEL_LOAD_FAILED"
        assert kernel.registry.describe("broken")["status"] == "failed"
        assert ask(kernel, "small") == "small", "the kernel keeps serving"
    finally:
        kernel.stop()


def test_backend_choice_errors(tmp_path: Path) -> None:
    kernel, _, _ = sized_kernel(tmp_path)
    try:
        with pytest.raises(BackendUnavailable) as info:
            kernel.load_model("small", backend="tensorrt")
        assert "sized" in info.value.details["choices"]
        with pytest.raises(InvalidInput, match="cannot load"):
            kernel.load_model("small", backend="echo")
        with pytest.raises(ModelNotFound) as missing:
            kernel.load_model("nonexistent")
        assert "small" in missing.value.details["available"]
        described = kernel.load_model("small", backend="cpu")
        assert described["backend"] == "sized"
    finally:
        kernel.stop()


def test_model_info_has_live_performance(tmp_path: Path) -> None:
    kernel, _, _ = sized_kernel(tmp_path)
    try:
        before = kernel.registry.describe("small")
        assert before["loaded"] is False and before["estimated_memory"] == 10 * MiB
        for _ in range(3):
            ask(kernel, "small")
        info = kernel.registry.describe("small")
        assert info["performance"]["total_requests"] == 3
        assert info["performance"]["tokens_per_second"] > 0
        assert info["performance"]["avg_latency"] >= 0
        assert info["loaded"] is True and info["memory_usage"] == 10 * MiB
    finally:
        kernel.stop()


def test_preload_loads_the_default_model(tmp_path: Path) -> None:
    kernel = Kernel(make_settings(tmp_path, preload=True)).start()
    try:
        deadline = time.monotonic() + 10
        while "echo" not in kernel.registry.loaded() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "echo" in kernel.registry.loaded()
    finally:
        kernel.stop()


def test_assembly_verifies_the_digest(tmp_path: Path) -> None:
    parts = []
    for n, content in enumerate((b"hello ", b"world")):
        part = tmp_path / f"part{n}"
        part.write_bytes(content)
        parts.append(part)
    import hashlib

    good = hashlib.sha256(b"hello world").hexdigest()
    seen: list[float] = []
    target = assemble_parts(parts, tmp_path / "out" / "m.gguf", good, 11, seen.append)
    assert target.read_bytes() == b"hello world" and seen[-1] == 1.0
    assert assemble_parts(parts, target, good, 11, seen.append) == target  # already there: no rewrite
    with pytest.raises(ModelLoadFailed, match="does not match") as info:
        assemble_parts(parts, tmp_path / "bad.gguf", "0" * 64, 11, seen.append)
    assert info.value.details["actual_sha256"] == good
    assert not (tmp_path / "bad.gguf").exists() and not list(tmp_path.glob("*.partial"))


def test_a_request_the_filters_refuse_never_loads_or_evicts_a_model(tmp_path: Path) -> None:
    kernel, catalog, _ = sized_kernel(tmp_path, max_loaded_models=1)
    try:
        assert ask(kernel, "small") == "small"
        with pytest.raises(InvalidInput, match="max_tokens"):
            ask(kernel, "medium", max_tokens=10**6)  # the limits filter refuses it before any load
        assert catalog.backend.loads == ["small"], "medium was never loaded (small never evicted for it)"
        # a chat needs its model's template first (this one has none): it loads, then is refused
        chat = InferenceRequest(prompt="", messages=[{"role": "user", "content": "hi"}], model="medium")
        with pytest.raises(InvalidInput, match="no chat template"):
            kernel.complete(chat)
        assert catalog.backend.loads == ["small", "medium"]
    finally:
        kernel.stop()
