"""The native inference endpoints beyond /infer: stream_infer, batch_infer and the seed aliases."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from llama_gpu import Kernel, hookimpl
from llama_gpu.api import create_app, infer, schemas, streaming
from llama_gpu.errors import InvalidInput
from llama_gpu.kernel.types import Chunk, InferenceRequest

from .conftest import Recorder

SENTENCE = "the quick brown fox jumps over the lazy dog"
WORDS = SENTENCE.split()


@pytest.fixture
def app(kernel: Kernel) -> Flask:
    """The app with the alias blueprint (registered here until the app factory does it)."""
    application = create_app(kernel=kernel)
    if infer.aliases_bp.name not in application.blueprints:
        application.register_blueprint(infer.aliases_bp)
    return application


def events_of(response: TestResponse) -> list[dict[str, Any]]:
    """The JSON payloads of a Server-Sent Events body."""
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "text/event-stream"
    assert response.headers["X-Accel-Buffering"] == "no"
    text = response.get_data(as_text=True)
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]


def echoed(text: str, max_tokens: int) -> str:
    """What the echo model answers: the first ``max_tokens`` words with their whitespace."""
    words = text.split()[:max_tokens]
    return " ".join(words)


# ---------------------------------------------------------------- stream_infer
def test_stream_infer_streams_every_token_with_positions(client: FlaskClient) -> None:
    events = events_of(client.post("/api/v1/stream_infer", json={"text": SENTENCE, "max_tokens": 5}))
    assert len(events) == 5
    assert [e["position"] for e in events] == [0, 1, 2, 3, 4]
    assert [e["token"] for e in events] == ["the", " quick", " brown", " fox", " jumps"]
    assert all(isinstance(e["token"], str) and isinstance(e["position"], int) for e in events)
    assert [e["is_complete"] for e in events] == [False] * 4 + [True]
    assert all(set(e) == {"token", "position", "is_complete"} for e in events[:-1])
    assert set(events[-1]) == {"token", "position", "is_complete", "final_text"}
    assert events[-1]["final_text"] == "the quick brown fox jumps"
    assert "".join(e["token"] for e in events) == events[-1]["final_text"]


def test_stream_infer_always_streams_and_accepts_the_infer_fields(client: FlaskClient) -> None:
    body = {"text": "a b", "model": "echo", "temperature": 0.1, "top_p": 0.5, "stream": False}
    events = events_of(client.post("/api/v1/stream_infer", json=body))
    assert events == [
        {"token": "a", "position": 0, "is_complete": False},
        {"token": " b", "position": 1, "is_complete": True, "final_text": "a b"},
    ]


def test_infer_with_stream_true_still_streams(client: FlaskClient) -> None:
    events = events_of(client.post("/api/v1/infer", json={"text": "x y", "stream": True}))
    assert [e["token"] for e in events] == ["x", " y"] and events[-1]["final_text"] == "x y"


# ---------------------------------------------------------------- batch_infer
def test_batch_infer_returns_every_result_in_input_order(client: FlaskClient) -> None:
    inputs = [
        {"id": "first", "text": SENTENCE, "max_tokens": 3},
        {"id": "second", "text": "one two", "max_tokens": 50},
        {"id": "third", "text": SENTENCE},
    ]
    response = client.post("/api/v1/batch_infer", json={"inputs": inputs, "model": "echo", "temperature": 0.7})
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.json
    assert set(body) == {"success", "results", "metadata"}
    assert body["success"] is True
    results = body["results"]
    assert [r["id"] for r in results] == ["first", "second", "third"]
    assert [r["generated_text"] for r in results] == ["the quick brown", "one two", SENTENCE]
    assert [r["tokens_generated"] for r in results] == [3, 2, len(WORDS)]
    for result in results:
        assert set(result) == {"id", "generated_text", "tokens_generated", "inference_time"}
        assert isinstance(result["inference_time"], float) and result["inference_time"] >= 0
    meta = body["metadata"]
    assert set(meta) == {"batch_id", "total_processing_time", "items_processed", "backend"}
    assert isinstance(meta["batch_id"], str) and meta["batch_id"].startswith("batch_")
    assert isinstance(meta["total_processing_time"], float) and meta["total_processing_time"] >= 0
    assert meta["items_processed"] == 3
    assert meta["backend"] == "echo"


def test_batch_ids_differ_between_batches(client: FlaskClient) -> None:
    body = {"inputs": [{"id": "a", "text": "x"}]}
    first = client.post("/api/v1/batch_infer", json=body).json["metadata"]["batch_id"]
    assert client.post("/api/v1/batch_infer", json=body).json["metadata"]["batch_id"] != first


def test_batch_larger_than_the_pool_keeps_order(client: FlaskClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(streaming, "MAX_WORKERS", 2)
    inputs = [{"id": f"item-{n}", "text": " ".join(WORDS[n:]), "max_tokens": 2} for n in range(7)]
    results = client.post("/api/v1/batch_infer", json={"inputs": inputs}).json["results"]
    assert [r["id"] for r in results] == [i["id"] for i in inputs]
    assert [r["generated_text"] for r in results] == [echoed(i["text"], 2) for i in inputs]


def test_the_batch_size_limit_is_a_constant(client: FlaskClient, monkeypatch: pytest.MonkeyPatch) -> None:
    assert schemas.MAX_BATCH_ITEMS == 64
    monkeypatch.setattr(schemas, "MAX_BATCH_ITEMS", 2)
    inputs = [{"id": str(n), "text": "x"} for n in range(3)]
    response = client.post("/api/v1/batch_infer", json={"inputs": inputs})
    assert response.status_code == 400
    assert response.json["error"]["details"]["errors"] == {"inputs": ["must hold between 1 and 2 items, got 3"]}
    assert client.post("/api/v1/batch_infer", json={"inputs": inputs[:2]}).status_code == 200


class BarrierProbe:
    """Lets requests through ``prepare_request`` only when ``parties`` are there at once."""

    def __init__(self, kernel: Kernel, parties: int) -> None:
        self.inflight_when_all_arrived: list[int] = []
        self.barrier = threading.Barrier(
            parties, action=lambda: self.inflight_when_all_arrived.append(kernel.inflight), timeout=5
        )

    @hookimpl
    def prepare_request(self, request: InferenceRequest) -> None:
        self.barrier.wait()  # a sequential batch breaks it after 5 s: PLUGIN_FAILED, not 200


@pytest.mark.parametrize(
    ("url", "body"),
    [
        ("/api/v1/batch_infer", {"inputs": [{"id": f"i{n}", "text": SENTENCE} for n in range(4)]}),
        ("/api/v1/batch/generate", {"requests": [{"prompt": SENTENCE} for _ in range(4)]}),
    ],
)
def test_batch_items_run_concurrently(client: FlaskClient, kernel: Kernel, url: str, body: dict[str, Any]) -> None:
    kernel.configure_plugin("echo", {"settings": {"token_delay": 0.05}})
    probe = BarrierProbe(kernel, 4)
    kernel.register_plugin("probe", probe)
    response = client.post(url, json=body)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert probe.inflight_when_all_arrived == [4]
    assert kernel.inflight == 0


class FailsWhenOthersStream:
    """Fails the request whose prompt is ``boom`` once ``others`` requests are mid-stream."""

    def __init__(self, others: int) -> None:
        self.others = others
        self.streaming: set[str] = set()
        self.cond = threading.Condition()

    @hookimpl
    def process_chunk(self, request: InferenceRequest, chunk: Chunk) -> None:
        with self.cond:
            self.streaming.add(request.id)
            self.cond.notify_all()

    @hookimpl
    def prepare_request(self, request: InferenceRequest) -> None:
        if request.prompt == "boom":
            with self.cond:
                assert self.cond.wait_for(lambda: len(self.streaming) >= self.others, timeout=5)
            raise InvalidInput("boom is not allowed", details={"field": "text"})


def test_a_failing_item_fails_the_batch_and_cancels_the_others(
    client: FlaskClient, kernel: Kernel, recorder: Recorder
) -> None:
    kernel.configure_plugin("echo", {"settings": {"token_delay": 0.05}})
    kernel.register_plugin("fails", FailsWhenOthersStream(others=3))
    long_text = " ".join(["word"] * 500)  # 25 s per item unless cancelled
    inputs = [{"id": f"ok{n}", "text": long_text, "max_tokens": 500} for n in range(3)]
    inputs.insert(2, {"id": "bad", "text": "boom"})
    response = client.post("/api/v1/batch_infer", json={"inputs": inputs}, headers={"X-Request-ID": "b1"})
    assert response.status_code == 400
    assert response.json["success"] is False
    assert response.json["error"] == {
        "code": "INVALID_INPUT",
        "message": "boom is not allowed",
        "details": {"field": "text"},
    }
    assert kernel.inflight == 0
    for request_id in ("b1.0", "b1.1", "b1.3"):
        recorder.wait_for("inference_failed", request_id=request_id, reason="cancelled")
    recorder.wait_for("inference_failed", request_id="b1.2", reason="refused", error="INVALID_INPUT")
    assert not [e for e in recorder.events if e.type == "inference_completed"]


@pytest.mark.parametrize(
    ("url", "body", "field"),
    [
        ("/api/v1/batch_infer", {"inputs": [{"id": "a", "text": "ok"}, {"id": "b", "text": "TOO_LONG"}]}, "text"),
        ("/api/v1/batch/generate", {"requests": [{"prompt": "ok"}, {"prompt": "TOO_LONG"}]}, "prompt"),
        ("/api/v1/stream_infer", {"text": "TOO_LONG"}, "text"),
        ("/api/v1/generate", {"prompt": "TOO_LONG"}, "prompt"),
        ("/api/v1/generate", {"prompt": "TOO_LONG", "stream": True}, "prompt"),
        ("/api/v1/generate/stream", {"prompt": "TOO_LONG"}, "prompt"),
    ],
)
def test_input_over_the_limit_is_invalid_input(
    client: FlaskClient, kernel: Kernel, url: str, body: dict[str, Any], field: str
) -> None:
    limit = kernel.settings.max_input_length
    text = json.dumps(body).replace("TOO_LONG", "x" * (limit + 1))
    response = client.post(url, data=text, content_type="application/json")
    assert response.status_code == 400
    assert response.mimetype == "application/json"
    assert response.json["error"]["code"] == "INVALID_INPUT"
    assert response.json["error"]["details"] == {"max_length": limit, "provided_length": limit + 1, "field": field}
    assert kernel.inflight == 0


# ---------------------------------------------------------------- seed aliases
def test_generate_returns_text_usage_and_latency(client: FlaskClient) -> None:
    response = client.post("/api/v1/generate", json={"prompt": SENTENCE, "max_tokens": 4, "temperature": 0})
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.json
    assert set(body) == {"text", "usage", "latency"}
    assert body["text"] == "the quick brown fox"
    assert body["usage"] == {"prompt_tokens": len(WORDS), "completion_tokens": 4, "total_tokens": len(WORDS) + 4}
    assert isinstance(body["latency"], float) and body["latency"] >= 0


def test_generate_defaults(client: FlaskClient) -> None:
    body = client.post("/api/v1/generate", json={"prompt": SENTENCE}).json
    assert body["text"] == SENTENCE and body["usage"]["completion_tokens"] == len(WORDS)


@pytest.mark.parametrize(("url", "extra"), [("/api/v1/generate/stream", {}), ("/api/v1/generate", {"stream": True})])
def test_generate_streams_tokens_then_finished_with_usage(client: FlaskClient, url: str, extra: dict[str, Any]) -> None:
    events = events_of(client.post(url, json={"prompt": SENTENCE, "max_tokens": 3, **extra}))
    assert events[:-1] == [
        {"token": "the", "finished": False},
        {"token": " quick", "finished": False},
        {"token": " brown", "finished": False},
    ]
    assert events[-1] == {
        "token": "",
        "finished": True,
        "usage": {"prompt_tokens": len(WORDS), "completion_tokens": 3, "total_tokens": len(WORDS) + 3},
    }


def test_batch_generate_returns_text_and_usage_in_order(client: FlaskClient) -> None:
    requests = [{"prompt": SENTENCE, "max_tokens": 2}, {"prompt": "hello world"}, {"prompt": "x y z", "max_tokens": 1}]
    response = client.post("/api/v1/batch/generate", json={"requests": requests, "model": "echo", "temperature": 0.0})
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.json
    assert set(body) == {"results"}
    assert [r["text"] for r in body["results"]] == ["the quick", "hello world", "x"]
    for result, request in zip(body["results"], requests, strict=True):
        assert set(result) == {"text", "usage"}
        usage = result["usage"]
        assert usage["prompt_tokens"] == len(request["prompt"].split())
        assert usage["completion_tokens"] == len(result["text"].split())
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        assert all(isinstance(v, int) for v in usage.values())


class Captures:
    """Records every request that reaches ``prepare_request``."""

    def __init__(self) -> None:
        self.requests: list[InferenceRequest] = []

    @hookimpl
    def prepare_request(self, request: InferenceRequest) -> None:
        self.requests.append(request)


@pytest.mark.parametrize(
    ("url", "body", "field"),
    [
        ("/api/v1/stream_infer", {"text": "a", "temperature": 0.5}, "text"),
        ("/api/v1/batch_infer", {"inputs": [{"id": "a", "text": "a"}], "temperature": 0.5}, "text"),
        ("/api/v1/generate", {"prompt": "a", "temperature": 0.5}, "prompt"),
        ("/api/v1/generate/stream", {"prompt": "a", "temperature": 0.5}, "prompt"),
        ("/api/v1/batch/generate", {"requests": [{"prompt": "a"}], "temperature": 0.5}, "prompt"),
    ],
)
def test_requests_reach_the_kernel_as_native_with_their_input_field(
    client: FlaskClient, kernel: Kernel, url: str, body: dict[str, Any], field: str
) -> None:
    captures = Captures()
    kernel.register_plugin("captures", captures)
    response = client.post(url, json=body, headers={"X-Request-ID": "rq"})
    assert response.status_code == 200
    response.get_data()
    (request,) = captures.requests
    assert request.endpoint == "native"
    assert request.metadata["input_field"] == field
    assert request.temperature == 0.5 and request.model == "default"
    assert request.id.startswith("rq")


# ---------------------------------------------------------------- bad input
GOOD: dict[str, dict[str, Any]] = {
    "/api/v1/stream_infer": {"text": "x"},
    "/api/v1/batch_infer": {"inputs": [{"id": "a", "text": "x"}]},
    "/api/v1/generate": {"prompt": "x"},
    "/api/v1/generate/stream": {"prompt": "x"},
    "/api/v1/batch/generate": {"requests": [{"prompt": "x"}]},
}

BAD: list[tuple[str, str, int, str]] = [
    # (url, raw body, status, code)
    *[(url, "{bad json", 400, "INVALID_INPUT") for url in GOOD],
    *[(url, "[1, 2]", 400, "INVALID_INPUT") for url in GOOD],
    *[(url, "", 400, "INVALID_INPUT") for url in GOOD],
    *[(url, "{}", 400, "INVALID_INPUT") for url in GOOD],
    *[(url, json.dumps({**body, "surprise": 1}), 400, "INVALID_INPUT") for url, body in GOOD.items()],
    *[(url, json.dumps({**body, "model": "nope"}), 404, "MODEL_NOT_FOUND") for url, body in GOOD.items()],
    *[(url, json.dumps({**body, "model": 5}), 400, "INVALID_INPUT") for url, body in GOOD.items()],
    *[(url, json.dumps({**body, "temperature": "hot"}), 400, "INVALID_INPUT") for url, body in GOOD.items()],
    *[(url, json.dumps(body)[:-1] + ', "temperature": NaN}', 400, "INVALID_INPUT") for url, body in GOOD.items()],
    *[(url, json.dumps({**body, "temperature": 2.5}), 400, "INVALID_INPUT") for url, body in GOOD.items()],
    ("/api/v1/stream_infer", '{"text": 5}', 400, "INVALID_INPUT"),
    ("/api/v1/stream_infer", '{"text": "x", "temperature": 0}', 400, "INVALID_INPUT"),
    ("/api/v1/stream_infer", '{"text": "x", "max_tokens": "10"}', 400, "INVALID_INPUT"),
    ("/api/v1/stream_infer", '{"text": "x", "max_tokens": 0}', 400, "INVALID_INPUT"),
    ("/api/v1/stream_infer", '{"text": "x", "top_p": 0}', 400, "INVALID_INPUT"),
    ("/api/v1/stream_infer", '{"text": "x", "stream": "yes"}', 400, "INVALID_INPUT"),
    ("/api/v1/stream_infer", '{"text": "x", "stream": 1}', 400, "INVALID_INPUT"),
    ("/api/v1/stream_infer", '{"text": "x", "top_p": "0.5"}', 400, "INVALID_INPUT"),
    ("/api/v1/generate", '{"prompt": "x", "temperature": "0.5"}', 400, "INVALID_INPUT"),
    ("/api/v1/generate", '{"prompt": "x", "temperature": true}', 400, "INVALID_INPUT"),
    ("/api/v1/generate/stream", '{"prompt": "x", "stream": 0}', 400, "INVALID_INPUT"),
    ("/api/v1/batch_infer", '{"inputs": [{"id": "a", "text": "x"}], "temperature": "1"}', 400, "INVALID_INPUT"),
    ("/api/v1/generate", '{"prompt": ["x"]}', 400, "INVALID_INPUT"),
    ("/api/v1/generate", '{"prompt": "x", "max_tokens": true}', 400, "INVALID_INPUT"),
    ("/api/v1/generate", '{"prompt": "x", "max_tokens": 1.5}', 400, "INVALID_INPUT"),
    ("/api/v1/generate", '{"prompt": "x", "max_tokens": 1e400}', 400, "INVALID_INPUT"),
    ("/api/v1/generate", '{"prompt": "x", "temperature": -0.1}', 400, "INVALID_INPUT"),
    ("/api/v1/generate", '{"prompt": "x", "stream": 1}', 400, "INVALID_INPUT"),
    ("/api/v1/generate", '{"text": "x"}', 400, "INVALID_INPUT"),
    ("/api/v1/generate/stream", '{"prompt": null}', 400, "INVALID_INPUT"),
    ("/api/v1/generate", '{"prompt": "x", "max_tokens": 1000000}', 400, "INVALID_INPUT"),
    ("/api/v1/batch_infer", '{"inputs": []}', 400, "INVALID_INPUT"),
    ("/api/v1/batch_infer", '{"inputs": {"id": "a", "text": "x"}}', 400, "INVALID_INPUT"),
    ("/api/v1/batch_infer", '{"inputs": [5]}', 400, "INVALID_INPUT"),
    ("/api/v1/batch_infer", '{"inputs": [null]}', 400, "INVALID_INPUT"),
    ("/api/v1/batch_infer", '{"inputs": [{"text": "x"}]}', 400, "INVALID_INPUT"),
    ("/api/v1/batch_infer", '{"inputs": [{"id": "a"}]}', 400, "INVALID_INPUT"),
    ("/api/v1/batch_infer", '{"inputs": [{"id": "", "text": "x"}]}', 400, "INVALID_INPUT"),
    ("/api/v1/batch_infer", '{"inputs": [{"id": 7, "text": "x"}]}', 400, "INVALID_INPUT"),
    ("/api/v1/batch_infer", json.dumps({"inputs": [{"id": "i" * 129, "text": "x"}]}), 400, "INVALID_INPUT"),
    ("/api/v1/batch_infer", '{"inputs": [{"id": "a", "text": 1}]}', 400, "INVALID_INPUT"),
    ("/api/v1/batch_infer", '{"inputs": [{"id": "a", "text": "x", "max_tokens": 0}]}', 400, "INVALID_INPUT"),
    ("/api/v1/batch_infer", '{"inputs": [{"id": "a", "text": "x", "max_tokens": "5"}]}', 400, "INVALID_INPUT"),
    ("/api/v1/batch_infer", '{"inputs": [{"id": "a", "text": "x", "extra": 1}]}', 400, "INVALID_INPUT"),
    ("/api/v1/batch_infer", '{"inputs": [{"id": "a", "text": "x"}], "top_p": 0.5}', 400, "INVALID_INPUT"),
    ("/api/v1/batch_infer", '{"inputs": [{"id": "a", "text": "x", "max_tokens": 100000}]}', 400, "INVALID_INPUT"),
    (
        "/api/v1/batch_infer",
        json.dumps({"inputs": [{"id": str(n), "text": "x"} for n in range(65)]}),
        400,
        "INVALID_INPUT",
    ),
    ("/api/v1/batch/generate", '{"requests": []}', 400, "INVALID_INPUT"),
    ("/api/v1/batch/generate", '{"requests": "x"}', 400, "INVALID_INPUT"),
    ("/api/v1/batch/generate", '{"requests": [{"prompt": 3}]}', 400, "INVALID_INPUT"),
    ("/api/v1/batch/generate", '{"requests": [{"prompt": "x", "max_tokens": -1}]}', 400, "INVALID_INPUT"),
    ("/api/v1/batch/generate", '{"requests": [{"prompt": "x", "id": "a"}]}', 400, "INVALID_INPUT"),
    ("/api/v1/batch/generate", '{"requests": [{"prompt": "x"}], "temperature": Infinity}', 400, "INVALID_INPUT"),
    ("/api/v1/batch/generate", json.dumps({"requests": [{"prompt": "x"}] * 65}), 400, "INVALID_INPUT"),
]


@pytest.mark.parametrize(("url", "body", "status", "code"), BAD)
def test_bad_input_is_a_clear_4xx_envelope(
    client: FlaskClient, kernel: Kernel, url: str, body: str, status: int, code: str
) -> None:
    response = client.post(url, data=body, content_type="application/json")
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    assert response.json["success"] is False
    assert response.json["error"]["code"] == code
    assert response.json["error"]["message"]
    assert kernel.inflight == 0


@pytest.mark.parametrize("url", list(GOOD))
def test_non_json_content_type_is_415(client: FlaskClient, url: str) -> None:
    response = client.post(url, data=json.dumps(GOOD[url]), content_type="text/plain")
    assert response.status_code == 415
    assert response.json["error"]["code"] == "UNSUPPORTED_MEDIA_TYPE"


@pytest.mark.parametrize("url", list(GOOD))
def test_get_is_405(client: FlaskClient, url: str) -> None:
    assert client.get(url).json["error"]["code"] == "METHOD_NOT_ALLOWED"


@pytest.mark.parametrize(
    ("url", "items"),
    [
        (
            "/api/v1/batch_infer",
            {"inputs": [{"id": "a", "text": "x"}, {"id": "b", "text": "y"}, {"id": "a", "text": "z"}]},
        ),
        ("/api/v1/batch_infer", {"inputs": [{"id": "a", "text": "x"}, {"id": "a", "text": "x"}]}),
    ],
)
def test_duplicate_ids_are_refused_by_name(client: FlaskClient, url: str, items: dict[str, Any]) -> None:
    response = client.post(url, json=items)
    assert response.status_code == 400
    assert response.json["error"]["code"] == "INVALID_INPUT"
    assert response.json["error"]["details"]["errors"] == {
        "inputs": ["ids must be unique within the batch; repeated: a"]
    }


def test_unexpected_errors_in_a_batch_are_a_500_envelope(client: FlaskClient, kernel: Kernel) -> None:
    kernel.registry.acquire = None  # type: ignore[assignment]  # a kernel bug, simulated
    response = client.post("/api/v1/batch_infer", json=GOOD["/api/v1/batch_infer"])
    assert response.status_code == 500
    assert response.json["error"]["code"] == "INTERNAL_ERROR"
    assert kernel.inflight == 0


# ---------------------------------------------------------------- clients that leave
@pytest.mark.parametrize(
    ("url", "body"),
    [
        ("/api/v1/stream_infer", {"text": SENTENCE}),
        ("/api/v1/infer", {"text": SENTENCE, "stream": True}),
        ("/api/v1/generate/stream", {"prompt": SENTENCE}),
        ("/api/v1/generate", {"prompt": SENTENCE, "stream": True}),
    ],
)
def test_a_client_that_stops_reading_cancels_the_generation(
    client: FlaskClient, kernel: Kernel, recorder: Recorder, url: str, body: dict[str, Any]
) -> None:
    response = client.post(url, json=body, buffered=False, headers={"X-Request-ID": "gone"})
    assert response.status_code == 200 and response.mimetype == "text/event-stream"
    first = next(iter(response.response))
    assert json.loads(first[6:])["token"] == "the"
    assert kernel.inflight == 1
    response.close()
    assert kernel.inflight == 0
    event = recorder.wait_for("inference_failed", reason="cancelled")
    assert event.data["request_id"] == "gone"
    assert not [e for e in recorder.events if e.type == "inference_completed"]
