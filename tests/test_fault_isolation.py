"""A failing plugin is reported, fails only its own request, and is disabled after repeated failures."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest
from flask.testing import FlaskClient

from llama_gpu import Chunk, Event, InferenceRequest, Kernel, hookimpl
from llama_gpu.errors import PluginFailed

from .conftest import Recorder


class Flaky:
    """Raises in process_chunk while ``failing`` is set."""

    def __init__(self) -> None:
        self.failing = True

    @hookimpl
    def process_chunk(self, chunk: Chunk) -> None:
        if self.failing and "boom" in chunk.text:
            raise ZeroDivisionError("flaky filter")


def test_a_raising_filter_fails_its_request_with_a_clear_error(
    client: FlaskClient, kernel: Kernel, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    kernel.register_plugin("flaky", Flaky())
    with caplog.at_level(logging.ERROR):
        response = client.post("/api/v1/infer", json={"text": "go boom now"})
    assert response.status_code == 500
    err = response.json["error"]
    assert err["code"] == "PLUGIN_FAILED"
    assert err["details"] == {"plugin_id": "flaky", "hook": "process_chunk"}
    assert "flaky" in err["message"]
    assert any("plugin flaky failed in process_chunk" in r.getMessage() for r in caplog.records)
    event = recorder.wait_for("plugin_error", plugin_id="flaky")
    assert event.data["hook"] == "process_chunk" and "ZeroDivisionError" in event.data["error"]
    # the kernel and other requests are unaffected
    assert kernel.inflight == 0
    ok = client.post("/api/v1/infer", json={"text": "all quiet"})
    assert ok.status_code == 200 and ok.json["result"]["generated_text"] == "all quiet"
    status = {p["id"]: p for p in client.get("/api/v1/plugins").json["plugins"]}
    assert status["flaky"]["status"] == "loaded"
    assert status["flaky"]["failures"] == 1


def test_repeated_failures_disable_the_plugin(client: FlaskClient, kernel: Kernel, recorder: Recorder) -> None:
    threshold = kernel.settings.plugin_failure_threshold
    plugin = Flaky()
    kernel.register_plugin("flaky", plugin)
    for _ in range(threshold):
        assert client.post("/api/v1/infer", json={"text": "boom"}).status_code == 500
    recorder.wait_for("plugin_disabled", plugin_id="flaky")
    flaky = next(p for p in client.get("/api/v1/plugins").json["plugins"] if p["id"] == "flaky")
    assert flaky["status"] == "disabled"
    assert f"disabled after {threshold} consecutive failures" in flaky["status_detail"]
    assert flaky["hooks"] == []
    response = client.post("/api/v1/infer", json={"text": "boom"})
    assert response.status_code == 200, "the disabled plugin is out of the pipeline"
    # an operator can bring it back once fixed
    plugin.failing = False
    assert client.post("/api/v1/plugins/flaky/load").status_code == 200
    assert client.post("/api/v1/infer", json={"text": "boom"}).status_code == 200


def test_successes_reset_the_consecutive_count(kernel: Kernel) -> None:
    kernel.register_plugin("flaky", Flaky())
    for _ in range(5):
        with pytest.raises(PluginFailed):
            kernel.complete(InferenceRequest(prompt="boom"))
        kernel.complete(InferenceRequest(prompt="fine"))
    record = kernel.plugins.get("flaky")
    assert record.loaded and record.total_failures == 5 and record.failures == 0


def test_failing_prepare_and_response_filters_are_isolated(kernel: Kernel) -> None:
    class Bad:
        @hookimpl
        def prepare_request(self, request: InferenceRequest) -> None:
            if request.prompt == "pre":
                raise KeyError("pre")

        @hookimpl
        def process_response(self, response: Any) -> None:
            if response.text == "post":
                raise ValueError("post")

    kernel.register_plugin("bad", Bad())
    for prompt, hook in (("pre", "prepare_request"), ("post", "process_response")):
        with pytest.raises(PluginFailed) as info:
            kernel.complete(InferenceRequest(prompt=prompt))
        assert info.value.details == {"plugin_id": "bad", "hook": hook}
    assert kernel.inflight == 0
    assert kernel.stats["failed"] == 2


def test_a_failing_subscriber_never_breaks_the_publisher(kernel: Kernel, recorder: Recorder) -> None:
    class Angry:
        @hookimpl
        def on_event(self, event: Event) -> None:
            raise RuntimeError("angry subscriber")

    kernel.register_plugin("angry", Angry())
    for _ in range(2):
        response = kernel.complete(InferenceRequest(prompt="fine"))
        assert response.text == "fine"
    recorder.wait_for("plugin_error", plugin_id="angry", hook="on_event")
    # after the threshold the subscriber is disabled; the others still receive events
    recorder.wait_for("plugin_disabled", plugin_id="angry")
    assert kernel.plugins.get("angry").status == "disabled"
    request = InferenceRequest(prompt="later")
    kernel.complete(request)
    recorder.wait_for("inference_completed", request_id=request.id)


def test_a_slow_subscriber_never_blocks_the_publisher(kernel: Kernel, recorder: Recorder) -> None:
    entered, release = threading.Event(), threading.Event()
    received: list[str] = []

    class Slow:
        @hookimpl
        def on_event(self, event: Event) -> None:
            entered.set()
            release.wait(30)
            received.append(event.type)

    kernel.register_plugin("slow", Slow())
    ids = []
    for n in range(5):
        request = InferenceRequest(prompt=f"request {n}")
        kernel.complete(request)  # publishes two events each, while Slow is stuck on the first
        ids.append(request.id)
    for request_id in ids:
        recorder.wait_for("inference_completed", request_id=request_id)
    assert entered.wait(30), "the slow subscriber never got an event"
    assert received == [], "the slow subscriber is still stuck, yet everything else went on"
    release.set()
    deadline = time.monotonic() + 30  # once released, it catches up on what it missed
    while "inference_completed" not in received:
        assert time.monotonic() < deadline, received
        time.sleep(0.05)


def test_a_full_subscriber_queue_drops_events_for_that_subscriber_only(settings: Any) -> None:
    kernel = Kernel(settings.replace(event_queue_size=2)).start()
    release = threading.Event()

    class Stuck:
        @hookimpl
        def on_event(self) -> None:
            release.wait(10)

    kernel.register_plugin("stuck", Stuck())
    for _ in range(10):
        kernel.complete(InferenceRequest(prompt="x"))
    subscription = next(s for s in kernel.events.subscriptions() if s.name == "plugin:stuck")
    assert subscription.dropped > 0
    release.set()
    kernel.stop()
