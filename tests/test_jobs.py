"""Jobs: one ``jobs`` table (migration 0005 moves the old rows), the in-process pool, and RQ workers.

The end-to-end test runs a real ``llama-gpu worker`` subprocess against the real Redis: a server
(auth required, the echo model) that only serves puts benchmark jobs on a queue of the test's own;
the worker runs them (its own API key, real HTTP requests back to the server), its progress and
events reach the server's Socket.IO clients, and a cancel through the server stops the job in
the worker.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import socketio
from alembic import command
from sqlalchemy import inspect, select, text
from werkzeug.serving import make_server

from llama_gpu import Kernel
from llama_gpu.api import create_app
from llama_gpu.db import Database, Job
from llama_gpu.db.migrate import alembic_config
from llama_gpu.db.session import _make_engine
from llama_gpu.jobs import JobChannel, JobContext, JobKind, JobService, Outcome, Submission, channels
from llama_gpu.kernel.errors import Conflict, ServerOverloaded, ServiceUnavailable
from llama_gpu.kernel.types import PluginInfo
from llama_gpu.plugins.monitoring.socketio_bridge import CHANNEL_ROLES, OWNER_CHANNELS, channel_of

from . import db_fixtures
from .conftest import Recorder, make_settings

database_url = db_fixtures.database_url
postgres_url = db_fixtures.postgres_url

pytestmark = pytest.mark.timeout(300)

TINY = {
    "api_model_name": "echo",
    "traffic_scenario": ["D(20,8)"],
    "num_users": [1],
    "max_requests_per_run": 4,
    "endpoint": "completions",
    "max_time_per_run": 30.0,
}


def wait_until(predicate: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> Any:
    """Poll ``predicate`` until it is truthy (fails the test after ``timeout`` s); its value."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"{what} not reached in {timeout} s"
        time.sleep(0.05)
    return value


# ------------------------------------------------------------------ the table and its migration
OLD_ROWS = [
    # id, kind, status, owner, config, results, summary
    (3, "benchmark", "completed", "user:1", {"owner": "user:1"}, {"aggregated_metrics": {"ttft": 0.5}}, {"ttft": 0.5}),
    (7, "conversion", "failed", "user:2", {"owner": "user:2", "quantization": "Q8_0"}, None, None),
    (9, "evaluation", "completed", "api_key:4", {"prompts": 1}, {"results": [], "summary": {}}, None),
]


def test_migration_0005_moves_the_rows_of_benchmark_runs_into_jobs_and_back(database_url: str) -> None:
    if database_url.startswith("sqlite:///"):
        Path(database_url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    config = alembic_config(database_url)
    command.upgrade(config, "0004")
    engine = _make_engine(database_url)
    try:
        insert = text(
            "INSERT INTO benchmark_runs (id, name, kind, status, owner, config, results, summary, created_at)"
            " VALUES (:id, :name, :kind, :status, :owner, :config, :results, :summary, CURRENT_TIMESTAMP)"
        )
        import json

        with engine.begin() as connection:
            for id_, kind, status, owner, conf, results, summary in OLD_ROWS:
                connection.execute(
                    insert,
                    {
                        "id": id_,
                        "name": f"{kind} {id_}",
                        "kind": kind,
                        "status": status,
                        "owner": owner,
                        "config": json.dumps(conf),
                        "results": None if results is None else json.dumps(results),
                        "summary": None if summary is None else json.dumps(summary),
                    },
                )
        command.upgrade(config, "head")
        tables = set(inspect(engine).get_table_names())
        assert "jobs" in tables and "benchmark_runs" not in tables
        database = Database(database_url)
        with database.session() as session:
            moved = {row.id: row for row in session.scalars(select(Job).order_by(Job.id))}
            assert sorted(moved) == [3, 7, 9]
            for id_, kind, status, owner, conf, results, summary in OLD_ROWS:
                row = moved[id_]
                assert (row.kind, row.status, row.owner, row.config, row.results, row.summary) == (
                    kind,
                    status,
                    owner,
                    conf,
                    results,
                    summary,
                )
            new = Job(name="after the move", config={}, kind="benchmark", status="queued")
            session.add(new)
            session.flush()
            assert new.id > 9, "new ids follow the moved rows"
        database.dispose()
        command.downgrade(config, "0004")
        tables = set(inspect(engine).get_table_names())
        assert "benchmark_runs" in tables and "jobs" not in tables
        with engine.connect() as connection:
            back = connection.execute(text("SELECT id, kind, owner FROM benchmark_runs ORDER BY id")).all()
        assert [tuple(r) for r in back[:3]] == [
            (3, "benchmark", "user:1"),
            (7, "conversion", "user:2"),
            (9, "evaluation", "api_key:4"),
        ]
        assert len(back) == 4
    finally:
        engine.dispose()


def test_each_kind_declares_its_channel_and_the_bridge_reads_the_declarations() -> None:
    declared = {c.name: c for c in channels()}
    assert set(declared) == {"benchmarks", "convert", "evaluations"}
    for channel in declared.values():
        assert channel_of(channel.prefix + "started") == channel.name
        assert CHANNEL_ROLES.get(channel.name, "read") == channel.role
        assert (channel.name in OWNER_CHANNELS) == channel.per_owner


class WaitKind(JobKind):
    """A job kind of the test's own (as a third-party plugin would add one): it waits for a gate."""

    name = "wait"
    noun = "wait"
    channel = JobChannel("waits", "wait.")
    events = {f"wait.{what}": what for what in ("started", "progress", "completed", "failed")}
    max_running, max_queued = 1, 2
    gate = threading.Event()

    def execute(self, ctx: JobContext) -> Outcome:
        ctx.report({"step": 1}, force=True)
        while not self.gate.is_set():
            if ctx.cancel.wait(0.01):
                return Outcome("cancelled", error="cancelled", results={"stopped_at": 1})
        return Outcome("completed", results={"value": ctx.config["value"]})

    def describe(self, row: Job) -> dict[str, Any]:
        return {"id": row.id, "status": row.status}


class WaitJobs(JobService):
    KIND = WaitKind
    SERVICE = "waits"
    PLUGIN_INFO = PluginInfo(name="Wait jobs", category="test")


def test_the_embedded_pool_runs_max_running_jobs_at_once_and_cancels_waiting_and_running_ones(tmp_path: Path) -> None:
    """No Redis: a kind's jobs run on the server's bounded pool; events, progress, cancel, capacity."""
    kernel = Kernel(make_settings(tmp_path)).start()
    seen = Recorder()
    kernel.register_plugin("seen", seen)
    kernel.register_plugin("waits", WaitJobs)
    WaitKind.gate.clear()
    try:
        service = kernel.services["waits"]
        assert isinstance(service, WaitJobs) and service.queue is None
        first, second = (service.submit_job(Submission(f"job {v}", {"value": v}), None) for v in (1, 2))
        store = service.store
        wait_until(lambda: (store.get(first.id).progress or {}).get("step") == 1, what="the first job to report")
        assert store.get(first.id).status == "running" and store.get(second.id).status == "queued"
        assert service.collect_metrics() == {"wait_jobs_running": 1.0, "wait_jobs_queued": 1.0}
        third = service.submit_job(Submission("job 3", {"value": 3}), None)
        with pytest.raises(ServerOverloaded):  # max_queued (2) wait already
            service.submit_job(Submission("job 4", {"value": 4}), None)

        taken = service.cancel(third.id, None)  # waiting: taken back from the pool
        assert (taken.status, taken.error, taken.results) == ("cancelled", "cancelled before it started", None)
        stopped = service.cancel(first.id, None)  # running: it stops at its next look at the flag
        assert (stopped.status, stopped.results) == ("cancelled", {"stopped_at": 1})
        with pytest.raises(Conflict):
            service.cancel(first.id, None)
        WaitKind.gate.set()
        wait_until(lambda: store.get(second.id).status == "completed", what="the second job")
        assert store.get(second.id).results == {"value": 2}
        seen.wait_for("wait.completed", timeout=30, job_id=second.id)
        types = [(e.type, e.data.get("job_id"), e.data.get("status")) for e in seen.events]
        assert ("wait.started", first.id, "running") in types and ("wait.progress", first.id, "running") in types
        assert ("wait.failed", first.id, "cancelled") in types and ("wait.failed", third.id, "cancelled") in types
        assert ("wait.completed", second.id, "completed") in types
        assert not any(t[1] == third.id and t[0] != "wait.failed" for t in types), "a job taken back never ran"
    finally:
        WaitKind.gate.set()
        kernel.stop(timeout=5)


def test_an_unreachable_queue_refuses_the_job_with_503_and_leaves_no_queued_row(tmp_path: Path) -> None:
    kernel = Kernel(make_settings(tmp_path, redis_url="redis://127.0.0.1:1/0")).start()  # nothing listens there
    try:
        from llama_gpu.bench import BenchmarkConfig

        service = kernel.services["benchmarks"]
        assert service.queue is not None, "with Redis set, benchmarks go on the queue"
        config = BenchmarkConfig.from_dict({**TINY, "api_base": "http://127.0.0.1:9/v1", "server_info": {}})
        with pytest.raises(ServiceUnavailable) as refused:
            service.submit("unqueued", config, None, self_target=True)
        assert refused.value.retry_after == 30
        row = service.store.get(refused.value.details["benchmark_id"])
        assert row is not None and row.status == "failed" and "could not queue" in (row.error or "")
        assert kernel.services["evaluations"].queue is None, "evaluations always run in the server"
    finally:
        kernel.stop(timeout=5)


# ------------------------------------------------------------------ a real worker over Redis
def redis_url() -> str:
    """The test Redis, or skip (fail when ``LLAMA_GPU_REQUIRE_SERVICES=1``)."""
    url = os.environ.get("LLAMA_GPU_TEST_REDIS_URL", "")
    if not url:
        reason = "LLAMA_GPU_TEST_REDIS_URL is not set (e.g. redis://127.0.0.1:6379/0): the job queue is not tested"
        if os.environ.get("LLAMA_GPU_REQUIRE_SERVICES") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return url


class Server:
    """A kernel (auth required, jobs on the RQ queue ``queue``) served on 127.0.0.1, with a user's write key."""

    def __init__(self, data: Path, redis: str, queue: str) -> None:
        self.httpd = make_server("127.0.0.1", 0, lambda environ, start: [], threaded=True)
        self.settings = make_settings(data, auth="required", port=self.httpd.server_port, redis_url=redis)
        self.kernel = Kernel(self.settings).start()  # LLAMA_GPU_JOBS_QUEUE names the queue
        self.httpd.app = create_app(kernel=self.kernel)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        accounts = self.kernel.services["accounts"]
        user = accounts.create_user("carol", "correct horse battery", "write")
        self.key = accounts.create_key("carol's key", "write", user_id=user.id)[1]

    def http(self, method: str, path: str, **kw: Any) -> requests.Response:
        return requests.request(
            method, self.url + path, headers={"Authorization": f"Bearer {self.key}"}, timeout=60, **kw
        )

    def close(self) -> None:
        self.httpd.shutdown()
        self.thread.join(10)
        self.kernel.stop(timeout=5)


@pytest.fixture
def queue_name() -> Iterator[str]:
    """A queue of this test's own; its RQ keys are deleted afterwards."""
    from redis import Redis
    from rq import Queue

    name = f"llama-gpu-test-{uuid.uuid4().hex[:12]}"
    yield name
    connection = Redis.from_url(redis_url())
    Queue(name, connection=connection).delete(delete_jobs=True)
    connection.close()


def start_worker(data: Path, redis: str, queue: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    """``llama-gpu worker`` with the server's data directory (its database) and Redis."""
    executable = shutil.which("llama-gpu") or str(Path(sys.executable).with_name("llama-gpu"))
    env = {
        **os.environ,
        "LLAMA_GPU_DATA_DIR": str(data / "data"),
        "LLAMA_GPU_REDIS_URL": redis,
        "LLAMA_GPU_JOBS_QUEUE": queue,
        "LLAMA_GPU_AUTH": "required",
        "LLAMA_GPU_RATE_LIMITS": "false",
        "LLAMA_GPU_AUTOLOAD_PLUGINS": "false",
        "LLAMA_GPU_PRELOAD": "false",
        "LLAMA_GPU_HOST": "127.0.0.1",  # the server its self-benchmarks go to
        "LLAMA_GPU_PORT": str(port),
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parent.parent), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.Popen([executable, "worker"], env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)


def stop_worker(worker: subprocess.Popen[bytes]) -> int:
    """SIGTERM (a warm stop: the running job is cancelled), then kill if it lingers; its exit code."""
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
        try:
            return worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            return worker.wait(10)
    return worker.returncode


def test_a_worker_process_runs_queued_jobs_and_a_server_cancels_them(
    tmp_path: Path, queue_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    redis = redis_url()
    monkeypatch.setenv("LLAMA_GPU_JOBS_QUEUE", queue_name)
    server = Server(tmp_path, redis, queue_name)
    log = tmp_path / "worker.log"
    worker = None
    events: list[tuple[str, dict[str, Any]]] = []
    cond = threading.Condition()
    client = socketio.Client(reconnection=False)

    def record(event: str, data: Any = None) -> None:
        if event.startswith("benchmark."):
            with cond:
                events.append((event, data))
                cond.notify_all()

    client.on("*", record)
    try:
        service = server.kernel.services["benchmarks"]
        assert service.queue is not None and service.queue.queue_name == queue_name
        client.connect(server.url, auth={"token": server.key}, transports=["websocket"], wait_timeout=10)
        assert client.call("subscribe", {"channels": ["benchmarks"]}, timeout=10)["success"] is True

        # queued before any worker exists: it waits in Redis, not in the server
        answer = server.http("POST", "/api/v1/benchmarks", json={"config": TINY})
        assert answer.status_code == 202, answer.text
        job_id = answer.json()["benchmark_id"]
        assert server.http("GET", f"/api/v1/benchmarks/{job_id}/status").json()["status"] == "queued"
        assert service.collect_metrics()["benchmark_jobs_queued"] == 0.0, "the server holds no job itself"

        worker = start_worker(tmp_path, redis, queue_name, server.httpd.server_port, log)

        def finished(job: int) -> dict[str, Any] | None:
            status = server.http("GET", f"/api/v1/benchmarks/{job}/status").json()
            assert worker is not None and (worker.poll() is None), log.read_text()
            return status if status["status"] in ("completed", "failed", "cancelled") else None

        status = wait_until(lambda: finished(job_id), 120, "the job to finish in the worker")
        assert status["status"] == "completed", (status, log.read_text())
        results = server.http("GET", f"/api/v1/benchmarks/{job_id}/results").json()["results"]
        assert results["aggregated_metrics"]["completed"] == 4, results["aggregated_metrics"]
        # the worker's events reached the server's Socket.IO client through Redis
        with cond:
            cond.wait_for(
                lambda: any(e == "benchmark.completed" and d["benchmark_id"] == job_id for e, d in events), 30
            )
            names = [e for e, d in events if d.get("benchmark_id") == job_id]
        assert names[0] == "benchmark.started" and names[-1] == "benchmark.completed", names

        # a long job: running in the worker, cancelled through the server
        long = {**TINY, "max_requests_per_run": None, "max_time_per_run": 120.0}
        answer = server.http("POST", "/api/v1/benchmarks", json={"config": long})
        assert answer.status_code == 202, answer.text
        long_id = answer.json()["benchmark_id"]
        wait_until(
            lambda: (server.http("GET", f"/api/v1/benchmarks/{long_id}/status").json().get("progress") or {}).get(
                "completed"
            ),
            60,
            "the long job to make progress in the worker",
        )
        with server.kernel.services["db"].session() as session:
            holder = session.get(Job, long_id).progress["instance"]
        assert holder != service.instance, "the worker runs it, not the server"
        cancelled = server.http("POST", f"/api/v1/benchmarks/{long_id}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled", cancelled.text
        # the worker sees the closed row, stops, and adds what it measured
        wait_until(
            lambda: server.http("GET", f"/api/v1/benchmarks/{long_id}/results").status_code == 200,
            60,
            "the worker to store the cancelled job's results",
        )
        results = server.http("GET", f"/api/v1/benchmarks/{long_id}/results").json()["results"]
        assert results["benchmark_info"]["cancelled"] is True
    finally:
        client.disconnect()
        code = stop_worker(worker) if worker is not None else 0
        server.close()
    assert code == 0, log.read_text()


def test_a_conversion_runs_in_the_worker_and_the_server_registers_its_output(
    tmp_path: Path, queue_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker writes the GGUF into the shared models directory; the server that reads the row adds it."""
    from .test_convert import build_tiny_checkpoint

    redis = redis_url()
    monkeypatch.setenv("LLAMA_GPU_JOBS_QUEUE", queue_name)
    models = tmp_path / "data" / "models"
    build_tiny_checkpoint(models / "tiny-llama", "llama")
    server = Server(tmp_path, redis, queue_name)
    admin = server.kernel.services["accounts"].create_key("admin", "admin")[1]
    log = tmp_path / "worker.log"
    worker = None

    def call(method: str, path: str, **kw: Any) -> requests.Response:
        return requests.request(
            method, server.url + path, headers={"Authorization": f"Bearer {admin}"}, timeout=60, **kw
        )

    try:
        answer = call("POST", "/v1/convert", json={"source_model": "tiny-llama", "quantization": "f32"})
        assert answer.status_code == 202, answer.text
        job_id = answer.json()["job_id"]
        worker = start_worker(tmp_path, redis, queue_name, server.httpd.server_port, log)

        def finished() -> dict[str, Any] | None:
            assert worker is not None and worker.poll() is None, log.read_text()
            info = call("GET", f"/v1/convert/{job_id}").json()
            return info if info["status"] != "processing" else None

        info = wait_until(finished, 180, "the conversion to finish in the worker")
        assert info["status"] == "completed" and info["progress"] == 1.0, (info, log.read_text())
        assert (models / info["output_file"]).is_file()
        listed = {m["id"] for m in call("GET", "/v1/models").json()["data"]}
        assert info["model_id"] in listed, "the server registered the worker's output when it read the row"
        assert server.kernel.services["conversions"].collect_metrics()["conversion_jobs_running"] == 0.0
    finally:
        code = stop_worker(worker) if worker is not None else 0
        server.close()
    assert code == 0, log.read_text()
