"""The HTTP surface of the foundation: envelope, request ids, health, readiness, infer."""

from __future__ import annotations

import json

import pytest
from flask.testing import FlaskClient

from llama_gpu import Kernel, hookimpl


def test_request_id_is_echoed_or_made(client: FlaskClient) -> None:
    response = client.get("/health", headers={"X-Request-ID": "client-id_42"})
    assert response.headers["X-Request-ID"] == "client-id_42"
    assert response.headers["X-API-Version"] == "1.0"
    made = client.get("/health", headers={"X-Request-ID": "bad id <script>"}).headers["X-Request-ID"]
    assert made.startswith("req_") and len(made) > 10
    err = client.get("/nowhere", headers={"X-Request-ID": "abc"})
    assert err.json["request_id"] == "abc" and err.headers["X-Request-ID"] == "abc"


def test_health_and_ready(client: FlaskClient, kernel: Kernel) -> None:
    body = client.get("/health").json
    assert body["status"] == "healthy"
    assert body["version"] == __import__("llama_gpu").__version__
    for key in ("uptime", "models_loaded", "active_connections", "memory_usage"):
        assert key in body
    assert client.get("/ready").json == {"status": "ready", "default_model": "echo"}
    kernel.unload_plugin("echo")
    response = client.get("/ready")
    assert response.status_code == 503 and "echo" in response.json["reason"]


@pytest.mark.parametrize(
    ("method", "url", "status", "code"),
    [("get", "/nowhere", 404, "NOT_FOUND"), ("get", "/api/v1/infer", 405, "METHOD_NOT_ALLOWED")],
)
def test_http_errors_use_the_envelope(client: FlaskClient, method: str, url: str, status: int, code: str) -> None:
    response = getattr(client, method)(url)
    assert response.status_code == status
    assert response.json["success"] is False and response.json["error"]["code"] == code
    assert response.json["timestamp"].endswith("Z")


def test_infer_returns_the_documented_shape(client: FlaskClient) -> None:
    response = client.post(
        "/api/v1/infer", json={"text": "hello big world", "max_tokens": 2}, headers={"X-Request-ID": "r1"}
    )
    assert response.status_code == 200
    body = response.json
    assert body["success"] is True
    assert set(body["result"]) == {"generated_text", "tokens_generated", "inference_time", "model_used", "backend"}
    assert body["result"]["generated_text"] == "hello big"
    assert body["result"]["tokens_generated"] == 2
    assert body["result"]["model_used"] == "echo" and body["result"]["backend"] == "echo"
    assert set(body["metadata"]) == {"request_id", "timestamp", "processing_time"}
    assert body["metadata"]["request_id"] == "r1"


def test_infer_streams_server_sent_events(client: FlaskClient) -> None:
    response = client.post("/api/v1/infer", json={"text": "a b c", "stream": True})
    assert response.mimetype == "text/event-stream"
    assert response.headers["X-Accel-Buffering"] == "no"
    events = [
        json.loads(line[6:]) for line in response.get_data(as_text=True).splitlines() if line.startswith("data: ")
    ]
    assert [e["token"] for e in events] == ["a", " b", " c"]
    assert [e["position"] for e in events] == [0, 1, 2]
    assert [e["is_complete"] for e in events] == [False, False, True]
    assert events[-1]["final_text"] == "a b c"


def test_a_plugin_failure_mid_stream_is_reported_in_band(client: FlaskClient, kernel: Kernel) -> None:
    class Breaks:
        @hookimpl
        def process_chunk(self, chunk) -> None:  # type: ignore[no-untyped-def]
            if chunk.index == 1:
                raise RuntimeError("mid-stream")

    kernel.register_plugin("breaks", Breaks())
    response = client.post("/api/v1/infer", json={"text": "a b c", "stream": True})
    lines = [json.loads(line[6:]) for line in response.get_data(as_text=True).splitlines() if line.startswith("data: ")]
    assert lines[-1] == {
        "error": {"code": "PLUGIN_FAILED", "message": "plugin 'breaks' failed in process_chunk: RuntimeError"}
    }
    assert kernel.inflight == 0


def test_input_longer_than_the_limit_is_invalid_input(client: FlaskClient, kernel: Kernel) -> None:
    limit = kernel.settings.max_input_length
    response = client.post("/api/v1/infer", json={"text": "x" * (limit + 1)})
    assert response.status_code == 400
    assert response.json["error"]["details"] == {"max_length": limit, "provided_length": limit + 1, "field": "text"}
    client.put("/api/v1/plugins/limits/config", json={"config": {"settings": {"max_input_length": 5}}})
    assert client.post("/api/v1/infer", json={"text": "123456"}).json["error"]["details"]["max_length"] == 5


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        ("{bad json", "application/json", 400, "INVALID_INPUT"),
        ('{"text": "x"}', "text/plain", 415, "UNSUPPORTED_MEDIA_TYPE"),
        ('"just a string"', "application/json", 400, "INVALID_INPUT"),
        ("{}", "application/json", 400, "INVALID_INPUT"),
        ('{"text": 5}', "application/json", 400, "INVALID_INPUT"),
        ('{"text": "x", "temperature": NaN}', "application/json", 400, "INVALID_INPUT"),
        ('{"text": "x", "temperature": Infinity}', "application/json", 400, "INVALID_INPUT"),
        ('{"text": "x", "temperature": 9}', "application/json", 400, "INVALID_INPUT"),
        ('{"text": "x", "max_tokens": -1}', "application/json", 400, "INVALID_INPUT"),
        ('{"text": "x", "max_tokens": 1e400}', "application/json", 400, "INVALID_INPUT"),
        ('{"text": "x", "max_tokens": "10"}', "application/json", 400, "INVALID_INPUT"),
        ('{"text": "x", "stream": "yes"}', "application/json", 400, "INVALID_INPUT"),
        ('{"text": "x", "surprise": 1}', "application/json", 400, "INVALID_INPUT"),
        ('{"text": "x", "model": "nope"}', "application/json", 404, "MODEL_NOT_FOUND"),
    ],
)
def test_bad_infer_input_is_a_clear_4xx(
    client: FlaskClient, body: str, content_type: str, status: int, code: str
) -> None:
    response = client.post("/api/v1/infer", data=body, content_type=content_type)
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.json["error"]["code"] == code
    assert response.json["error"]["message"]


def test_oversized_body_is_413(kernel: Kernel) -> None:
    from llama_gpu.api import create_app

    kernel.settings = kernel.settings.replace(max_body_size=1024)
    client = create_app(kernel=kernel).test_client()
    response = client.post("/api/v1/infer", json={"text": "x" * 5000})
    assert response.status_code == 413
    assert response.json["error"]["code"] == "PAYLOAD_TOO_LARGE"


def test_unexpected_errors_are_a_500_envelope_without_internals(client: FlaskClient, kernel: Kernel) -> None:
    kernel.registry.acquire = None  # type: ignore[assignment]  # a kernel bug, simulated
    response = client.post("/api/v1/infer", json={"text": "x"})
    assert response.status_code == 500
    assert response.json["error"] == {
        "code": "INTERNAL_ERROR",
        "message": "internal server error; see the server log",
        "details": {},
    }
    assert kernel.inflight == 0


def test_openai_stream_cancels_when_the_client_leaves(client: FlaskClient, kernel: Kernel, recorder) -> None:  # type: ignore[no-untyped-def]
    kernel.configure_plugin("echo", {"settings": {"token_delay": 0.02}})
    body = {"model": "echo", "prompt": " ".join(["word"] * 200), "max_tokens": 200, "stream": True}
    response = client.post("/v1/completions", json=body, buffered=False)
    first = next(iter(response.response))
    assert first.startswith(b"data: {")
    response.close()
    assert kernel.inflight == 0
    assert recorder.wait_for("inference_failed", reason="cancelled").data["model"] == "echo"
