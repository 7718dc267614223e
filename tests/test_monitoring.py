"""Monitoring: status, GPUs, stored series, logs and alerts on a real kernel, app and database."""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from flask.testing import FlaskClient

from llama_gpu import Event, Kernel, Settings
from llama_gpu.api import create_app
from llama_gpu.db import Database
from llama_gpu.errors import ConfigurationError
from llama_gpu.plugins.monitoring.alerts import AlertManager, Rule, parse_rules
from llama_gpu.plugins.monitoring.monitor import RequestWindow
from llama_gpu.plugins.monitoring.samples import SampleStore
from llama_gpu.plugins.monitoring.system import GPUReader

from .conftest import Recorder, make_settings
from .db_fixtures import database_url, postgres_url  # noqa: F401 - fixtures: SQLite and PostgreSQL
from .gpus import nvml_gpu_count
from .test_auth import PASSWORD

INFER = {"text": "one two three", "max_tokens": 3}


def wait_until(check: Callable[[], Any], timeout: float = 10.0, every: float = 0.1) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(every)
    raise AssertionError(f"condition not met within {timeout}s")


class Live:
    """A started kernel sampling fast, its app and client."""

    def __init__(self, tmp_path: Path, **overrides: Any) -> None:
        values = {"metrics_interval": 0.2, "metrics_store_interval": 0.3, **overrides}
        self.kernel = Kernel(make_settings(tmp_path, **values)).start()
        self.app = create_app(kernel=self.kernel)
        self.client: FlaskClient = self.app.test_client()
        self.monitor = self.kernel.services["monitoring"]


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    server = Live(tmp_path)
    yield server
    server.kernel.stop(timeout=5)


def test_status_reports_real_machine_figures_and_request_statistics(tmp_path: Path, database_url: str) -> None:  # noqa: F811
    server = Live(tmp_path, database_url=database_url)
    try:
        client = server.client
        for _ in range(3):
            assert client.post("/api/v1/infer", json=INFER).status_code == 200
        assert client.post("/api/v1/infer", json={**INFER, "model": "no-such-model"}).status_code == 404
        client.put("/api/v1/plugins/echo/config", json={"config": {"settings": {"token_delay": 0.2}}})
        left = client.post("/api/v1/infer", json={**INFER, "stream": True})
        assert next(iter(left.response))  # started…
        left.close()  # …and the client went away: cancelled, not an error

        def settled() -> dict[str, Any] | None:
            body = client.get("/api/v1/system/status").get_json()
            return body if body["statistics"]["total_requests"] == 5 else None

        body = wait_until(settled)  # the request log is written in batches, about every second
        assert body["success"] is True and body["status"] == "healthy" and body["uptime"] > 0
        system = body["system"]
        assert 0.0 <= system["cpu_usage"] <= 100.0 and 0.0 < system["memory_usage"] < 100.0
        assert 0.0 < system["disk_usage"] <= 100.0
        gpus = nvml_gpu_count()  # what the driver says, not what the code under test says
        assert system["gpu_count"] == gpus and len(system["gpu_usage"]) == len(system["gpu_memory"]) == gpus
        assert body["services"] == {
            "inference_engine": "running",
            "plugin_manager": "running",
            "web_dashboard": "running",
            "websocket_server": "running",
        }
        stats = body["statistics"]
        assert stats["source"] == "request_log"
        assert (stats["total_requests"], stats["successful_requests"], stats["failed_requests"]) == (5, 3, 1)
        assert stats["cancelled_requests"] == 1
        assert stats["error_rate"] == 0.2 and stats["requests_per_minute"] == 5
        assert 0 < stats["avg_response_time"] < 5
        assert body["engine"]["models_loaded"] == 1
    finally:
        server.kernel.stop(timeout=5)


def test_status_falls_back_to_process_counters_without_a_database(live: Live) -> None:
    assert live.client.post("/api/v1/infer", json=INFER).status_code == 200
    live.kernel.services["db"] = Database("postgresql+psycopg://nobody@127.0.0.1:1/none")  # refused at once
    stats = live.client.get("/api/v1/system/status").get_json()["statistics"]
    assert stats["source"] == "process" and stats["total_requests"] == 1 and stats["successful_requests"] == 1


def test_sampler_publishes_live_events_on_schedule(live: Live) -> None:
    recorder = Recorder()
    live.kernel.register_plugin("recorder", recorder)
    assert live.client.post("/api/v1/infer", json=INFER).status_code == 200
    wait_until(lambda: sum(e.type == "system_metrics" for e in recorder.events) >= 3, timeout=5)
    samples = [e for e in recorder.events if e.type == "system_metrics"]
    gaps = [b.timestamp - a.timestamp for a, b in itertools.pairwise(samples)]
    assert all(0.1 < gap < 1.5 for gap in gaps), gaps  # every 0.2 s, give or take a busy machine
    sample = samples[-1].data
    assert {"cpu_usage", "memory_usage", "memory_used", "memory_total", "disk_usage", "gpu_count"} <= set(sample)
    assert sample["memory_total"] > sample["memory_used"] > 0
    gpu = recorder.wait_for("gpu_metrics").data
    assert gpu["gpu_count"] == nvml_gpu_count() == len(gpu["gpus"])
    stats = wait_until(
        lambda: next(
            (e.data for e in recorder.events if e.type == "inference_stats" and e.data["requests_per_minute"]), None
        )
    )
    assert stats["requests_per_minute"] == 1 and stats["error_rate"] == 0.0 and stats["avg_latency"] > 0
    assert stats["requests_running"] == 0 and stats["models_loaded"] == 1


class FakeNVML:
    """A stand-in for ``pynvml``: no GPU can run here, so the NVML calls are answered by this fake."""

    NVML_TEMPERATURE_GPU = 0

    class NVMLError(Exception):
        pass

    def __init__(self, gpus: int = 2, fail_power: bool = True) -> None:
        self.gpus, self.fail_power, self.calls = gpus, fail_power, []

    def nvmlInit(self) -> None:
        self.calls.append("init")

    def nvmlShutdown(self) -> None:
        self.calls.append("shutdown")

    def nvmlDeviceGetCount(self) -> int:
        return self.gpus

    def nvmlSystemGetDriverVersion(self) -> bytes:
        return b"550.54.15"

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return 12040

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetName(self, handle: int) -> str:
        return f"NVIDIA H100 #{handle}"

    def nvmlDeviceGetUUID(self, handle: int) -> str:
        return f"GPU-{handle}"

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> Any:
        return SimpleNamespace(total=80 * 2**30, used=(handle + 1) * 10 * 2**30, free=(7 - handle) * 10 * 2**30)

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> Any:
        return SimpleNamespace(gpu=40 + handle, memory=10)

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:
        return 60 + handle

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:
        if self.fail_power and handle == 1:
            raise self.NVMLError("Not Supported")
        return 250_500  # milliwatts

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: int) -> int:
        return 700_000


def test_gpu_endpoint_reports_what_the_driver_sees(live: Live) -> None:
    body = live.client.get("/api/v1/system/gpu").get_json()
    gpus = nvml_gpu_count()
    assert body["success"] is True and body["gpu_count"] == gpus == len(body["gpus"])
    if gpus == 0:
        assert body["nvml_error"]  # says why: no driver, or no device
    else:
        assert [gpu["id"] for gpu in body["gpus"]] == list(range(gpus))


def test_gpu_figures_through_nvml_with_a_fake_driver(live: Live) -> None:
    """A fake NVML (no GPU here): the figures are mapped, units converted, unsupported readings are null."""
    fake = FakeNVML()
    live.monitor.gpus = GPUReader(fake)
    body = live.client.get("/api/v1/system/gpu").get_json()
    assert body["gpu_count"] == 2
    first, second = body["gpus"]
    assert first == {
        "id": 0,
        "name": "NVIDIA H100 #0",
        "uuid": "GPU-0",
        "driver_version": "550.54.15",
        "cuda_version": "12.4",
        "memory_total": 80 * 2**30,
        "memory_used": 10 * 2**30,
        "memory_free": 70 * 2**30,
        "memory_usage": 12.5,
        "utilization": 40,
        "temperature": 60,
        "power_usage": 250.5,
        "power_limit": 700.0,
    }
    assert second["power_usage"] is None and second["utilization"] == 41
    status = live.client.get("/api/v1/system/status").get_json()["system"]
    assert status["gpu_count"] == 2 and status["gpu_usage"] == [40, 41] and status["gpu_memory"] == [12.5, 25.0]
    assert fake.calls == ["init"]  # initialised once, not per reading


def test_a_driver_that_fails_to_initialise_means_no_gpu_without_retrying() -> None:
    class Broken(FakeNVML):
        def nvmlInit(self) -> None:
            self.calls.append("init")
            raise self.NVMLError("Driver Not Loaded")

    fake = Broken()
    reader = GPUReader(fake)
    assert reader.read() == [] and reader.read() == []
    assert fake.calls == ["init"] and "Driver Not Loaded" in (reader.error or "")


def test_stored_series_fill_from_samples(live: Live) -> None:
    for _ in range(4):
        assert live.client.post("/api/v1/infer", json=INFER).status_code == 200

    asked: list[str] = []

    def filled() -> dict[str, Any] | None:
        asked.append(dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M"))  # the minute before the server's answer
        metrics = live.client.get("/api/v1/system/metrics?timeframe=1h&granularity=1m").get_json()["metrics"]
        return metrics if any(v for v in metrics["request_rate"] if v) else None

    metrics = wait_until(filled)
    assert len(metrics["timestamps"]) == 60
    for name in ("request_rate", "response_time", "error_rate", "gpu_utilization", "memory_usage", "cpu_usage"):
        assert len(metrics[name]) == 60
    assert metrics["timestamps"][-1] >= asked[-1]  # the series reaches the minute it was asked in
    assert [v for v in metrics["memory_usage"] if v is not None][-1] > 0
    if nvml_gpu_count() == 0:
        assert all(v is None for v in metrics["gpu_utilization"])  # no GPU: nothing stored, not a fake 0
    body = live.client.get("/api/v1/system/metrics?timeframe=7d&granularity=1h").get_json()
    assert body["timeframe"] == "7d" and len(body["metrics"]["timestamps"]) == 168


@pytest.mark.parametrize(
    "query", ["timeframe=2h", "granularity=10s", "timeframe=", "timeframe=1h&granularity=1m&granularity=x"]
)
def test_series_refuse_bad_queries(live: Live, query: str) -> None:
    response = live.client.get(f"/api/v1/system/metrics?{query}")
    body = response.get_json()
    assert response.status_code == 400 and body["error"]["code"] == "INVALID_INPUT" and body["success"] is False


def test_series_sum_rates_and_average_the_rest_across_instances(tmp_path: Path, database_url: str) -> None:  # noqa: F811
    database = Database(database_url)
    try:
        now = dt.datetime(2026, 12, 2, 10, 30, 30, tzinfo=dt.UTC)
        a, b = SampleStore(database, "host-a:1"), SampleStore(database, "host-b:2")
        minute = dt.datetime(2026, 12, 2, 10, 29, 10, tzinfo=dt.UTC)
        a.store({"request_rate": 2.0, "cpu_usage": 10.0}, minute)
        a.store({"request_rate": 4.0, "cpu_usage": 30.0}, minute + dt.timedelta(seconds=30))
        b.store({"request_rate": 1.0, "cpu_usage": 60.0, "response_time": None}, minute)
        a.store({"request_rate": 9.0}, now - dt.timedelta(hours=2))  # outside the hour
        a.store({"request_rate": float("nan")}, minute)  # not a number: not stored
        series = a.series(3600, 60, now=now)
        assert series["timestamps"][-2:] == ["2026-12-02T10:29:00Z", "2026-12-02T10:30:00Z"]
        assert series["request_rate"][-2:] == [4.0, None]  # mean of a (3.0) + b (1.0)
        assert series["cpu_usage"][-2] == 40.0  # mean of a (20.0) and b (60.0)
        assert series["response_time"][-2] is None
        assert sum(v is not None for v in series["request_rate"]) == 1
        assert a.prune(now - dt.timedelta(hours=1)) == 1
    finally:
        database.dispose()


def test_logs_are_structured_filtered_and_admin_only(tmp_path: Path) -> None:
    kernel = Kernel(make_settings(tmp_path, auth="required")).start()
    try:
        client = create_app(kernel=kernel).test_client()
        accounts = kernel.services["accounts"]
        admin = accounts.create_user("admin", PASSWORD, "admin")
        keys = {role: accounts.create_key(role, role, user_id=admin.id)[1] for role in ("read", "admin")}
        logger = logging.getLogger("llama_gpu.kernel.registry")
        logger.setLevel(logging.DEBUG)
        logger.info("model %s loaded", "m1", extra={"model": "m1", "load_time": 1.5})
        time.sleep(0.01)  # the API's times have millisecond resolution
        logger.warning("something odd")
        time.sleep(0.01)
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("load failed")
        logging.getLogger("llama_gpu.api.models").error("elsewhere")

        def get(query: str, key: str = keys["admin"]) -> Any:
            return client.get(f"/api/v1/system/logs?{query}", headers={"Authorization": f"Bearer {key}"})

        assert client.get("/api/v1/system/logs").status_code == 401
        denied = get("", keys["read"])
        assert denied.status_code == 403 and denied.get_json()["error"]["code"] == "PERMISSION_DENIED"
        body = get("level=DEBUG&limit=1000&component=kernel.registry").get_json()
        messages = [r["message"] for r in body["logs"]]
        assert messages == ["model m1 loaded", "something odd", "load failed"] and body["count"] == 3
        first = body["logs"][0]
        assert first["level"] == "INFO" and first["component"] == "kernel.registry"
        assert first["metadata"] == {"model": "m1", "load_time": 1.5} and first["timestamp"].endswith("Z")
        assert "ValueError: boom" in body["logs"][2]["metadata"]["exception"]
        errors = get("level=ERROR&limit=1000").get_json()["logs"]
        assert {r["message"] for r in errors} >= {"load failed", "elsewhere"}
        assert all(r["level"] in ("ERROR", "CRITICAL") for r in errors)
        assert [r["message"] for r in get("level=DEBUG&limit=1").get_json()["logs"]] == ["elsewhere"]
        since = body["logs"][1]["timestamp"]
        later = get(f"level=DEBUG&component=kernel.registry&since={since}").get_json()["logs"]
        assert [r["message"] for r in later] == ["load failed"]
        for bad in ("level=LOUD", "limit=0", "limit=x", "since=yesterday"):
            response = get(bad)
            assert response.status_code == 400 and response.get_json()["error"]["code"] == "INVALID_INPUT", bad
    finally:
        kernel.stop(timeout=5)


def test_alerts_fire_and_resolve_as_events_and_are_listed(live: Live) -> None:
    recorder = Recorder()
    live.kernel.register_plugin("recorder", recorder)
    rules = [{"name": "busy", "metric": "latency_avg", "op": ">", "threshold": 0.0, "severity": "critical"}]
    response = live.client.put(
        "/api/v1/plugins/monitoring/config", json={"config": {"settings": {"alert_rules": rules}}}
    )
    assert response.status_code == 200, response.get_json()
    assert live.client.post("/api/v1/infer", json=INFER).status_code == 200
    fired = recorder.wait_for("alert", state="firing", rule="busy").data
    assert fired["severity"] == "critical" and fired["value"] > 0 and fired["threshold"] == 0.0
    body = live.client.get("/api/v1/monitoring/alerts").get_json()
    assert [a["rule"] for a in body["alerts"]] == ["busy"] and body["rules"][0]["metric"] == "latency_avg"
    assert live.client.get("/api/v1/system/status").get_json()["status"] == "degraded"
    rules[0]["threshold"] = 1000.0  # a changed rule resolves the alert of the old one
    live.client.put("/api/v1/plugins/monitoring/config", json={"config": {"settings": {"alert_rules": rules}}})
    resolved = recorder.wait_for("alert", state="resolved", rule="busy").data
    assert resolved["id"] == fired["id"] and resolved["resolved_at"] >= fired["started_at"]
    assert live.client.get("/api/v1/monitoring/alerts").get_json()["alerts"] == []
    assert live.client.get("/api/v1/system/status").get_json()["status"] == "healthy"


@pytest.mark.parametrize(
    "settings",
    [
        {"alert_rules": "no"},
        {"alert_rules": [{"name": "x", "metric": "moon_phase", "threshold": 1}]},
        {"alert_rules": [{"name": "x", "metric": "cpu_usage", "op": "!=", "threshold": 1}]},
        {"alert_rules": [{"name": "x", "metric": "cpu_usage", "threshold": "high"}]},
        {"alert_rules": [{"name": "x", "metric": "cpu_usage", "threshold": 1, "severity": "doom"}]},
        {"alert_rules": [{"name": "x", "metric": "cpu_usage", "threshold": 1, "colour": "red"}]},
        {"alert_rules": [{"name": "x", "metric": "cpu_usage", "threshold": 1}] * 2},
        {"log_capacity": 5},
    ],
)
def test_bad_monitoring_settings_are_refused_and_change_nothing(live: Live, settings: dict[str, Any]) -> None:
    before = live.client.get("/api/v1/monitoring/alerts").get_json()["rules"]
    response = live.client.put("/api/v1/plugins/monitoring/config", json={"config": {"settings": settings}})
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "INVALID_INPUT"
    assert live.client.get("/api/v1/monitoring/alerts").get_json()["rules"] == before


def test_alert_manager_skips_missing_metrics_and_resolves_once() -> None:
    manager = AlertManager(parse_rules([{"name": "q", "metric": "queue_depth", "op": ">=", "threshold": 5}]))
    assert manager.evaluate({"queue_depth": None}) == []
    assert [c["state"] for c in manager.evaluate({"queue_depth": 7})] == ["firing"]
    assert manager.evaluate({"queue_depth": 9}) == [] and manager.active()[0]["value"] == 9
    assert manager.evaluate({}) == [] and len(manager.active()) == 1
    assert [c["state"] for c in manager.evaluate({"queue_depth": 1})] == ["resolved"]
    assert manager.evaluate({"queue_depth": 1}) == [] and manager.active() == []
    assert Rule.parse({"name": "a", "metric": "cpu_usage", "threshold": 3}).op == ">"


def test_monitoring_endpoints_answer_503_when_the_plugin_is_unloaded(live: Live) -> None:
    assert live.client.delete("/api/v1/plugins/monitoring/unload").status_code == 200
    for path in ("/api/v1/system/status", "/api/v1/system/gpu", "/api/v1/monitoring/alerts"):
        response = live.client.get(path)
        assert response.status_code == 503 and response.get_json()["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert live.client.post("/api/v1/plugins/monitoring/load", json={}).status_code == 200
    assert live.client.get("/api/v1/system/status").status_code == 200


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        ("LLAMA_GPU_METRICS_INTERVAL", "0"),
        ("LLAMA_GPU_METRICS_STORE_INTERVAL", "-5"),
        ("LLAMA_GPU_METRICS_INTERVAL", "often"),
    ],
)
def test_bad_sampling_settings_fail_at_start_up_naming_the_variable(variable: str, raw: str) -> None:
    with pytest.raises(ConfigurationError, match=variable):
        Settings.from_env({variable: raw})


def test_the_request_window_counts_cancellations_in_rates_but_not_as_errors() -> None:
    window = RequestWindow(keep=60)
    now = time.time()
    events = [
        ("inference_completed", {"latency": 0.5, "tokens_generated": 4}),
        ("inference_completed", {"latency": 1.5, "tokens_generated": 6}),
        ("inference_failed", {"reason": "cancelled", "status": 499, "tokens_generated": 2}),
        ("inference_failed", {"reason": "error", "status": 500, "error": "INFERENCE_FAILED"}),
        ("model_status", {"status": "loaded"}),  # not a request
    ]
    for type_, data in events:
        window.add(Event(type=type_, data=data, timestamp=now))
    window.add(Event(type="inference_completed", data={"latency": 9.0}, timestamp=now - 120))  # too old
    summary = window.summary(60, now)
    assert summary["requests"] == 4 and summary["failed"] == 1 and summary["tokens"] == 12
    assert summary["error_rate"] == 0.25 and summary["server_error_rate"] == 0.25
    assert summary["avg_latency"] == 1.0 and summary["p95_latency"] == 1.5
    assert summary["requests_per_second"] == round(4 / 60, 4)


def test_model_and_plugin_changes_are_in_the_logs(tmp_path: Path) -> None:
    root, package = logging.getLogger(), logging.getLogger("llama_gpu")
    saved = root.level, package.level
    # a host program (or a test runner) may leave the root logger at WARNING: the package follows LLAMA_GPU_LOG_LEVEL
    root.setLevel(logging.WARNING)
    package.setLevel(logging.NOTSET)
    live = Live(tmp_path, log_level="INFO")
    try:
        assert live.client.post("/api/v1/models/echo/load", json={}).status_code == 200
        assert live.client.delete("/api/v1/plugins/limits/unload").status_code == 200
        logs = live.client.get("/api/v1/system/logs?level=INFO&limit=5000").get_json()["logs"]
        loaded = next(r for r in logs if r["message"] == "model echo loaded")
        assert loaded["component"] == "kernel.registry" and loaded["metadata"]["model"] == "echo"
        assert loaded["metadata"]["details"]["backend"] == "echo" and "load_time" in loaded["metadata"]["details"]
        unloaded = next(r for r in logs if r["message"] == "plugin limits unloaded")
        assert unloaded["metadata"] == {"plugin_id": "limits"} and unloaded["component"] == "kernel.kernel"
    finally:
        live.kernel.stop(timeout=5)
        root.setLevel(saved[0])
        package.setLevel(saved[1])
