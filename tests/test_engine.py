"""The serving engine on the echo backend: batching, bounded queues, timeouts, cancellation, draining."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from llama_gpu import Chunk, Identity, InferenceRequest, Kernel, hookimpl
from llama_gpu.api import create_app
from llama_gpu.errors import (
    ConfigurationError,
    NotFound,
    RequestCancelled,
    ServerOverloaded,
    ServiceUnavailable,
)
from llama_gpu.kernel.inference import InferenceStream

from .conftest import make_settings

LONG = " ".join(f"w{n}" for n in range(400))


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``predicate`` until it holds (fails the test after ``timeout`` s)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


@pytest.fixture
def make_kernel(tmp_path: Path) -> Iterator[Callable[..., Kernel]]:
    kernels: list[Kernel] = []

    def make(token_delay: float = 0.02, **settings: Any) -> Kernel:
        k = Kernel(make_settings(tmp_path / str(len(kernels)), **settings)).start()
        k.configure_plugin("echo", {"settings": {"token_delay": token_delay}})
        k.load_model("echo")
        kernels.append(k)
        return k

    yield make
    for k in kernels:
        k.stop(timeout=2)


def engine_stats(kernel: Kernel) -> dict[str, Any]:
    return kernel.registry.engine("echo").stats()


def start_streaming(kernel: Kernel, prompt: str = LONG, **kw: Any) -> tuple[InferenceStream, list[str]]:
    """Start a request and read it on a thread; returns the stream and the texts read so far."""
    stream = kernel.generate(InferenceRequest(prompt=prompt, max_tokens=kw.pop("max_tokens", 400), **kw))
    texts: list[str] = []

    def read() -> None:
        try:
            for chunk in stream:
                texts.append(chunk.text)
        except Exception as exc:
            texts.append(f"ERROR {type(exc).__name__}")

    threading.Thread(target=read, daemon=True).start()
    return stream, texts


def test_concurrent_requests_share_decode_steps(make_kernel: Callable[..., Kernel]) -> None:
    kernel = make_kernel(parallel=4)
    prompts = [" ".join(f"p{i}w{n}" for n in range(20)) for i in range(4)]
    results: dict[int, str] = {}
    threads = [
        threading.Thread(
            target=lambda i=i: results.__setitem__(
                i, kernel.complete(InferenceRequest(prompt=prompts[i], max_tokens=50)).text
            )
        )
        for i in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == dict(enumerate(prompts)), "every request gets its own text back"
    stats = engine_stats(kernel)
    assert stats["batch_size"] > 1.5, stats  # steps served several sequences at once
    assert stats["requests"]["completed"] == 4
    assert stats["running"] == stats["waiting"] == 0


def test_a_full_queue_answers_503_with_retry_after_and_loses_nothing(make_kernel: Callable[..., Kernel]) -> None:
    kernel = make_kernel(parallel=1, max_queue=1, token_delay=0.02)
    client = create_app(kernel=kernel).test_client()
    running, texts = start_streaming(kernel, max_tokens=30)
    wait_until(lambda: engine_stats(kernel)["running"] == 1)
    queued = kernel.generate(InferenceRequest(prompt="queued words here", max_tokens=5))
    response = client.post("/api/v1/infer", json={"text": "one more", "max_tokens": 5})
    assert response.status_code == 503
    assert response.json["error"]["code"] == "SERVER_OVERLOADED"
    assert int(response.headers["Retry-After"]) >= 1
    assert response.json["error"]["details"] == {"model": "echo", "running": 1, "waiting": 1}
    openai = client.post("/v1/completions", json={"model": "echo", "prompt": "one more", "max_tokens": 5})
    assert openai.status_code == 503 and "Retry-After" in openai.headers
    assert openai.json["error"]["code"] == "server_overloaded"  # the OpenAI error shape
    # the accepted ones are served in full
    assert queued.result().text == "queued words here"
    wait_until(lambda: len(texts) == 30)
    assert "".join(texts) == " ".join(LONG.split()[:30])
    assert running.response is not None and running.response.finish_reason == "length"
    assert engine_stats(kernel)["requests"]["rejected"] == 2


def test_a_request_waiting_past_the_queue_timeout_is_refused_and_never_started(
    make_kernel: Callable[..., Kernel],
) -> None:
    kernel = make_kernel(parallel=1, queue_timeout=0.3, token_delay=0.02)
    seen: list[str] = []

    class Watch:
        @hookimpl
        def process_chunk(self, request: InferenceRequest, chunk: Chunk) -> None:
            seen.append(request.id)

    kernel.register_plugin("watch", Watch())
    running, _ = start_streaming(kernel, max_tokens=100)
    late = kernel.generate(InferenceRequest(prompt="too late", max_tokens=3, id="late"))
    with pytest.raises(ServerOverloaded, match=r"waited more than 0\.3 s") as info:
        late.result()
    assert info.value.retry_after is not None and info.value.retry_after >= 1
    assert "late" not in seen
    assert engine_stats(kernel)["requests"]["timed_out"] == 1
    running.job.cancel()


def test_a_client_that_leaves_frees_its_sequence_at_the_next_step(make_kernel: Callable[..., Kernel]) -> None:
    kernel = make_kernel(parallel=2, token_delay=0.02)
    stream = kernel.generate(InferenceRequest(prompt=LONG, max_tokens=400))
    chunks = iter(stream)
    for _ in range(3):
        next(chunks)
    stream.close()
    wait_until(lambda: engine_stats(kernel)["running"] == 0)
    stats = engine_stats(kernel)
    assert stats["requests"]["cancelled"] == 1
    assert kernel.inflight == 0 and len(kernel.requests) == 0
    # the slot is free again: a new request is served
    assert kernel.complete(InferenceRequest(prompt="after", max_tokens=3)).text == "after"


def test_a_queued_request_can_be_cancelled_before_it_starts(make_kernel: Callable[..., Kernel]) -> None:
    kernel = make_kernel(parallel=1, token_delay=0.02)
    running, _ = start_streaming(kernel, max_tokens=100)
    wait_until(lambda: engine_stats(kernel)["running"] == 1)
    queued = kernel.generate(InferenceRequest(prompt="never", max_tokens=3, id="queued-1"))
    assert engine_stats(kernel)["waiting"] == 1
    assert kernel.cancel_request("queued-1", Identity(id="admin", roles=frozenset({"admin"}))) == 1
    assert engine_stats(kernel)["waiting"] == 0
    with pytest.raises(RequestCancelled):
        queued.result()
    running.job.cancel()


def test_cancel_endpoint_for_the_owner_and_admins_only(make_kernel: Callable[..., Kernel]) -> None:
    kernel = make_kernel(parallel=2, token_delay=0.02)
    owner = Identity(id="key-1", roles=frozenset({"write"}))
    other = Identity(id="key-2", roles=frozenset({"write"}))
    _stream, texts = start_streaming(kernel, id="mine", identity=owner)
    wait_until(lambda: len(texts) >= 2)
    with pytest.raises(NotFound):
        kernel.cancel_request("mine", other)  # another key's request looks like no request at all
    with pytest.raises(NotFound):
        kernel.cancel_request("mine", None)
    assert kernel.cancel_request("mine", owner) == 1
    wait_until(lambda: texts[-1:] == ["ERROR RequestCancelled"])
    wait_until(lambda: engine_stats(kernel)["running"] == 0)
    assert len(texts) < 100


def test_cancel_over_http(make_kernel: Callable[..., Kernel]) -> None:
    kernel = make_kernel(parallel=2, token_delay=0.02)
    client: FlaskClient = create_app(kernel=kernel).test_client()
    _stream, texts = start_streaming(kernel, id="http-1")
    wait_until(lambda: len(texts) >= 2)
    response = client.delete("/api/v1/requests/http-1")
    assert response.status_code == 200, response.json
    assert response.json == {"success": True, "request_id": "http-1", "cancelled": 1}
    wait_until(lambda: texts[-1:] == ["ERROR RequestCancelled"])
    missing = client.delete("/api/v1/requests/http-1")
    assert missing.status_code == 404 and missing.json["error"]["code"] == "NOT_FOUND"
    assert client.delete("/api/v1/requests/%00%27;DROP").status_code == 404


def test_stop_drains_then_cancels_with_a_clear_error(make_kernel: Callable[..., Kernel]) -> None:
    kernel = make_kernel(parallel=4, token_delay=0.02)
    _short_stream, short = start_streaming(kernel, prompt="a b c d e", max_tokens=5)
    _long_stream, long = start_streaming(kernel, max_tokens=400)  # 400 tokens of 20 ms: 8 s at the very least
    # 5 s of drain: fifty times what the short stream needs, and less than the long one can possibly take
    drained = kernel.stop(timeout=5.0)
    assert drained is False
    assert "".join(short) == "a b c d e"
    wait_until(lambda: long[-1:] == ["ERROR ServiceUnavailable"])
    assert 0 < len(long) < 400
    with pytest.raises(ServiceUnavailable):
        kernel.generate(InferenceRequest(prompt="after stop"))


def test_engine_settings_are_checked(tmp_path: Path) -> None:
    for bad in ({"parallel": 0}, {"max_queue": -1}, {"queue_timeout": -1.0}):
        with pytest.raises(ConfigurationError):
            make_settings(tmp_path, **bad)


def test_engine_figures_in_model_info(make_kernel: Callable[..., Kernel]) -> None:
    kernel = make_kernel(parallel=3, token_delay=0.0)
    client = create_app(kernel=kernel).test_client()
    kernel.complete(InferenceRequest(prompt="one two three four", max_tokens=4))
    engine = client.get("/api/v1/models/echo").json["model"]["engine"]
    assert engine["max_sequences"] == 3 and engine["running"] == 0 and engine["waiting"] == 0
    assert engine["requests"] == {"submitted": 1, "completed": 1}
    for key in ("time_to_first_token_ms", "queue_time_ms", "token_latency_ms", "step_ms", "tokens_per_second"):
        assert engine[key] is not None and engine[key] >= 0, key


def test_a_backend_that_raises_mid_step_fails_only_its_requests(make_kernel: Callable[..., Kernel]) -> None:
    kernel = make_kernel(parallel=2, token_delay=0.0)
    runner = kernel.registry.engine("echo").runner
    original = runner.step
    calls = {"n": 0}

    def flaky() -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("device lost")
        return original()

    runner.step = flaky  # type: ignore[method-assign]
    from llama_gpu.errors import InferenceFailed

    with pytest.raises(InferenceFailed, match="device lost"):
        kernel.complete(InferenceRequest(prompt="a b c d", max_tokens=4))
    assert kernel.complete(InferenceRequest(prompt="a b c d", max_tokens=4)).text == "a b c d"


def test_an_engine_that_breaks_fails_its_requests_instead_of_hanging(make_kernel: Callable[..., Kernel]) -> None:
    kernel = make_kernel(parallel=2, token_delay=0.0)
    engine = kernel.registry.engine("echo")

    def broken(active: int) -> bool:
        raise RuntimeError("a bug in the runner")

    engine.runner.can_admit = broken  # type: ignore[method-assign]
    from llama_gpu.errors import InferenceFailed

    with pytest.raises(InferenceFailed, match="failed; reload the model"):
        kernel.complete(InferenceRequest(prompt="a b", max_tokens=2))
    with pytest.raises(ServiceUnavailable, match="not accepting requests"):
        kernel.generate(InferenceRequest(prompt="a b", max_tokens=2))
    kernel.unload_model("echo")
    kernel.load_model("echo")
    assert kernel.complete(InferenceRequest(prompt="a b", max_tokens=2)).text == "a b"


def test_a_group_starts_together_at_one_step(make_kernel: Callable[..., Kernel]) -> None:
    """The choices of one request join the engine at the same step: none starts while another is still to come."""
    kernel = make_kernel(parallel=4, token_delay=0.0)
    first = kernel.generate(InferenceRequest(prompt="a b", max_tokens=2, group="g1", group_size=2))
    try:
        # a request of its own runs to the end: the engine had steps in which it could have started the first
        assert kernel.complete(InferenceRequest(prompt="other", max_tokens=1)).text == "other"
        assert engine_stats(kernel)["waiting"] == 1 and engine_stats(kernel)["running"] == 0
        second = kernel.generate(InferenceRequest(prompt="c d", max_tokens=2, group="g1", group_size=2))
        assert "".join(c.text for c in first) == "a b" and "".join(c.text for c in second) == "c d"
    finally:
        first.close()
    # a group larger than the engine can run at once is not held back: it runs member by member
    small = make_kernel(parallel=1, token_delay=0.0)
    big = [InferenceRequest(prompt=f"w{n}", max_tokens=1, group="g2", group_size=3) for n in range(3)]
    streams = [small.generate(r) for r in big[:1]]
    assert "".join(c.text for c in streams[0]) == "w0"
