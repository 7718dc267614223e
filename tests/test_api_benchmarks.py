"""Benchmark jobs over REST against a live server on 127.0.0.1 (auth required, the echo model).

Each benchmark is real: the job makes its own API key, sends real streamed requests to the
server's own ``/v1`` over HTTP and stores what it measured; a real ``python-socketio`` client
subscribed to the ``benchmarks`` channel receives the job's events.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import socketio
from sqlalchemy import select
from werkzeug.serving import make_server

from llama_gpu import Kernel
from llama_gpu.api import create_app
from llama_gpu.db.models import ApiKey, BenchmarkRun, utcnow

from .conftest import make_settings

pytestmark = pytest.mark.timeout(300)

#: A tiny run: two sweeps of a few short requests each.
TINY = {
    "api_model_name": "echo",
    "traffic_scenario": ["D(20,8)"],
    "num_users": [1, 2],
    "max_requests_per_run": 6,
    "endpoint": "completions",  # the echo model has no chat template
    "max_time_per_run": 30.0,
}


class Live:
    """A kernel (auth required) served on 127.0.0.1 with read, write and admin keys of one user, and another user's."""

    def __init__(self, data: Path) -> None:
        self.server = make_server("127.0.0.1", 0, lambda environ, start: [], threaded=True)
        # the server's configured address is where its self-benchmarks go (never the request's Host)
        port = self.server.server_port
        self.kernel = Kernel(make_settings(data, auth="required", port=port)).start()
        self.server.app = create_app(kernel=self.kernel)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        accounts = self.kernel.services["accounts"]
        owner = accounts.create_user("alice", "correct horse battery", "write")
        other = accounts.create_user("bob", "correct horse battery", "write")
        self.keys = {role: accounts.create_key(f"{role} key", role, user_id=owner.id)[1] for role in ("read", "write")}
        self.keys["admin"] = accounts.create_key("admin key", "admin")[1]
        self.keys["other"] = accounts.create_key("bob's key", "write", user_id=other.id)[1]
        self.db = self.kernel.services["db"]  # kept: a stopped kernel no longer shares it

    def http(self, method: str, path: str, key: str | None = "write", **kw: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.keys[key]}"} if key else {}
        return requests.request(method, self.url + path, headers=headers, timeout=60, **kw)

    def start(self, body: dict[str, Any], key: str = "write") -> int:
        answer = self.http("POST", "/api/v1/benchmarks", key, json=body)
        assert answer.status_code == 202, answer.text
        return int(answer.json()["benchmark_id"])

    def wait_finished(self, job_id: int, timeout: float = 60.0, key: str = "read") -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.http("GET", f"/api/v1/benchmarks/{job_id}/status", key).json()
            if status["status"] in ("completed", "failed", "cancelled"):
                return status
            time.sleep(0.1)
        raise AssertionError(f"benchmark {job_id} did not finish in {timeout}s")

    def row(self, job_id: int) -> BenchmarkRun:
        with self.db.session() as session:
            row = session.get(BenchmarkRun, job_id)
            assert row is not None
            session.expunge(row)
            return row

    def close(self) -> None:
        self.server.shutdown()
        self.thread.join(10)
        self.kernel.stop(timeout=5)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    server = Live(tmp_path_factory.mktemp("benchmarks"))
    try:
        yield server
    finally:
        server.close()


class Listener:
    """A Socket.IO client subscribed to ``benchmarks`` that records the events of one job."""

    def __init__(self, live: Live, key: str = "read") -> None:
        self.client = socketio.Client(reconnection=False)
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.alerts: list[dict[str, Any]] = []
        self.cond = threading.Condition()
        self.client.on("*", self._record)
        self.client.connect(live.url, auth={"token": live.keys[key]}, transports=["websocket"], wait_timeout=10)
        assert self.client.call("subscribe", {"channels": ["benchmarks"]}, timeout=10)["success"] is True

    def _record(self, event: str, data: Any = None) -> None:
        if event.startswith("benchmark."):
            with self.cond:
                self.events.append((event, data))
                self.cond.notify_all()
        elif event == "alert":
            with self.cond:
                self.alerts.append(data)
                self.cond.notify_all()

    def of(self, job_id: int) -> list[tuple[str, dict[str, Any]]]:
        with self.cond:
            return [(e, d) for e, d in self.events if d.get("benchmark_id") == job_id]

    def wait_for(self, job_id: int, event: str, timeout: float = 60.0) -> dict[str, Any]:
        with self.cond:
            self.cond.wait_for(lambda: any(e == event for e, _ in self.of(job_id)), timeout)
        found = [d for e, d in self.of(job_id) if e == event]
        assert found, f"no {event} for benchmark {job_id}: {[e for e, _ in self.of(job_id)]}"
        return found[0]


@pytest.fixture
def listener(live: Live) -> Iterator[Listener]:
    peer = Listener(live)
    yield peer
    peer.client.disconnect()


def test_a_rest_benchmark_runs_to_completion_with_live_progress(live: Live, listener: Listener) -> None:
    bob = Listener(live, "other")  # another user, subscribed to the same channel: hears none of alice's job
    answer = live.http("POST", "/api/v1/benchmarks", json={"config": TINY})
    assert answer.status_code == 202, answer.text
    body = answer.json()
    job_id = body["benchmark_id"]
    assert body["success"] is True and body["benchmark_ids"] == [job_id] and body["status"] == "queued"
    assert body["created_at"].endswith("Z") and body["estimated_completion"] > body["created_at"]

    done = listener.wait_for(job_id, "benchmark.completed")
    names = [e for e, _ in listener.of(job_id)]
    assert names[0] == "benchmark.started" and names[-1] == "benchmark.completed", names
    assert names.count("benchmark.progress") >= 1 and "benchmark.failed" not in names
    assert "caller" not in done and done["model"] == "echo" and done["status"] == "completed"
    assert done["summary"]["requests"] == 12 and done["summary"]["errors"] == 0
    progress = [d for e, d in listener.of(job_id) if e == "benchmark.progress"]
    assert {p["runs_total"] for p in progress} == {2} and max(p["completed"] for p in progress) == 6
    live.kernel.publish("alert", {"probe": job_id})  # the bridge keeps order: all of the job's events are out
    with bob.cond:
        bob.cond.wait_for(lambda: any(a.get("probe") == job_id for a in bob.alerts), 30)
    assert any(a.get("probe") == job_id for a in bob.alerts) and bob.of(job_id) == []
    bob.client.disconnect()

    status = live.wait_finished(job_id)
    assert status["status"] == "completed" and status["error"] is None
    assert status["started_at"] <= status["finished_at"]
    assert "instance" not in (status["progress"] or {}) and "heartbeat" not in (status["progress"] or {})

    results = live.http("GET", f"/api/v1/benchmarks/{job_id}/results", "read").json()["results"]
    assert [(r["num_users"], r["aggregated_metrics"]["completed"]) for r in results["runs"]] == [(1, 6), (2, 6)]
    first = results["runs"][0]["aggregated_metrics"]
    assert first["error_rate"] == 0.0 and first["output_throughput"] > 0 and first["requests_per_minute"] > 0
    assert 0 < first["ttft"]["p50"] <= first["e2e_latency"]["p50"] and first["output_tokens"]["mean"] > 0
    assert len(results["request_metrics"]) == 12 and results["benchmark_info"]["cancelled"] is False
    assert results["benchmark_info"]["api_base"] == live.url + "/v1"

    described = live.http("GET", f"/api/v1/benchmarks/{job_id}", "read").json()["benchmark"]
    assert described["target"] == "self" and described["config"]["num_users"] == [1, 2]
    assert "api_key" not in described["config"] and described["summary"]["requests"] == 12
    listed = live.http("GET", "/api/v1/benchmarks?limit=1", "read").json()
    assert listed["total"] == 1 and listed["benchmarks"][0]["benchmark_id"] == job_id  # newest first

    row = live.row(job_id)
    assert (row.kind, row.status, row.model, row.error) == ("benchmark", "completed", "echo", None)
    assert row.results is not None and row.results["aggregated_metrics"]["requests"] == 12
    assert row.started_at is not None and row.finished_at is not None and row.config["owner"].startswith("user:")
    with live.kernel.services["db"].session() as session:
        key = session.scalar(select(ApiKey).where(ApiKey.name == f"benchmark {job_id}"))
        assert key is not None and key.revoked_at is not None, "the job's own key is revoked when it ends"
        assert key.role == "write" and key.expires_at is not None


def test_the_multi_model_shape_runs_one_job_per_model_on_the_given_prompts(live: Live) -> None:
    body = {
        "name": "prompt check",
        "models": ["echo", "default"],
        "prompts": ["one two three four", "five six seven"],
        "metrics": ["requests", "errors", "output_throughput"],
        "config": {"num_users": [1], "max_requests_per_run": 4, "endpoint": "completions"},
    }
    answer = live.http("POST", "/api/v1/benchmarks", json=body)
    assert answer.status_code == 202, answer.text
    ids = answer.json()["benchmark_ids"]
    assert len(ids) == 2 and answer.json()["benchmark_id"] == ids[0]
    for job_id, model in zip(ids, ("echo", "default"), strict=True):
        assert live.wait_finished(job_id)["status"] == "completed"
        described = live.http("GET", f"/api/v1/benchmarks/{job_id}", "read").json()["benchmark"]
        assert described["name"] == f"prompt check ({model})" and described["model"] == model
        assert set(described["summary"]) == {"requests", "errors", "output_throughput"}
        assert (described["summary"]["requests"], described["summary"]["errors"]) == (4, 0)
        results = live.http("GET", f"/api/v1/benchmarks/{job_id}/results", "read").json()["results"]
        dataset = results["benchmark_info"]["dataset"]
        assert dataset.startswith("prompts-") and dataset.endswith(".jsonl")
        # the echo model says the prompt back: every request used one of the given prompts
        assert {m["input_tokens"] for m in results["request_metrics"]} <= {3, 4}, results["request_metrics"]
    assert not list((Path(live.kernel.settings.data_dir) / "benchmarks").glob("*.jsonl")), "prompt files removed"


def test_a_long_benchmark_is_cancelled(live: Live, listener: Listener) -> None:
    long = {**TINY, "num_users": [1], "max_requests_per_run": None, "max_time_per_run": 120.0}
    job_id = live.start({"config": long})
    listener.wait_for(job_id, "benchmark.progress", timeout=30)
    early = live.http("GET", f"/api/v1/benchmarks/{job_id}/results", "read")
    assert early.status_code == 409 and early.json()["error"]["code"] == "CONFLICT"
    assert live.http("POST", f"/api/v1/benchmarks/{job_id}/cancel", "read").status_code == 403
    started = time.monotonic()
    cancelled = live.http("POST", f"/api/v1/benchmarks/{job_id}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled" and time.monotonic() - started < 10
    failed = listener.wait_for(job_id, "benchmark.failed", timeout=10)
    assert failed["status"] == "cancelled" and "benchmark.completed" not in [e for e, _ in listener.of(job_id)]
    results = live.http("GET", f"/api/v1/benchmarks/{job_id}/results", "read").json()
    assert results["status"] == "cancelled" and results["results"]["benchmark_info"]["cancelled"] is True
    assert results["results"]["aggregated_metrics"]["completed"] >= 1, "what ran before the cancel is kept"
    again = live.http("POST", f"/api/v1/benchmarks/{job_id}/cancel")
    assert again.status_code == 409 and again.json()["error"]["code"] == "CONFLICT"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"config": {**TINY, "output_dir": "/tmp"}}, "output_dir"),
        ({"config": {**TINY, "surprise": 1}}, "surprise"),
        ({"config": {**TINY, "num_users": [0]}}, "num_users"),
        ({"config": {**TINY, "num_users": "2"}}, "num_users"),
        ({"config": {**TINY, "max_time_per_run": "10"}}, "max_time_per_run"),
        ({"config": {**TINY, "traffic_scenario": ["X(1,2)"]}}, "config.traffic_scenario"),
        ({"config": {**TINY, "dataset_name": "/etc/passwd"}}, "dataset_name"),
        ({"config": {**TINY, "api_key": "sk-x"}}, None),
        ({"config": {"num_users": [1]}}, "config.api_model_name"),
        ({"models": ["echo"], "config": TINY}, "models"),
        ({"config": TINY, "prompts": []}, "prompts"),
        ({"config": [1, 2]}, "config"),
    ],
)
def test_bad_input_is_refused_up_front(live: Live, body: dict[str, Any], field: str | None) -> None:
    answer = live.http("POST", "/api/v1/benchmarks", json=body)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["code"] == "INVALID_INPUT"
    if field is not None:
        assert field in str(error["details"]), error


def test_an_unknown_model_another_server_and_overload_are_refused(live: Live) -> None:
    unknown = live.http("POST", "/api/v1/benchmarks", json={"config": {**TINY, "api_model_name": "no-such-model"}})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "MODEL_NOT_FOUND"
    elsewhere = {"config": {**TINY, "api_base": "http://127.0.0.1:9/v1"}}
    assert live.http("POST", "/api/v1/benchmarks", json=elsewhere).status_code == 403  # admin only
    assert live.http("POST", "/api/v1/benchmarks", "read", json={"config": TINY}).status_code == 403
    assert live.http("POST", "/api/v1/benchmarks", None, json={"config": TINY}).status_code == 401
    assert live.http("GET", "/api/v1/benchmarks?limit=0", "read").status_code == 400
    assert live.http("GET", "/api/v1/benchmarks?status=done", "read").status_code == 400
    assert live.http("GET", "/api/v1/benchmarks/999999", "read").status_code == 404

    # an admin may benchmark another server: nothing listens on port 9, the job fails with the reason
    job_id = live.start(elsewhere, "admin")
    status = live.wait_finished(job_id, key="admin")
    assert status["status"] == "failed" and "APIError" in status["error"], status
    assert live.http("GET", f"/api/v1/benchmarks/{job_id}/results", "admin").status_code == 409

    service = live.kernel.services["benchmarks"]
    service.max_queued = 0
    try:
        full = live.http("POST", "/api/v1/benchmarks", json={"config": TINY})
        assert full.status_code == 503 and full.json()["error"]["code"] == "SERVER_OVERLOADED"
        assert int(full.headers["Retry-After"]) > 0
    finally:
        service.max_queued = 16


def test_another_users_benchmarks_are_hidden(live: Live) -> None:
    job_id = live.start({"config": {**TINY, "num_users": [1], "max_requests_per_run": 2}}, "other")
    assert live.wait_finished(job_id, key="other")["status"] == "completed"
    for path in (f"/api/v1/benchmarks/{job_id}", f"/api/v1/benchmarks/{job_id}/status"):
        assert live.http("GET", path, "read").status_code == 404
        assert live.http("GET", path, "other").status_code == 200
        assert live.http("GET", path, "admin").status_code == 200
    assert live.http("POST", f"/api/v1/benchmarks/{job_id}/cancel", "write").status_code == 404
    mine = {b["benchmark_id"] for b in live.http("GET", "/api/v1/benchmarks", "read").json()["benchmarks"]}
    everyone = {b["benchmark_id"] for b in live.http("GET", "/api/v1/benchmarks", "admin").json()["benchmarks"]}
    assert job_id not in mine and job_id in everyone


def test_rows_of_a_dead_process_are_failed_and_a_stopping_server_closes_its_jobs(tmp_path: Path) -> None:
    server = Live(tmp_path)
    try:
        service = server.kernel.services["benchmarks"]
        with server.kernel.services["db"].session() as session:
            stale = {"instance": "gone", "heartbeat": time.time() - 3600}
            fresh = {"instance": "elsewhere", "heartbeat": time.time()}
            rows = [
                BenchmarkRun(name="dead", config={"owner": "x"}, status="running", progress=stale),
                BenchmarkRun(name="alive", config={"owner": "x"}, status="running", progress=fresh),
                BenchmarkRun(name="old", config={"owner": "x"}, status="completed", created_at=utcnow()),
            ]
            session.add_all(rows)
            session.flush()
            dead, alive, old = (r.id for r in rows)
        assert service.recover() == 1
        assert server.row(dead).status == "failed" and "stopped" in (server.row(dead).error or "")
        assert server.row(alive).status == "running" and server.row(old).status == "completed"

        long = {**TINY, "num_users": [1], "max_requests_per_run": None, "max_time_per_run": 120.0}
        running, queued = server.start({"config": long}), server.start({"config": long})
        deadline = time.monotonic() + 30
        while server.row(running).status != "running" or not (server.row(running).progress or {}).get("completed"):
            assert time.monotonic() < deadline, "the job did not start"
            time.sleep(0.1)
        assert server.row(queued).status == "queued"  # one job at a time
    finally:
        started = time.monotonic()
        server.close()
    assert time.monotonic() - started < 20
    closed_running, closed_queued = server.row(running), server.row(queued)
    assert closed_running.status == "cancelled" and closed_running.finished_at is not None
    assert closed_running.results is not None and closed_running.results["benchmark_info"]["cancelled"] is True
    assert closed_queued.status == "cancelled" and closed_queued.results is None


def test_the_benchmark_routes_are_documented(live: Live) -> None:
    paths = live.http("GET", "/api/v1/openapi.json", None).json()["paths"]
    create = paths["/api/v1/benchmarks"]["post"]
    assert "202" in create["responses"] and "200" not in create["responses"]
    assert create["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("BenchmarkCreate")
    assert {p["name"] for p in paths["/api/v1/benchmarks"]["get"]["parameters"]} == {"limit", "offset", "status"}
    for suffix in ("", "/status", "/results", "/cancel"):
        assert f"/api/v1/benchmarks/{{benchmark_id}}{suffix}" in paths
