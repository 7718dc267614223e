"""Error mapping against real server errors, and the retries of 429/503 with ``Retry-After``."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import requests
from conftest import GEMMA, LiveServer

from llama_gpu_client import (
    APIConnectionError,
    AuthenticationError,
    ConflictError,
    InvalidInputError,
    LlamaGPUClient,
    LlamaGPUError,
    ModelNotFoundError,
    NotFoundError,
    PermissionDeniedError,
    PluginEssentialError,
    PluginNotFoundError,
    RateLimitError,
    ServerOverloadedError,
    ServiceUnavailableError,
)
from llama_gpu_client.errors import ServerError, error_for_code

pytestmark = pytest.mark.timeout(300)


def test_401_without_or_with_a_bad_key(live: LiveServer) -> None:
    for key in (None, "lgk_not-a-real-key"):
        with pytest.raises(AuthenticationError) as caught:
            LlamaGPUClient(live.url, api_key=key).list_models()
        error = caught.value
        assert error.status == 401 and error.code == "AUTHENTICATION_FAILED" and error.request_id.startswith("req_")
        assert "AUTHENTICATION_FAILED (HTTP 401)" in str(error)


def test_403_for_a_role_without_the_permission(live: LiveServer) -> None:
    reader = LlamaGPUClient(live.url, api_key=live.keys["read"])
    assert reader.list_models()
    with pytest.raises(PermissionDeniedError) as caught:
        reader.infer("hello", model=GEMMA)
    assert caught.value.status == 403 and caught.value.code == "PERMISSION_DENIED"
    writer = LlamaGPUClient(live.url, api_key=live.keys["write"])
    with pytest.raises(PermissionDeniedError):
        writer.load_plugin("echo")
    with pytest.raises(PermissionDeniedError):
        writer.get_logs()


def test_404_model_and_plugin_not_found(live: LiveServer) -> None:
    client = LlamaGPUClient(live.url, api_key=live.keys["admin"])
    for call in (lambda: client.infer("x", model="no-such-model"), lambda: client.get_model("no-such-model")):
        with pytest.raises(ModelNotFoundError) as caught:
            call()
        assert caught.value.status == 404 and GEMMA in caught.value.details["available"]
    with pytest.raises(ModelNotFoundError):
        client.stream_infer("x", model="no-such-model")  # refused before the first token
    with pytest.raises(PluginNotFoundError) as plugin:
        client.load_plugin("no-such-plugin")
    assert isinstance(plugin.value, NotFoundError) and plugin.value.code == "PLUGIN_NOT_FOUND"
    assert plugin.value.details["plugin_id"] == "no-such-plugin"


def test_400_invalid_input_names_the_field(live: LiveServer) -> None:
    client = LlamaGPUClient(live.url, api_key=live.keys["admin"])
    with pytest.raises(InvalidInputError) as caught:
        client.infer("x", model=GEMMA, max_tokens=0)
    assert caught.value.status == 400 and "max_tokens" in caught.value.details["errors"]
    with pytest.raises(InvalidInputError) as metrics:
        client.get_metrics(timeframe="2h")
    assert "timeframe" in metrics.value.details["errors"]
    with pytest.raises(InvalidInputError):
        client.batch_infer([])
    with pytest.raises(InvalidInputError):
        client.update_plugin_config("echo", {"priority": "high"})


def test_409_essential_plugin(live: LiveServer) -> None:
    client = LlamaGPUClient(live.url, api_key=live.keys["admin"])
    with pytest.raises(PluginEssentialError) as caught:
        client.unload_plugin("core")
    assert isinstance(caught.value, ConflictError) and caught.value.status == 409


def test_connection_errors_are_api_connection_errors() -> None:
    with pytest.raises(APIConnectionError) as caught:
        LlamaGPUClient("http://127.0.0.1:9", timeout=2, max_retries=0).list_models()
    assert caught.value.status is None and caught.value.code == "CONNECTION_ERROR"


def test_unknown_codes_fall_back_on_the_status() -> None:
    assert error_for_code("SOMETHING_NEW", 503) is ServiceUnavailableError
    assert error_for_code("SOMETHING_NEW", 502) is ServerError
    assert error_for_code("SOMETHING_NEW", 418) is LlamaGPUError
    assert error_for_code("INFERENCE_FAILED", 500) is ServerError


class Counting(requests.Session):
    """A session that counts the requests it sends."""

    def __init__(self) -> None:
        super().__init__()
        self.sent = 0

    def request(self, *args: object, **kwargs: object) -> requests.Response:  # type: ignore[override]
        self.sent += 1
        return super().request(*args, **kwargs)


@pytest.fixture(scope="module")
def tight(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server with one echo sequence and no queue (503 at once), and a tiny ``system`` rate limit."""
    server = LiveServer(
        tmp_path_factory.mktemp("sdk-tight"),
        default_model="echo",
        parallel=1,
        max_queue=0,
        rate_limit_overrides="system=3/3",
    )
    try:
        yield server
    finally:
        server.close()


def test_429_carries_retry_after_and_is_not_slept_through(tight: LiveServer) -> None:
    session = Counting()
    client = LlamaGPUClient(tight.url, api_key=tight.keys["read"], max_retries=3, session=session)
    for _ in range(3):
        client.get_gpu_info()
    assert client.rate_limit.remaining == 0
    started = time.monotonic()
    with pytest.raises(RateLimitError) as caught:
        client.get_system_status()
    error = caught.value
    assert error.status == 429 and error.code == "RATE_LIMIT_EXCEEDED" and error.details["group"] == "system"
    assert 1 <= error.retry_after <= 3600
    # the hourly window asks for more than max_retry_wait: raised at once, sent once
    assert time.monotonic() - started < 5 and session.sent == 4


def _occupy(server: LiveServer, seconds: float) -> threading.Thread:
    """Keep the only echo sequence busy for about ``seconds``."""
    words = " ".join(f"w{n}" for n in range(int(seconds / 0.1)))
    thread = threading.Thread(
        target=LlamaGPUClient(server.url, api_key=server.keys["write"], max_retries=0).infer,
        args=(words,),
        kwargs={"model": "echo", "max_tokens": 1000},
    )
    thread.start()
    return thread


def test_503_overloaded_raises_without_retries_and_succeeds_with_them(tight: LiveServer) -> None:
    admin = LlamaGPUClient(tight.url, api_key=tight.keys["admin"])
    admin.update_plugin_config("echo", {"settings": {"token_delay": 0.1}})
    try:
        admin.infer("warm up", model="echo")
        busy = _occupy(tight, 1.5)
        deadline = time.monotonic() + 60  # until the server runs it, however slow the machine
        while not admin.get_model("echo").engine["running"]:
            assert time.monotonic() < deadline, "the busy request never started"
            time.sleep(0.02)
        with pytest.raises(ServerOverloadedError) as caught:
            LlamaGPUClient(tight.url, api_key=tight.keys["write"], max_retries=0).infer("x", model="echo")
        error = caught.value
        assert error.status == 503 and error.code == "SERVER_OVERLOADED" and error.retry_after == 1
        assert isinstance(error, ServiceUnavailableError)

        session = Counting()
        patient = LlamaGPUClient(tight.url, api_key=tight.keys["write"], max_retries=5, session=session)
        started = time.monotonic()
        assert patient.infer("finally served", model="echo").generated_text == "finally served"
        assert session.sent >= 2 and time.monotonic() - started >= 1.0  # waited Retry-After at least once
        busy.join(30)

        _occupy(tight, 1.5).join(0.3)
        capped = LlamaGPUClient(tight.url, api_key=tight.keys["write"], max_retries=5, max_retry_wait=0.5)
        with pytest.raises(ServerOverloadedError):  # Retry-After 1 > max_retry_wait 0.5: no sleep
            capped.infer("x", model="echo")
    finally:
        admin.update_plugin_config("echo", {"settings": {"token_delay": 0.0}})
