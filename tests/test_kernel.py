"""Kernel lifecycle, draining, cancellation and the echo backend."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from llama_gpu import InferenceRequest, Kernel, KernelState, Settings
from llama_gpu.errors import ConfigurationError, ModelNotFound, ServiceUnavailable

from .conftest import Recorder


def test_lifecycle_states(settings: Settings) -> None:
    kernel = Kernel(settings)
    assert kernel.state is KernelState.CREATED
    with pytest.raises(ServiceUnavailable):
        kernel.generate(InferenceRequest(prompt="too early"))
    kernel.start()
    assert kernel.state is KernelState.STARTED
    with pytest.raises(ConfigurationError):
        kernel.start()
    assert kernel.stop() is True
    assert kernel.state is KernelState.STOPPED
    with pytest.raises(ServiceUnavailable) as info:
        kernel.generate(InferenceRequest(prompt="too late"))
    assert info.value.status == 503 and info.value.retry_after


def test_stop_drains_running_requests_and_refuses_new_ones(kernel: Kernel) -> None:
    kernel.configure_plugin("echo", {"settings": {"token_delay": 0.05}})
    stream = kernel.generate(InferenceRequest(prompt="a b c d e f g h"))
    chunks = iter(stream)
    first = next(chunks)
    assert first.text == "a"
    stopped: dict[str, Any] = {}
    stopper = threading.Thread(target=lambda: stopped.setdefault("drained", kernel.stop(timeout=10)))
    stopper.start()
    deadline = time.monotonic() + 5
    while kernel.state is not KernelState.DRAINING and time.monotonic() < deadline:
        time.sleep(0.01)
    assert kernel.state is KernelState.DRAINING
    with pytest.raises(ServiceUnavailable, match="draining"):
        kernel.generate(InferenceRequest(prompt="new"))
    rest = [c.text for c in chunks]
    assert "".join([first.text, *rest]) == "a b c d e f g h", "the running request finished"
    stopper.join(10)
    assert stopped == {"drained": True}
    assert kernel.state is KernelState.STOPPED


def test_stop_gives_up_after_the_drain_timeout(kernel: Kernel) -> None:
    stream = kernel.generate(InferenceRequest(prompt="never consumed"))
    assert kernel.inflight == 1
    assert kernel.stop(timeout=0.1) is False
    assert kernel.state is KernelState.STOPPED
    stream.close()
    assert kernel.inflight == 0


def test_cancelling_a_stream_releases_the_request(kernel: Kernel, recorder: Recorder) -> None:
    kernel.configure_plugin("echo", {"settings": {"token_delay": 0.01}})
    request = InferenceRequest(prompt=" ".join(f"w{n}" for n in range(200)))
    stream = kernel.generate(request)
    taken = [chunk.text for _, chunk in zip(range(3), stream, strict=False)]
    assert taken == ["w0", " w1", " w2"]
    stream.close()
    stream.close()  # idempotent
    assert kernel.inflight == 0
    event = recorder.wait_for("inference_failed", request_id=request.id)
    assert event.data["reason"] == "cancelled"
    unstarted = kernel.generate(InferenceRequest(prompt="x"))
    unstarted.close()
    assert kernel.inflight == 0


def test_unknown_model_lists_the_available_ones(kernel: Kernel, recorder: Recorder) -> None:
    request = InferenceRequest(prompt="x", model="gpt-17")
    with pytest.raises(ModelNotFound) as info:
        kernel.generate(request)
    assert info.value.details["model"] == "gpt-17"
    assert {"echo", "qwen2.5-coder-0.5b-instruct", "gemma-3-270m"} <= set(info.value.details["available"])
    assert kernel.inflight == 0
    assert recorder.wait_for("inference_failed", request_id=request.id).data["error"] == "MODEL_NOT_FOUND"


def test_echo_is_deterministic_and_respects_max_tokens(kernel: Kernel) -> None:
    prompt = "  The quick\tbrown fox  "
    first = kernel.complete(InferenceRequest(prompt=prompt, temperature=1.7, seed=1))
    second = kernel.complete(InferenceRequest(prompt=prompt, temperature=0.2, seed=2))
    assert first.text == second.text == "  The quick\tbrown fox"
    assert first.finish_reason == "stop" and first.completion_tokens == 4 and first.prompt_tokens == 4
    short = kernel.complete(InferenceRequest(prompt=prompt, max_tokens=2))
    assert (short.text, short.finish_reason) == ("  The quick", "length")
    assert kernel.complete(InferenceRequest(prompt="")).text == ""
    kernel.configure_plugin("echo", {"settings": {"mode": "reverse"}})
    assert kernel.complete(InferenceRequest(prompt="one two three")).text == "three two one"


def test_concurrent_requests_all_complete(kernel: Kernel) -> None:
    results: dict[int, str] = {}

    def run(n: int) -> None:
        results[n] = kernel.complete(InferenceRequest(prompt=f"request number {n}")).text

    threads = [threading.Thread(target=run, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == {n: f"request number {n}" for n in range(16)}
    assert kernel.stats["requests"] == 16 and kernel.inflight == 0
