"""Every REST method of ``LlamaGPUClient`` against the live server with the real GGUF models."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import pytest
from conftest import GEMMA, PASSWORD, QWEN, LiveServer

from llama_gpu_client import (
    AsyncLlamaGPUClient,
    AuthenticationError,
    BatchResult,
    InferenceResult,
    LlamaGPUClient,
    ModelNotLoadedError,
    NotFoundError,
    PermissionDeniedError,
    RequestCancelledError,
    StreamToken,
)

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def admin(live: LiveServer) -> LlamaGPUClient:
    with LlamaGPUClient(live.url, api_key=live.keys["admin"]) as client:
        yield client


def test_infer_with_a_real_model(admin: LlamaGPUClient) -> None:
    result = admin.infer("The capital of France is", model=GEMMA, max_tokens=8, temperature=0.5, top_p=0.9)
    assert isinstance(result, InferenceResult)
    assert result.generated_text.strip() and 1 <= result.tokens_generated <= 8
    assert result.model_used == GEMMA and result.backend == "llamacpp"
    assert result.inference_time > 0 and result.processing_time >= result.inference_time
    assert result.request_id == admin.last_request_id and result.request_id.startswith("req_")
    assert result.raw["success"] is True
    assert admin.rate_limit is not None and admin.rate_limit.limit == 1000
    before = admin.rate_limit.remaining
    admin.infer("1, 2, 3,", model=GEMMA, max_tokens=2)
    assert admin.rate_limit.remaining == before - 1


def test_default_model_is_the_servers(admin: LlamaGPUClient) -> None:
    assert admin.infer("Hello", max_tokens=2).model_used == GEMMA


def test_stream_infer_yields_tokens_then_the_final_text(admin: LlamaGPUClient) -> None:
    with admin.stream_infer("Once upon a time", model=GEMMA, max_tokens=12, temperature=0.8) as stream:
        tokens = list(stream)
    assert all(isinstance(t, StreamToken) for t in tokens)
    assert 1 <= len(tokens) <= 12 and [t.position for t in tokens] == list(range(len(tokens)))
    assert [t.is_complete for t in tokens] == [False] * (len(tokens) - 1) + [True]
    assert tokens[-1].final_text == "".join(t.text for t in tokens) == stream.text
    assert stream.final is tokens[-1] and stream.request_id.startswith("sdk-")


def test_stream_request_id_and_cancel_request(admin: LlamaGPUClient) -> None:
    stream = admin.stream_infer(
        "Write a long story about a dragon.", model=GEMMA, max_tokens=400, request_id="sdk-cancel-1"
    )
    assert stream.request_id == "sdk-cancel-1"
    tokens = iter(stream)
    first = next(tokens)
    assert not first.is_complete
    assert admin.cancel_request("sdk-cancel-1") is True
    with pytest.raises(RequestCancelledError) as caught:
        for _ in tokens:
            pass
    assert caught.value.code == "REQUEST_CANCELLED"
    assert len(stream.text) > 0
    with pytest.raises(NotFoundError):  # nothing left to cancel
        admin.cancel_request("sdk-cancel-1")


def test_closing_a_stream_early_frees_the_sequence(admin: LlamaGPUClient) -> None:
    stream = admin.stream_infer("Count: 1, 2, 3,", model=GEMMA, max_tokens=300)
    next(iter(stream))
    stream.close()
    deadline = time.monotonic() + 10
    while admin.get_model(GEMMA).engine["running"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert admin.get_model(GEMMA).engine["running"] == 0


def test_batch_infer_keeps_ids_and_order(admin: LlamaGPUClient) -> None:
    batch = admin.batch_infer(
        [{"id": "b", "text": "The sky is", "max_tokens": 4}, "Water is", {"id": "a", "text": "Fire is"}],
        model=GEMMA,
        max_tokens=3,
        temperature=0.7,
    )
    assert isinstance(batch, BatchResult)
    assert [r.id for r in batch] == ["b", "1", "a"] and len(batch) == 3 and batch[1].id == "1"
    assert 1 <= batch.by_id("b").tokens_generated <= 4 and 1 <= batch.by_id("a").tokens_generated <= 3
    assert all(r.generated_text for r in batch) and batch.backend == "llamacpp"
    assert batch.items_processed == 3 and batch.batch_id.startswith("batch_")
    with pytest.raises(KeyError):
        batch.by_id("zzz")
    with pytest.raises(TypeError, match="list of prompts"):
        admin.batch_infer("not a list")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"inputs\[0\]"):
        admin.batch_infer([42])  # type: ignore[list-item]


def test_models_list_get_load_unload(admin: LlamaGPUClient) -> None:
    models = {m.id: m for m in admin.list_models()}
    assert {GEMMA, QWEN, "echo"} <= set(models)
    assert models[QWEN].type == "chat" and "chat" in models[QWEN].capabilities and models[QWEN].backend == "llamacpp"

    loaded = admin.load_model(QWEN, backend="llamacpp", quantization="q4_k_m", n_ctx=2048)
    assert loaded.id == QWEN and loaded.loaded and loaded.backend == "llamacpp" and loaded.load_time >= 0
    assert loaded.memory_usage and loaded.memory_usage.endswith("MB")
    details = admin.get_model(QWEN)
    assert details.loaded and details.status == "loaded" and details.format == "gguf"
    assert details.architecture == "qwen2" and details.runtime["n_ctx"] == 2048
    assert details.engine is not None and details.engine["max_sequences"] >= 1
    assert next(m for m in admin.list_models() if m.id == QWEN).loaded

    unloaded = admin.unload_model(QWEN)
    assert unloaded.freed_memory and unloaded.message == "Model unloaded successfully"
    assert not admin.get_model(QWEN).loaded and admin.get_model(QWEN).engine is None
    with pytest.raises(ModelNotLoadedError):
        admin.unload_model(QWEN)
    with pytest.raises(ValueError, match="model_id"):
        admin.get_model("")


def test_plugins_list_load_configure_unload(admin: LlamaGPUClient) -> None:
    plugins = {p.id: p for p in admin.list_plugins()}
    assert {"core", "echo", "llamacpp", "monitoring"} <= set(plugins)
    assert plugins["core"].essential and plugins["core"].loaded and "check_permission" in plugins["core"].hooks

    loaded = admin.load_plugin("echo", {"priority": 30, "settings": {"mode": "reverse"}})
    assert loaded.id == "echo" and loaded.status == "loaded" and loaded.priority == 30 and loaded.enabled
    assert admin.infer("one two three", model="echo").generated_text == "three two one"
    config = admin.update_plugin_config("echo", {"settings": {"mode": "upper"}})
    assert config.settings["mode"] == "upper" and config.priority == 30
    assert admin.infer("one two", model="echo").generated_text == "ONE TWO"
    assert next(p for p in admin.list_plugins() if p.id == "echo").config.settings["mode"] == "upper"

    assert admin.unload_plugin("echo") == "echo"
    assert next(p for p in admin.list_plugins() if p.id == "echo").status != "loaded"
    admin.load_plugin("echo", {"priority": 50, "settings": {"mode": "echo"}})
    assert admin.infer("back again", model="echo").generated_text == "back again"


def test_system_status_gpu_metrics_logs_alerts(admin: LlamaGPUClient, live: LiveServer) -> None:
    admin.infer("Hello", model=GEMMA, max_tokens=2)
    status = admin.get_system_status()
    assert status.status in ("healthy", "degraded") and status.uptime > 0 and status.version
    assert status.gpu_count == len(status.gpu_usage) and 0 <= status.memory_usage <= 100
    assert status.services["inference_engine"] == "running" and status.statistics["total_requests"] >= 1

    gpu = admin.get_gpu_info()
    assert gpu.gpu_count == len(gpu.gpus) == status.gpu_count
    assert gpu.gpu_count > 0 or gpu.nvml_error

    deadline = time.monotonic() + 15  # samples are stored every second on this server
    while True:
        metrics = admin.get_metrics(timeframe="1h", granularity="1m")
        if any(v is not None for v in metrics.cpu_usage) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert metrics.timeframe == "1h" and metrics.granularity == "1m"
    assert len(metrics.timestamps) == len(metrics.cpu_usage) == len(metrics.request_rate) >= 59
    assert any(v is not None for v in metrics.cpu_usage)
    assert len(admin.get_metrics("24h", "1h").timestamps) >= 23

    logs = admin.get_logs(level="INFO", limit=200)
    assert 1 <= len(logs) <= 200 and all(e.level in ("INFO", "WARNING", "ERROR", "CRITICAL") for e in logs)
    assert any(e.component == "kernel.registry" and GEMMA in e.message for e in logs)
    assert len(admin.get_logs(limit=1)) == 1
    future = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    assert admin.get_logs(since=future) == []
    assert all(e.component == "kernel.registry" for e in admin.get_logs(component="kernel.registry"))

    alerts = admin.get_alerts()
    assert {r["name"] for r in alerts.rules} >= {"error_rate_high", "latency_high"} and isinstance(alerts.alerts, list)
    assert admin.health() is True
    assert LlamaGPUClient("http://127.0.0.1:9", timeout=2).health() is False


def test_login_stores_the_token(live: LiveServer) -> None:
    client = LlamaGPUClient(live.url)
    with pytest.raises(AuthenticationError):
        client.list_models()
    login = client.login("admin", PASSWORD)
    assert login.role == "admin" and login.permissions == ["admin", "read", "write"] and login.expires_in == 3600
    assert client.api_key == login.token and login.token.count(".") == 2 and login.token not in repr(login)
    assert client.list_plugins()  # admin by login token
    with pytest.raises(AuthenticationError) as caught:
        LlamaGPUClient(live.url).login("admin", "wrong password")
    assert caught.value.status == 401 and caught.value.code == "AUTHENTICATION_FAILED"


def test_api_keys_create_list_revoke(admin: LlamaGPUClient, live: LiveServer) -> None:
    created = admin.create_api_key("sdk test", permissions=["read"], expires_in="1d")
    assert created.api_key.startswith("lgk_") and created.permissions == ["read"] and created.expires
    assert created.api_key not in repr(created)
    reader = LlamaGPUClient(live.url, api_key=created.api_key)
    assert reader.list_models()
    with pytest.raises(PermissionDeniedError) as beyond:  # an error of /v1/auth/keys, in the OpenAI shape
        reader.create_api_key("more", permissions=["admin"])
    assert beyond.value.code == "PERMISSION_DENIED" and beyond.value.details["permissions"] == ["admin"]
    listed = {k.id: k for k in admin.list_api_keys()}
    assert created.key_id in listed and listed[created.key_id].prefix == created.prefix
    revoked = admin.revoke_api_key(created.key_id)
    assert revoked.revoked and revoked.id == created.key_id
    with pytest.raises(AuthenticationError):
        reader.list_models()


def test_constructor_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match="base_url"):
        LlamaGPUClient("127.0.0.1:5000")
    with pytest.raises(ValueError, match="max_retries"):
        LlamaGPUClient("http://127.0.0.1:5000", max_retries=-1)
    with pytest.raises(ValueError, match="timeout"):
        LlamaGPUClient("http://127.0.0.1:5000", timeout=0)


def test_async_client(live: LiveServer) -> None:
    async def main() -> tuple[list[InferenceResult], list[StreamToken], list[str]]:
        async with AsyncLlamaGPUClient(live.url, api_key=live.keys["admin"]) as client:
            results = await asyncio.gather(*(client.infer(f"{n} + {n} =", model=GEMMA, max_tokens=3) for n in range(3)))
            stream = await client.stream_infer("Roses are red,", model=GEMMA, max_tokens=6)
            tokens = [t async for t in stream]
            assert stream.text == tokens[-1].final_text and stream.request_id
            models = [m.id for m in await client.list_models()]
            return results, tokens, models

    results, tokens, models = asyncio.run(main())
    assert len(results) == 3 and all(r.tokens_generated >= 1 for r in results)
    assert tokens[-1].is_complete and GEMMA in models
