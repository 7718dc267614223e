"""The counter backend, tested with the fixtures of ``llama_gpu.testing`` (the ``pytest11`` plugin)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask.testing import FlaskClient
from llama_gpu_counter import CounterPlugin


@pytest.fixture
def llama_gpu_plugins() -> dict[str, object]:
    return {"counter": CounterPlugin()}


def test_counts_on_from_the_prompt(llama_gpu_client: FlaskClient, llama_gpu_headers: Callable[..., dict]) -> None:
    body = {"text": "count from 7", "model": "counter", "max_tokens": 3}
    reply = llama_gpu_client.post("/api/v1/infer", json=body, headers=llama_gpu_headers("write"))
    assert reply.status_code == 200, reply.json
    assert reply.json["result"]["generated_text"] == " 8 9 10"
    assert reply.json["result"]["backend"] == "counter"


def test_streams_and_lists_its_model(llama_gpu_client: FlaskClient, llama_gpu_headers: Callable[..., dict]) -> None:
    body = {"text": "41", "model": "counter", "max_tokens": 2}
    stream = llama_gpu_client.post("/api/v1/stream_infer", json=body, headers=llama_gpu_headers("write"))
    assert '"final_text": " 42 43"' in stream.get_data(as_text=True)
    models = llama_gpu_client.get("/v1/models", headers=llama_gpu_headers("read")).json["data"]
    assert "counter" in [m["id"] for m in models]


def test_a_read_key_may_not_generate(llama_gpu_client: FlaskClient, llama_gpu_headers: Callable[..., dict]) -> None:
    body = {"text": "1", "model": "counter"}
    assert llama_gpu_client.post("/api/v1/infer", json=body, headers=llama_gpu_headers("read")).status_code == 403
    assert llama_gpu_client.post("/api/v1/infer", json=body).status_code == 401
