"""Run a benchmark: one run per (traffic scenario, number of users), closed or open loop."""

from __future__ import annotations

import itertools
import json
import logging
import queue
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
import requests

from .. import __version__
from .client import OpenAIClient
from .config import BenchmarkConfig
from .dataset import Dataset, load_dataset
from .errors import BenchmarkError, ConfigurationError
from .metrics import RequestMetrics, aggregate
from .scenarios import Scenario

if TYPE_CHECKING:
    from ..kernel.kernel import Kernel

log = logging.getLogger(__name__)
METADATA_FILE = "experiment_metadata.json"
PROGRESS_INTERVAL = 0.5
ABORT_GRACE = 2.0

ProgressCallback = Callable[[dict[str, Any]], None]
MetricFn = Callable[[list[RequestMetrics]], "float | None"]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_") or "run"


@dataclass
class BenchmarkResult:
    """What a benchmark measured: the runs, and the figures of the whole (see :meth:`to_dict`)."""

    benchmark_info: dict[str, Any]
    runs: list[dict[str, Any]] = field(default_factory=list)
    experiment_dir: str | None = None

    @property
    def request_metrics(self) -> list[dict[str, Any]]:
        """Every request of every run."""
        return [m for run in self.runs for m in run["request_metrics"]]

    @property
    def aggregated_metrics(self) -> dict[str, Any]:
        """The single run's aggregates, or those of all runs together (over the sum of their durations)."""
        if len(self.runs) == 1:
            return self.runs[0]["aggregated_metrics"]
        return self.benchmark_info.get("overall", {})

    @property
    def system_metrics(self) -> dict[str, Any]:
        """The benchmarking client's own figures (CPU, memory) at the end."""
        return self.runs[-1]["system_metrics"] if self.runs else {}

    @property
    def cancelled(self) -> bool:
        """Whether the cancel event stopped the benchmark."""
        return bool(self.benchmark_info.get("cancelled"))

    def to_dict(self) -> dict[str, Any]:
        """The JSON-safe result of the public contract."""
        return {
            "benchmark_info": self.benchmark_info,
            "runs": self.runs,
            "request_metrics": self.request_metrics,
            "aggregated_metrics": self.aggregated_metrics,
            "system_metrics": self.system_metrics,
        }


class Benchmark:
    """A benchmark of one OpenAI-compatible server; :meth:`run` does every run of the sweep."""

    def __init__(
        self,
        config: BenchmarkConfig | dict[str, Any],
        on_progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
        kernel: Kernel | None = None,
    ) -> None:
        if isinstance(config, dict):
            config = BenchmarkConfig.from_dict(config)
        if not isinstance(config, BenchmarkConfig):
            raise ConfigurationError("config", "must be a BenchmarkConfig or a mapping")
        config.validate()
        self.config = config
        self.dataset: Dataset = load_dataset(config.dataset_name)
        self.on_progress = on_progress
        self.cancel = cancel if cancel is not None else threading.Event()
        self.custom: dict[str, MetricFn] = kernel.benchmark_metrics() if kernel is not None else {}

    # ------------------------------------------------------------------ the sweep
    def run(self) -> BenchmarkResult:
        """Every (scenario, users) run; raises :class:`~llama_gpu.bench.errors.APIError` if the server refuses."""
        cfg = self.config
        client = OpenAIClient(cfg)
        server = client.check()
        started = datetime.now(UTC)
        plan = list(itertools.product(cfg.scenarios, cfg.num_users))
        info: dict[str, Any] = {
            "llama_gpu_version": __version__,
            "model": cfg.api_model_name,
            "api_base": cfg.api_base,
            "task": cfg.task,
            "dataset": self.dataset.name,
            "config": cfg.to_dict(redact_key=True),
            "server": {**server, **cfg.server_info},
            "started_at": started.isoformat(),
            "runs_total": len(plan),
            "cancelled": False,
        }
        folder = self._experiment_dir(started)
        result = BenchmarkResult(info, experiment_dir=str(folder) if folder else None)
        files: list[str] = []
        all_metrics: list[RequestMetrics] = []
        for index, (scenario, users) in enumerate(plan):
            if self.cancel.is_set():
                break
            run = self._run_one(client, index, len(plan), scenario, users)
            all_metrics.extend(run.pop("_raw"))
            result.runs.append(run)
            if folder is not None:
                name = f"run_{index:02d}_{_slug(scenario.text)}_users{users}.json"
                self._write(folder / name, {"benchmark_info": info, **run})
                files.append(name)
        finished = datetime.now(UTC)
        info.update(
            cancelled=self.cancel.is_set(),
            finished_at=finished.isoformat(),
            duration=(finished - started).total_seconds(),
            token_counting=self._token_counting(all_metrics),
            experiment_dir=result.experiment_dir,
            overall=aggregate(
                all_metrics, sum(r["aggregated_metrics"]["duration"] for r in result.runs), cfg.goodput, self._custom()
            ),
        )
        if folder is not None:
            self._write(folder / METADATA_FILE, {"benchmark_info": info, "runs": files})
        return result

    def _token_counting(self, metrics: list[RequestMetrics]) -> str:
        sources = sorted({m.token_source for m in metrics if m.ok})
        return sources[0] if len(sources) == 1 else ("mixed: " + ", ".join(sources) if sources else "none")

    def _custom(self) -> dict[str, MetricFn]:
        def guarded(name: str, fn: MetricFn) -> MetricFn:
            def call(metrics: list[RequestMetrics]) -> float | None:
                try:
                    value = fn(metrics)
                    return None if value is None else float(value)
                except Exception:
                    log.exception("benchmark metric %r failed", name)
                    return None

            return call

        return {name: guarded(name, fn) for name, fn in self.custom.items()}

    def _experiment_dir(self, started: datetime) -> Path | None:
        if self.config.output_dir is None:
            return None
        name = self.config.experiment_name or "_".join(
            (started.strftime("%Y%m%dT%H%M%S"), _slug(self.config.api_model_name), self.config.task)
        )
        folder = Path(self.config.output_dir) / name
        try:
            folder.mkdir(parents=True, exist_ok=False)
        except FileExistsError as exc:
            raise BenchmarkError(f"experiment folder {folder} exists already") from exc
        except OSError as exc:
            raise BenchmarkError(f"cannot create the experiment folder {folder}: {exc}") from exc
        return folder

    @staticmethod
    def _write(path: Path, data: dict[str, Any]) -> None:
        try:
            path.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
        except OSError as exc:
            raise BenchmarkError(f"cannot write {path}: {exc}") from exc

    # ------------------------------------------------------------------ one run
    def _run_one(self, client: OpenAIClient, index: int, total: int, scenario: Scenario, users: int) -> dict[str, Any]:
        cfg = self.config
        rng = random.Random(cfg.seed + index)
        stop = threading.Event()
        lock = threading.Lock()
        metrics: list[RequestMetrics] = []
        claimed = [0]
        aborted = [0]
        started = time.perf_counter()
        deadline = started + cfg.max_time_per_run

        def next_request() -> tuple[str, int | None] | None:
            with lock:
                if stop.is_set() or (cfg.max_requests_per_run is not None and claimed[0] >= cfg.max_requests_per_run):
                    return None
                claimed[0] += 1
                n_in, n_out = scenario.sample(rng)
                prompt = self.dataset.pick(rng) if n_in is None else self.dataset.build(n_in, rng)
                if n_out is None and scenario.kind != "E":
                    n_out = cfg.additional_sampling_params.get("max_tokens", 128)
                return prompt, n_out

        def execute(session: requests.Session, item: tuple[str, int | None]) -> None:
            metric = client.send(session, item[0], item[1], scenario.text, stop)
            with lock:
                if metric is None:
                    aborted[0] += 1
                else:
                    metric.start -= started
                    metrics.append(metric)

        def closed_loop(number: int) -> None:
            if cfg.spawn_rate and stop.wait(number / cfg.spawn_rate):
                return
            with requests.Session() as session:
                while (item := next_request()) is not None:
                    execute(session, item)

        arrivals: queue.Queue[tuple[str, int | None] | None] = queue.Queue()

        def open_loop_worker() -> None:
            with requests.Session() as session:
                while not stop.is_set():
                    try:
                        item = arrivals.get(timeout=0.1)
                    except queue.Empty:
                        continue
                    if item is None:
                        return
                    execute(session, item)

        def dispatcher() -> None:
            assert cfg.request_rate is not None
            while not stop.wait(rng.expovariate(cfg.request_rate)):
                item = next_request()
                if item is None:
                    break
                arrivals.put(item)
            for _ in range(users):
                arrivals.put(None)

        if cfg.request_rate:
            threads = [threading.Thread(target=open_loop_worker, daemon=True) for _ in range(users)]
            threads.append(threading.Thread(target=dispatcher, daemon=True))
        else:
            threads = [threading.Thread(target=closed_loop, args=(i,), daemon=True) for i in range(users)]
        for thread in threads:
            thread.start()

        def progress() -> None:
            if self.on_progress is None:
                return
            with lock:
                done = sum(m.ok for m in metrics)
                errors = len(metrics) - done
            try:
                self.on_progress(
                    {
                        "run_index": index,
                        "runs_total": total,
                        "scenario": scenario.text,
                        "num_users": users,
                        "completed": done,
                        "errors": errors,
                        "requests_target": cfg.max_requests_per_run,
                        "elapsed": time.perf_counter() - started,
                        "max_time": cfg.max_time_per_run,
                    }
                )
            except Exception:
                log.exception("the progress callback failed")

        last_progress = started
        while any(t.is_alive() for t in threads):
            now = time.perf_counter()
            if self.cancel.is_set() or now >= deadline:
                break
            if now - last_progress >= PROGRESS_INTERVAL:
                progress()
                last_progress = now
            self.cancel.wait(min(0.05, max(0.0, deadline - now)))
        stop.set()
        client.abort_all()
        grace_end = time.perf_counter() + ABORT_GRACE
        for thread in threads:
            thread.join(max(0.0, grace_end - time.perf_counter()))
        progress()
        with lock:
            done = list(metrics)
        ends = [m.start + (m.e2e_latency or 0.0) for m in done]
        duration = max(ends) if ends else time.perf_counter() - started
        process = psutil.Process()
        return {
            "scenario": scenario.text,
            "num_users": users,
            "request_metrics": [m.to_dict() for m in done],
            "aggregated_metrics": aggregate(done, duration, cfg.goodput, self._custom()),
            "system_metrics": {
                "client_cpu_percent": psutil.cpu_percent(interval=None),
                "client_memory_mb": process.memory_info().rss / 2**20,
                "client_threads": process.num_threads(),
                "aborted_requests": aborted[0],
                "wall_time": time.perf_counter() - started,
                "open_loop": bool(cfg.request_rate),
                "request_rate": cfg.request_rate,
                "spawn_rate": cfg.spawn_rate,
            },
            "_raw": done,
        }
