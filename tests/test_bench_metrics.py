"""The metric arithmetic: known samples, and a controlled SSE stream with known delays."""

from __future__ import annotations

import itertools
import json
import math
import statistics
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from llama_gpu.bench import APIError, Benchmark, BenchmarkConfig, RequestMetrics
from llama_gpu.bench.dataset import estimate_tokens
from llama_gpu.bench.metrics import aggregate, percentile, stats

pytestmark = pytest.mark.timeout(120)

FIRST_DELAY, STEP, TOKENS = 0.2, 0.05, 5
#: Upper bounds on measured times only catch unit mistakes; a loaded machine may be slow by seconds.
SLACK = 30.0


class StreamServer(ThreadingHTTPServer):
    """Options the handler reads: whether to send usage, a tokenize endpoint, failures, a slow stream."""

    daemon_threads = True
    usage = True
    tokenize = False
    fail_every = 0
    step = STEP
    requests_seen = 0
    bodies: list[dict[str, Any]]


class Handler(BaseHTTPRequestHandler):
    """A tiny OpenAI-compatible server: first chunk after 200 ms, then one every 50 ms, 5 tokens."""

    server: StreamServer

    def log_message(self, *args: Any) -> None:
        pass

    def _json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.headers.get("Authorization") != "Bearer good":
            self._json(
                401, {"error": {"message": "bad key", "type": "authentication_error", "code": "invalid_api_key"}}
            )
            return
        self._json(200, {"object": "list", "data": [{"id": "fake"}]})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.bodies.append(body)
        if self.path == "/api/v1/tokenize":
            if not self.server.tokenize:
                self._json(404, {"error": {"message": "no"}})
            else:
                self._json(200, {"tokens": list(range(len(body["text"].split())))})
            return
        if self.path == "/v1/embeddings":
            time.sleep(0.1)
            self._json(200, {"data": [{"embedding": [0.0]}], "usage": {"prompt_tokens": 7, "total_tokens": 7}})
            return
        self.server.requests_seen += 1
        if self.server.fail_every and self.server.requests_seen % self.server.fail_every == 0:
            self._json(503, {"error": {"message": "busy", "type": "server_error"}})
            return
        chat = self.path == "/v1/chat/completions"
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()

        def send(event: dict[str, Any] | str) -> None:
            data = event if isinstance(event, str) else json.dumps(event)
            self.wfile.write(f"data: {data}\n\n".encode())
            self.wfile.flush()

        try:
            if chat:
                send({"choices": [{"index": 0, "delta": {"role": "assistant"}}]})  # no content: not the first token
            time.sleep(FIRST_DELAY)
            for i in range(TOKENS):
                if i:
                    time.sleep(self.server.step)
                piece = f"word{i} "
                send({"choices": [{"index": 0, "delta": {"content": piece}} if chat else {"index": 0, "text": piece}]})
            send({"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]})
            if self.server.usage:
                send({"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": TOKENS, "total_tokens": 16}})
            send("[DONE]")
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture
def fake() -> Iterator[StreamServer]:
    server = StreamServer(("127.0.0.1", 0), Handler)
    server.bodies = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


def config(server: StreamServer, **kw: Any) -> BenchmarkConfig:
    values: dict[str, Any] = {
        "api_base": f"http://127.0.0.1:{server.server_port}/v1",
        "api_key": "good",
        "api_model_name": "fake",
        "traffic_scenario": ["D(10,5)"],
        "num_users": [1],
        "max_requests_per_run": 3,
        "max_time_per_run": 30,
    }
    values.update(kw)
    return BenchmarkConfig(**values)


# ----------------------------------------------------------------------------- known samples
def test_percentiles_and_stats_of_known_samples() -> None:
    values = [float(v) for v in range(1, 11)]  # 1..10
    assert percentile(values, 50) == pytest.approx(5.5, abs=1e-12)
    assert percentile(values, 90) == pytest.approx(9.1, abs=1e-12)
    assert percentile(values, 95) == pytest.approx(9.55, abs=1e-12)
    assert percentile(values, 99) == pytest.approx(9.91, abs=1e-12)
    s = stats(list(reversed(values)))
    assert (s["mean"], s["min"], s["max"]) == (5.5, 1.0, 10.0)
    assert s["stddev"] == pytest.approx(math.sqrt(8.25), abs=1e-12)  # population stddev, as numpy/vLLM
    assert stats([])["p99"] is None
    assert percentile([3.0], 99) == 3.0


def test_tpot_speed_goodput_and_throughput_arithmetic() -> None:
    fast = RequestMetrics("D(1,5)", input_tokens=10, output_tokens=5, ttft=0.2, e2e_latency=0.6, itl=[0.1] * 4)
    slow = RequestMetrics("D(1,5)", input_tokens=10, output_tokens=5, ttft=0.9, e2e_latency=1.3, itl=[0.1] * 4)
    single = RequestMetrics("D(1,5)", input_tokens=10, output_tokens=1, ttft=0.1, e2e_latency=0.1)
    failed = RequestMetrics("D(1,5)", error_code="503", e2e_latency=0.05)
    assert fast.tpot == pytest.approx(0.1) and fast.output_speed == pytest.approx(10.0)
    assert single.tpot is None and single.output_speed is None
    agg = aggregate([fast, slow, single, failed], duration=2.0, slos={"ttft": 500, "tpot": 150})
    assert (agg["requests"], agg["completed"], agg["errors"]) == (4, 3, 1)
    assert agg["error_rate"] == 0.25 and agg["error_codes"] == {"503": 1}
    assert agg["input_throughput"] == pytest.approx(15.0) and agg["output_throughput"] == pytest.approx(5.5)
    assert agg["total_throughput"] == pytest.approx(20.5)
    assert agg["requests_per_second"] == pytest.approx(1.5) and agg["requests_per_minute"] == pytest.approx(90)
    assert agg["goodput"] == pytest.approx(1.0)  # fast and single meet both SLOs; slow misses ttft
    assert agg["tpot"]["mean"] == pytest.approx(0.1) and agg["itl"]["p50"] == pytest.approx(0.1)
    assert agg["avg_latency"] == pytest.approx(2.0 / 3)
    assert aggregate([fast], 1.0)["goodput"] is None  # no SLO given


# ----------------------------------------------------------------------------- a controlled stream
@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_ttft_tpot_itl_of_a_stream_with_known_delays(fake: StreamServer, endpoint: str) -> None:
    result = Benchmark(config(fake, endpoint=endpoint)).run()
    agg = result.aggregated_metrics
    assert agg["completed"] == 3 and agg["errors"] == 0
    assert agg["output_tokens"]["mean"] == TOKENS and agg["input_tokens"]["mean"] == 11  # the server's usage
    assert result.benchmark_info["token_counting"] == "usage"
    metrics = result.request_metrics
    for metric in metrics:
        # what the server's sleeps guarantee, however busy the machine: the first token no sooner than FIRST_DELAY,
        # the whole stream no sooner than FIRST_DELAY plus a STEP per later token; the upper bound only catches a
        # unit mistake (milliseconds read as seconds), never a slow machine
        assert FIRST_DELAY <= metric["ttft"] < FIRST_DELAY + SLACK
        assert FIRST_DELAY + (TOKENS - 1) * STEP <= metric["e2e_latency"] < FIRST_DELAY + (TOKENS - 1) * STEP + SLACK
        assert len(metric["itl"]) == TOKENS - 1 and min(metric["itl"]) >= 0
        assert metric["ttft"] + sum(metric["itl"]) <= metric["e2e_latency"]  # the gaps lie between first and last
        assert metric["tpot"] == pytest.approx((metric["e2e_latency"] - metric["ttft"]) / (TOKENS - 1))
        assert metric["output_speed"] == pytest.approx(1 / metric["tpot"])
    # the aggregates are made from these requests
    assert agg["ttft"]["mean"] == pytest.approx(statistics.fmean(m["ttft"] for m in metrics))
    assert agg["e2e_latency"]["mean"] == pytest.approx(statistics.fmean(m["e2e_latency"] for m in metrics))
    assert agg["tpot"]["mean"] == pytest.approx(statistics.fmean(m["tpot"] for m in metrics))
    assert agg["itl"]["p50"] == pytest.approx(statistics.median(gap for m in metrics for gap in m["itl"]))
    sent = fake.bodies[-1]
    assert sent["stream"] is True and sent["max_tokens"] == 5 and sent["stream_options"] == {"include_usage": True}
    assert ("messages" in sent) == (endpoint == "chat")


def test_without_usage_tokens_are_estimated_or_tokenized(fake: StreamServer) -> None:
    fake.usage = False
    result = Benchmark(config(fake, max_requests_per_run=1)).run()
    assert result.benchmark_info["token_counting"] == "estimate"
    text = "".join(f"word{i} " for i in range(TOKENS))
    assert result.aggregated_metrics["output_tokens"]["mean"] == estimate_tokens(text) == 8  # 30 characters / 4
    fake.tokenize = True
    result = Benchmark(config(fake, max_requests_per_run=1)).run()
    assert result.benchmark_info["token_counting"] == "tokenize:/api/v1/tokenize"
    assert result.aggregated_metrics["output_tokens"]["mean"] == TOKENS  # the fake tokenizer counts words


def test_errors_are_counted_by_code_and_progress_is_reported(fake: StreamServer) -> None:
    fake.fail_every = 2
    events: list[dict[str, Any]] = []
    result = Benchmark(config(fake, num_users=[2], max_requests_per_run=6), on_progress=events.append).run()
    agg = result.aggregated_metrics
    assert agg["requests"] == 6 and agg["errors"] == 3 and agg["error_codes"] == {"503": 3}
    assert agg["error_rate"] == 0.5
    assert events and events[-1]["completed"] == 3 and events[-1]["errors"] == 3
    assert set(events[-1]) == {
        "run_index", "runs_total", "scenario", "num_users", "completed", "errors", "requests_target", "elapsed",
        "max_time",
    }  # fmt: skip
    assert events[-1]["requests_target"] == 6


def test_cancel_stops_promptly_and_time_bounds_a_run(fake: StreamServer) -> None:
    fake.step = 60.0  # a request would take four minutes: only a cancel or the time bound ends these runs
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    result = Benchmark(config(fake, num_users=[2, 4], max_requests_per_run=None), cancel=cancel).run()
    assert result.benchmark_info["cancelled"] is True and len(result.runs) == 1  # the second run never started
    assert result.aggregated_metrics["completed"] == 0
    result = Benchmark(config(fake, max_requests_per_run=None, max_time_per_run=1.0)).run()
    assert result.benchmark_info["cancelled"] is False and result.aggregated_metrics["completed"] == 0
    assert result.runs[0]["system_metrics"]["aborted_requests"] >= 1


def test_open_loop_poisson_arrivals(fake: StreamServer) -> None:
    result = Benchmark(config(fake, num_users=[4], request_rate=20.0, max_requests_per_run=8)).run()
    assert result.aggregated_metrics["completed"] == 8
    spans = sorted((m["start"], m["start"] + m["e2e_latency"]) for m in result.request_metrics)
    # arrivals come on their own schedule (~8/20 s in all), not one after another: a request arrives while the one
    # before it still streams (each takes at least 0.4 s)
    assert any(later[0] < earlier[1] for earlier, later in itertools.pairwise(spans)), spans
    assert result.system_metrics["open_loop"] is True


def test_embeddings_task(fake: StreamServer) -> None:
    result = Benchmark(config(fake, task="text-to-embeddings", traffic_scenario=["E(20)"])).run()
    agg = result.aggregated_metrics
    assert agg["completed"] == 3 and agg["input_tokens"]["mean"] == 7 and agg["output_tokens"]["mean"] == 0
    assert 0.1 <= agg["e2e_latency"]["mean"] < 0.1 + SLACK  # the fake server answers after 0.1 s
    assert fake.bodies[-1]["input"] and "stream" not in fake.bodies[-1]


def test_a_refused_key_is_an_api_error_with_the_status(fake: StreamServer) -> None:
    with pytest.raises(APIError) as caught:
        Benchmark(config(fake, api_key="wrong")).run()
    assert caught.value.status == 401 and caught.value.code == "invalid_api_key"


def test_an_own_dataset_as_written_or_built_to_size(fake: StreamServer, tmp_path: Path) -> None:
    own = tmp_path / "prompts.jsonl"
    own.write_text('{"prompt": "tell me a story"}\n{"prompt": "tell me a joke"}\n')
    Benchmark(
        config(fake, dataset_name=str(own), traffic_scenario=None, additional_sampling_params={"max_tokens": 9})
    ).run()
    assert {b["messages"][0]["content"] for b in fake.bodies} <= {"tell me a story", "tell me a joke"}
    assert {b["max_tokens"] for b in fake.bodies} == {9}
    fake.bodies.clear()
    Benchmark(config(fake, dataset_name=str(own), traffic_scenario=["D(40,5)"])).run()
    prompt = fake.bodies[0]["messages"][0]["content"]
    assert "tell me a" in prompt and abs(estimate_tokens(prompt) - 40) <= 4
