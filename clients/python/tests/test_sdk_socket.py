"""The Socket.IO wrapper against the live server: auth, channels, events, chat on the real chat model."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from conftest import GEMMA, QWEN, LiveServer

from llama_gpu_client import (
    CHANNELS,
    AuthenticationError,
    InvalidInputError,
    LlamaGPUClient,
    LlamaGPUSocket,
    ModelNotFoundError,
    PermissionDeniedError,
    RequestCancelledError,
)

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def admin(live: LiveServer) -> LlamaGPUClient:
    return LlamaGPUClient(live.url, api_key=live.keys["admin"])


@pytest.fixture
def sockets() -> Iterator[list[LlamaGPUSocket]]:
    opened: list[LlamaGPUSocket] = []
    yield opened
    for sock in opened:
        sock.disconnect()


def test_connect_refusals_are_mapped(live: LiveServer) -> None:
    for token in (None, "lgk_not-a-key"):
        with pytest.raises(AuthenticationError) as caught:
            LlamaGPUClient(live.url, api_key=token).create_socket()
        assert caught.value.code == "AUTHENTICATION_FAILED"
    with pytest.raises(PermissionDeniedError):
        LlamaGPUClient(live.url, api_key=live.keys["write-only"]).create_socket()


def test_subscribe_and_receive_inference_events(
    admin: LlamaGPUClient, sockets: list[LlamaGPUSocket], live: LiveServer
) -> None:
    sock = admin.create_socket()
    sockets.append(sock)
    assert sock.connected and sock.transport == "websocket"
    assert sock.user == {"kind": "api_key", "id": sock.user["id"], "roles": ["admin", "read", "write"]}
    assert sock.subscribe(["inference_events", "system_metrics"]) == ["inference_events", "system_metrics"]

    started, completed = [], threading.Event()
    second: list[dict] = []
    sock.on("inference_started", started.append)
    handler = sock.on("inference_completed", lambda data: completed.set())
    sock.on("inference_completed", second.append)  # several handlers per event
    result = admin.infer("Hello there", model=GEMMA, max_tokens=3)
    assert completed.wait(30)
    done = sock.wait_for("inference_completed", lambda d: d["request_id"] == result.request_id, timeout=10)
    assert done["model"] == GEMMA and done["tokens_generated"] == result.tokens_generated
    assert any(d["request_id"] == result.request_id for d in started)
    assert any(d["request_id"] == result.request_id for d in second)
    metrics = sock.wait_for("system_metrics", timeout=10)  # sampled every 0.5 s on this server
    assert "cpu_usage" in metrics or "cpu" in str(metrics)

    sock.off("inference_completed", handler)
    assert sock.unsubscribe(["inference_events"]) == ["inference_events"]
    with pytest.raises(TimeoutError):
        sock.wait_for("no_such_event", timeout=0.2)
    sock.disconnect()
    assert not sock.connected and sock.transport is None


def test_subscribe_refuses_unknown_channels(admin: LlamaGPUClient, sockets: list[LlamaGPUSocket]) -> None:
    sock = admin.create_socket()
    sockets.append(sock)
    with pytest.raises(InvalidInputError) as caught:
        sock.subscribe(["inference_events", "nope"])
    assert caught.value.details["unknown"] == ["nope"] and caught.value.details["known"] == sock.channels
    assert set(CHANNELS) == set(sock.channels)


def test_model_and_plugin_events(admin: LlamaGPUClient, sockets: list[LlamaGPUSocket]) -> None:
    sock = admin.create_socket(connect=False, transports=("polling",))
    sockets.append(sock)
    assert not sock.connected
    sock.connect()
    assert sock.transport == "polling"
    sock.subscribe(["plugin_events"])
    admin.update_plugin_config("echo", {"priority": 45})
    event = sock.wait_for("plugin_configured", lambda d: d.get("plugin_id") == "echo", timeout=10)
    assert event["plugin_id"] == "echo"
    admin.update_plugin_config("echo", {"priority": 50})


def test_chat_on_the_real_chat_model(admin: LlamaGPUClient, sockets: list[LlamaGPUSocket]) -> None:
    sock = admin.create_socket()
    sockets.append(sock)
    chunks: list[str] = []
    answer = sock.chat(
        [{"role": "user", "content": "What is the capital of France? Answer in one word."}],
        model=QWEN,
        max_tokens=12,
        temperature=0,
        seed=1,
        on_chunk=chunks.append,
    )
    assert "paris" in answer.text.lower()
    assert "".join(chunks) == "".join(answer.chunks) == answer.text and answer.model == QWEN
    assert answer.finish_reason in ("stop", "length") and answer.usage["completion_tokens"] >= 1
    assert answer.request_id.startswith("sdk-")

    with pytest.raises(ModelNotFoundError):
        sock.chat([{"role": "user", "content": "hi"}], model="no-such-model")
    with pytest.raises(InvalidInputError):
        sock.chat([], model=QWEN)


def test_chat_needs_write_and_can_be_cancelled(
    live: LiveServer, admin: LlamaGPUClient, sockets: list[LlamaGPUSocket]
) -> None:
    reader = LlamaGPUClient(live.url, api_key=live.keys["read"]).create_socket()
    sockets.append(reader)
    with pytest.raises(PermissionDeniedError):
        reader.chat([{"role": "user", "content": "hi"}], model=QWEN)

    sock = admin.create_socket()
    sockets.append(sock)
    first = threading.Event()

    def cancel_after_first(_text: str) -> None:
        if not first.is_set():
            first.set()
            threading.Thread(target=sock.cancel_chat, args=("sdk-chat-cancel",)).start()

    with pytest.raises(RequestCancelledError):
        sock.chat(
            [{"role": "user", "content": "Write a very long essay about rivers."}],
            model=QWEN,
            max_tokens=400,
            on_chunk=cancel_after_first,
            request_id="sdk-chat-cancel",
        )
    assert first.is_set()
    with pytest.raises(TimeoutError):
        sock.chat([{"role": "user", "content": "Write a long poem."}], model=QWEN, max_tokens=400, timeout=0.5)
