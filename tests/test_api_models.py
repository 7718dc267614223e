"""``/api/v1/models``: list, describe, load, unload, with the API document's shapes."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask.testing import FlaskClient

from llama_gpu import Kernel
from llama_gpu.api import create_app
from llama_gpu.api.models import human_bytes, human_params, parse_memory
from llama_gpu.errors import InvalidInput

from .test_models import Catalog, MiB, make_settings


@pytest.fixture
def client(tmp_path: Path) -> FlaskClient:
    kernel = Kernel(make_settings(tmp_path)).start()
    kernel.register_plugin("catalog", Catalog())
    yield create_app(kernel=kernel).test_client()  # type: ignore[misc]
    kernel.stop()


def test_list_models(client: FlaskClient) -> None:
    client.post("/api/v1/models/small/load")
    body = client.get("/api/v1/models").json
    assert body["success"] is True
    assert body["total_models"] == len(body["models"]) and body["loaded_models"] == 1
    small = next(m for m in body["models"] if m["id"] == "small")
    assert set(small) == {"id", "name", "size", "type", "loaded", "backend", "capabilities", "memory_usage"}
    assert small["loaded"] is True and small["memory_usage"] == "10.0MB"
    medium = next(m for m in body["models"] if m["id"] == "medium")
    assert medium["loaded"] is False and medium["estimated_memory"] == "20.0MB"
    qwen = next(m for m in body["models"] if m["id"] == "qwen2.5-coder-0.5b-instruct")
    assert qwen["capabilities"] == ["text-generation", "chat"] and qwen["size"] == "0.6B"


def test_model_info_load_and_unload(client: FlaskClient) -> None:
    response = client.post("/api/v1/models/medium/load", json={"backend": "cpu", "prefer_gpu": False})
    assert response.status_code == 200, response.json
    body = response.json
    assert body["message"] == "Model loaded successfully"
    assert set(body["model"]) == {"id", "loaded", "backend", "memory_usage", "load_time"}
    assert body["model"]["loaded"] is True and body["model"]["memory_usage"] == "20.0MB"
    info = client.get("/api/v1/models/medium").json["model"]
    for key in ("architecture", "parameters", "vocab_size", "context_length", "quantization", "performance"):
        assert key in info
    assert set(info["performance"]) == {"tokens_per_second", "avg_latency", "total_requests"}
    gone = client.delete("/api/v1/models/medium/unload")
    assert gone.json == {"success": True, "message": "Model unloaded successfully", "freed_memory": "20.0MB"}
    again = client.delete("/api/v1/models/medium/unload")
    assert again.status_code == 409 and again.json["error"]["code"] == "MODEL_NOT_LOADED"


@pytest.mark.parametrize(
    ("url", "body", "status", "code"),
    [
        ("/api/v1/models/nope/load", {}, 404, "MODEL_NOT_FOUND"),
        ("/api/v1/models/large/load", {"max_memory": "1MB"}, 503, "INSUFFICIENT_MEMORY"),
        ("/api/v1/models/large/load", {"max_memory": "lots"}, 400, "INVALID_INPUT"),
        ("/api/v1/models/large/load", {"max_memory": True}, 400, "INVALID_INPUT"),
        ("/api/v1/models/large/load", {"backend": "quantum"}, 503, "BACKEND_UNAVAILABLE"),
        ("/api/v1/models/large/load", {"n_ctx": 0}, 400, "INVALID_INPUT"),
        ("/api/v1/models/large/load", {"prefer_gpu": "yes"}, 400, "INVALID_INPUT"),
        ("/api/v1/models/broken/load", {}, 500, "MODEL_LOAD_FAILED"),
    ],
)
def test_load_errors(client: FlaskClient, url: str, body: dict, status: int, code: str) -> None:
    response = client.post(url, json=body)
    assert response.status_code == status, response.json
    assert response.json["error"]["code"] == code
    if code == "INSUFFICIENT_MEMORY":
        assert response.json["error"]["details"] == {"required": 30 * MiB, "available": MiB}


def test_unknown_model_info_is_404_with_the_available_ones(client: FlaskClient) -> None:
    response = client.get("/api/v1/models/gpt-17")
    assert response.status_code == 404 and "small" in response.json["error"]["details"]["available"]


def test_formatting_helpers() -> None:
    assert human_bytes(6979321856) == "6.5GB" and human_bytes(512) == "512B" and human_bytes(None) is None
    assert human_params(6_738_415_616) == "6.7B" and human_params(268_098_176) == "268M"
    assert parse_memory("80%", 1000) == 800 and parse_memory("2KB", 0) == 2048 and parse_memory(5, 0) == 5
    with pytest.raises(InvalidInput):
        parse_memory("eighty", 0)


def test_ready_follows_the_default_model(tmp_path: Path) -> None:
    kernel = Kernel(make_settings(tmp_path, default_model="broken", autoload=False)).start()
    kernel.register_plugin("catalog", Catalog())
    client = create_app(kernel=kernel).test_client()
    try:
        assert client.get("/ready").status_code == 503
        assert "not loaded" in client.get("/ready").json["reason"]
        client.post("/api/v1/models/broken/load")
        response = client.get("/ready")
        assert response.status_code == 503 and "failed to load" in response.json["reason"]
    finally:
        kernel.stop()
