"""The ``monitoring`` plugin: live samples, stored series, status, logs and alerts.

A daemon thread samples every ``LLAMA_GPU_METRICS_INTERVAL`` seconds: the machine (psutil),
the GPUs (NVML), the engines (running and waiting requests, tokens/s) and the requests
finished in the last minute (from ``inference_completed`` / ``inference_failed`` events,
one per request). Each sample is published as ``system_metrics``, ``gpu_metrics`` and
``inference_stats`` events (the Socket.IO bridge forwards them to the dashboard) and
checked against the alert rules. Every ``LLAMA_GPU_METRICS_STORE_INTERVAL`` seconds the
figures of that interval are written to the database (``metric_samples``), which
``GET /api/v1/system/metrics`` reads. The plugin is shared as ``kernel.services[MONITORING]``.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import logging
import os
import socket
import statistics
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from marshmallow import Schema, fields, validate

from ... import __version__
from ...db import DATABASE
from ...kernel.errors import LlamaGPUError, PluginNotFound
from ...kernel.hookspecs import hookimpl
from ...kernel.kernel import Kernel, KernelState
from ...kernel.types import Event, PluginInfo, utc_iso
from . import MONITORING, SOCKETIO
from .alerts import DEFAULT_RULES, AlertManager, parse_rules
from .logs import LogBuffer
from .system import GPUReader, system_reading

log = logging.getLogger(__name__)

EVENT_TYPES: dict[str, str] = {
    "system_metrics": "A periodic sample of CPU, memory, disk and GPU use.",
    "gpu_metrics": "A periodic sample of every GPU (NVML).",
    "inference_stats": "A periodic summary of the requests of the last minute and the engines.",
    "alert": "An alert rule fired or resolved.",
}
#: Seconds of finished requests that ``inference_stats`` summarises.
WINDOW = 60.0


class RequestWindow:
    """The requests that finished recently, from their one event each."""

    def __init__(self, keep: float = WINDOW) -> None:
        self.keep = keep
        self._lock = threading.Lock()
        #: (finished at, latency, ok, tokens, server error, cancelled by its client)
        self._done: collections.deque[tuple[float, float | None, bool, int, bool, bool]] = collections.deque()

    def add(self, event: Event) -> None:
        """Count an ``inference_completed`` or ``inference_failed`` event (refusals before a model count too)."""
        if event.type not in ("inference_completed", "inference_failed"):
            return
        latency = event.data.get("latency")
        tokens = event.data.get("tokens_generated")
        status = event.data.get("status")
        server_error = event.type == "inference_failed" and isinstance(status, int) and status >= 500
        cancelled = event.type == "inference_failed" and event.data.get("reason") == "cancelled"
        with self._lock:
            self._done.append(
                (
                    event.timestamp,
                    float(latency) if isinstance(latency, int | float) else None,
                    event.type == "inference_completed",
                    tokens if isinstance(tokens, int) else 0,
                    server_error,
                    cancelled,
                )
            )
            self._trim(time.time())

    def _trim(self, now: float) -> None:
        while self._done and self._done[0][0] < now - self.keep:
            self._done.popleft()

    def summary(self, seconds: float, now: float | None = None) -> dict[str, Any]:
        """Rates, error rate and latency of the requests that finished in the last ``seconds``.

        Requests their clients cancelled count in the rates, not as errors.
        """
        now = time.time() if now is None else now
        with self._lock:
            self._trim(now)
            done = [d for d in self._done if d[0] >= now - seconds]
        latencies = sorted(d[1] for d in done if d[1] is not None and d[2])
        failed = sum(1 for d in done if not d[2] and not d[5])  # a client that left is no error
        server_errors = sum(1 for d in done if d[4])
        return {
            "requests": len(done),
            "failed": failed,
            "requests_per_second": round(len(done) / seconds, 4),
            "error_rate": round(failed / len(done), 4) if done else None,
            "server_error_rate": round(server_errors / len(done), 4) if done else None,
            "avg_latency": round(statistics.fmean(latencies), 4) if latencies else None,
            "p95_latency": round(latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))], 4)
            if latencies
            else None,
            "tokens": sum(d[3] for d in done),
        }


def _positive(alias: str, default: float, description: str) -> fields.Float:
    return fields.Float(
        load_default=default,
        validate=validate.Range(min=0, min_inclusive=False),
        metadata={"alias": alias, "description": description},
    )


class MonitoringSettings(Schema):
    """The ``monitoring`` plugin's settings (``LLAMA_GPU_MONITORING_<KEY>``; the rules are checked by ``configure``)."""

    alert_rules = fields.Raw(load_default=lambda: [dict(rule) for rule in DEFAULT_RULES])
    log_capacity = fields.Integer(load_default=5000, validate=validate.Range(min=100, max=1_000_000))
    interval = _positive("metrics_interval", 5.0, "Seconds between live samples")
    store_interval = _positive("metrics_store_interval", 60.0, "Seconds between stored samples")
    retention_days = _positive("metrics_retention_days", 8.0, "Days stored samples are kept")


class Monitoring:
    """Samples the server, publishes and stores the samples, evaluates alerts, keeps the logs."""

    PLUGIN_INFO = PluginInfo(
        name="Monitoring",
        category="monitoring",
        description="System and GPU metrics, stored series, status, structured logs and threshold alerts.",
        default_settings={"alert_rules": [dict(rule) for rule in DEFAULT_RULES], "log_capacity": 5000},
        settings_schema=MonitoringSettings,
    )

    def __init__(self) -> None:
        self.kernel: Kernel | None = None
        self.gpus = GPUReader()
        self.window = RequestWindow(keep=WINDOW)
        self.alerts = AlertManager(parse_rules(list(DEFAULT_RULES)))
        self.logs = LogBuffer()
        self.instance = f"{socket.gethostname()}:{os.getpid()}"
        self.samples_stored = 0
        self.store_errors = 0
        self._latest: dict[str, Any] | None = None
        self._sample_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_store = time.monotonic()
        self._last_prune = 0.0
        self.interval, self.store_interval, self.retention_days = 5.0, 60.0, 8.0

    # ------------------------------------------------------------------ hooks
    @hookimpl
    def register_event_types(self, register: Callable[[str, str], None]) -> None:
        """``system_metrics``, ``gpu_metrics``, ``inference_stats``, ``alert``."""
        for name, description in EVENT_TYPES.items():
            register(name, description)

    @hookimpl
    def register_routes(self, register: Callable[[Any], None]) -> None:
        """``/api/v1/system/…`` and ``/api/v1/monitoring/alerts``."""
        from .routes import bp

        register(bp)

    @hookimpl
    def configure(self, settings: Mapping[str, Any]) -> None:
        """Apply ``alert_rules`` (a list of rules; a bad one refuses the settings) and ``log_capacity``."""
        rules = parse_rules(settings.get("alert_rules", list(DEFAULT_RULES)))
        capacity = settings.get("log_capacity", 5000)
        self.interval = float(settings.get("interval", 5.0))
        self.store_interval = float(settings.get("store_interval", 60.0))
        self.retention_days = float(settings.get("retention_days", 8.0))
        if not isinstance(capacity, int) or isinstance(capacity, bool) or not 100 <= capacity <= 1_000_000:
            raise ValueError("log_capacity must be an integer in [100, 1000000]")
        self.logs.resize(capacity)
        for change in self.alerts.set_rules(rules):
            self._publish("alert", change)

    @hookimpl
    def startup(self, kernel: Kernel) -> None:
        """Keep the logs, share the plugin, start sampling."""
        self.kernel = kernel
        logging.getLogger("llama_gpu").addHandler(self.logs)
        kernel.services[MONITORING] = self
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="monitoring-sampler", daemon=True)
        self._thread.start()

    @hookimpl
    def on_event(self, event: Event) -> None:
        """Count finished requests (one event each, never per token)."""
        self.window.add(event)

    @hookimpl
    def shutdown(self, kernel: Kernel) -> None:
        """Stop sampling, store the last interval, stop keeping logs."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)
        self._thread = None
        logging.getLogger("llama_gpu").removeHandler(self.logs)
        self.gpus.close()
        kernel.services.discard(MONITORING, self)

    @hookimpl
    def collect_metrics(self) -> Mapping[str, float]:
        """Active alerts and the sample store's counters."""
        return {
            "alerts_active": float(len(self.alerts.active())),
            "samples_stored_total": float(self.samples_stored),
            "sample_store_errors_total": float(self.store_errors),
        }

    # ------------------------------------------------------------------ sampling
    def _run(self) -> None:
        assert self.kernel is not None
        interval = self.interval
        while not self._stop.wait(interval):
            try:
                self.tick()
            except Exception:
                log.exception("monitoring sample failed")

    def tick(self) -> dict[str, Any]:
        """Take a sample, publish it, check the alerts, store the interval when it is due."""
        sample = self.sample()
        self._publish("system_metrics", sample["system"])
        self._publish("gpu_metrics", sample["gpu"])
        self._publish("inference_stats", sample["inference"])
        for change in self.alerts.evaluate(sample["alert_values"]):
            log.warning("alert %s %s: %s", change["rule"], change["state"], change["message"])
            self._publish("alert", change)
        if time.monotonic() - self._last_store >= self.store_interval:
            self.store(sample)
        return sample

    def sample(self) -> dict[str, Any]:
        """A reading of everything, shaped as the events carry it (also kept as the latest)."""
        assert self.kernel is not None
        kernel = self.kernel
        with self._sample_lock:
            now = time.time()
            reading = system_reading(kernel.settings.data_dir)
            gpus = self.gpus.read()
            running, waiting, tokens_per_second = kernel.inflight, 0, 0.0
            for model_id in list(kernel.registry.loaded()):
                try:
                    stats = kernel.registry.engine(model_id).stats()
                except LlamaGPUError:
                    continue  # unloaded meanwhile
                waiting += stats["waiting"]
                tokens_per_second += stats["tokens_per_second"]
            window = self.window.summary(WINDOW, now)
            gpu_usage = [g["utilization"] for g in gpus]
            gpu_memory = [g["memory_usage"] for g in gpus]
            system = {
                "timestamp": utc_iso(now),
                **{k: reading[k] for k in ("cpu_usage", "memory_usage", "memory_used", "memory_total", "disk_usage")},
                "gpu_count": len(gpus),
                "gpu_usage": gpu_usage,
                "gpu_memory": gpu_memory,
                "process_memory": reading["process_memory"],
            }
            inference = {
                "timestamp": utc_iso(now),
                "window_seconds": WINDOW,
                "requests_per_minute": window["requests"],
                "requests_per_second": window["requests_per_second"],
                "tokens_per_second": round(tokens_per_second, 2),
                "avg_latency": window["avg_latency"],
                "p95_latency": window["p95_latency"],
                "error_rate": window["error_rate"],
                "requests_running": running,
                "requests_waiting": waiting,
                "models_loaded": len(kernel.registry.loaded()),
            }
            known = [v for v in gpu_memory if v is not None]
            busy = [v for v in gpu_usage if v is not None]
            alert_values = {
                "gpu_memory": max(known) if known else None,
                "gpu_utilization": max(busy) if busy else None,
                "cpu_usage": reading["cpu_usage"],
                "memory_usage": reading["memory_usage"],
                "disk_usage": reading["disk_usage"],
                "error_rate": window["error_rate"],
                "server_error_rate": window["server_error_rate"],
                "queue_depth": waiting,
                "requests_running": running,
                "latency_p95": window["p95_latency"],
                "latency_avg": window["avg_latency"],
            }
            self._latest = {
                "at": now,
                "system": system,
                "gpu": {"timestamp": utc_iso(now), "gpu_count": len(gpus), "gpus": gpus},
                "inference": inference,
                "alert_values": alert_values,
            }
            return self._latest

    def latest(self) -> dict[str, Any]:
        """The newest sample, taken now if none is fresher than the sampling interval."""
        assert self.kernel is not None
        latest = self._latest
        if latest is None or time.time() - latest["at"] > self.interval:
            latest = self.sample()
        return latest

    def store(self, sample: dict[str, Any]) -> None:
        """Write the figures of the interval since the last store (failures are counted and logged)."""
        assert self.kernel is not None
        seconds = max(time.monotonic() - self._last_store, 1e-3)
        self._last_store = time.monotonic()
        window = self.window.summary(seconds)
        gpu = [v for v in sample["system"]["gpu_usage"] if v is not None]
        values = {
            "request_rate": window["requests_per_second"],
            "response_time": window["avg_latency"],
            "error_rate": window["error_rate"],
            "gpu_utilization": statistics.fmean(gpu) if gpu else None,
            "memory_usage": sample["system"]["memory_usage"],
            "cpu_usage": sample["system"]["cpu_usage"],
            "tokens_per_second": sample["inference"]["tokens_per_second"],
        }
        store = self.sample_store()
        if store is None:
            return
        now = dt.datetime.now(dt.UTC)
        try:
            self.samples_stored += store.store(values, now)
            if time.monotonic() - self._last_prune > 3600:
                self._last_prune = time.monotonic()
                store.prune(now - dt.timedelta(days=self.retention_days))
                keep = self._request_log_retention_days()
                if keep > 0:
                    store.prune_requests(now - dt.timedelta(days=keep))
        except Exception as exc:  # noqa: BLE001 - the database may be away for a while
            self.store_errors += 1
            log.warning("storing metric samples failed: %s: %s", type(exc).__name__, exc)

    def _request_log_retention_days(self) -> float:
        """The persistence plugin's ``request_log_retention_days`` (the kernel setting without it)."""
        assert self.kernel is not None
        try:
            owner = self.kernel.plugins.get("persistence").obj
        except PluginNotFound:
            owner = None
        return float(getattr(owner, "request_log_retention_days", self.kernel.settings.request_log_retention_days))

    def sample_store(self) -> Any:
        """The :class:`~.samples.SampleStore` on the shared database (``None`` without one)."""
        assert self.kernel is not None
        database = self.kernel.services.get(DATABASE)
        if database is None:
            return None
        from .samples import SampleStore  # SQL stays out of the import of this module

        return SampleStore(database, self.instance)

    # ------------------------------------------------------------------ views
    def system_status(self, web_dashboard: bool = True) -> dict[str, Any]:
        """The body of ``GET /api/v1/system/status`` (``web_dashboard``: whether the app serves it)."""
        assert self.kernel is not None
        kernel = self.kernel
        sample = self.latest()
        system, inference = sample["system"], sample["inference"]
        critical = [a for a in self.alerts.active() if a["severity"] == "critical"]
        status = kernel.state.value
        if kernel.state is KernelState.STARTED:
            status = "degraded" if critical else "healthy"
        started = kernel.state is KernelState.STARTED
        return {
            "status": status,
            "uptime": round(kernel.uptime, 3),
            "version": __version__,
            "instance": self.instance,
            "system": {
                k: system[k]
                for k in ("cpu_usage", "memory_usage", "disk_usage", "gpu_count", "gpu_usage", "gpu_memory")
            },
            "services": {
                "inference_engine": "running" if started else "stopped",
                "plugin_manager": "running",
                "web_dashboard": "running" if web_dashboard else "disabled",
                "websocket_server": "running" if SOCKETIO in kernel.services else "disabled",
            },
            "engine": {
                "models_loaded": inference["models_loaded"],
                "requests_running": inference["requests_running"],
                "requests_waiting": inference["requests_waiting"],
                "tokens_per_second": inference["tokens_per_second"],
            },
            "statistics": self.statistics(),
            "alerts_active": len(self.alerts.active()),
        }

    def statistics(self) -> dict[str, Any]:
        """Request totals from the request log (this process's counters when the database cannot answer)."""
        store = self.sample_store()
        if store is not None:
            try:
                return {**store.request_statistics(), "source": "request_log"}
            except Exception as exc:  # noqa: BLE001 - fall back to what this process counted
                log.warning("reading request statistics failed: %s: %s", type(exc).__name__, exc)
        assert self.kernel is not None
        stats = self.kernel.stats
        done = stats["succeeded"] + stats["failed"]
        window = self.window.summary(60.0)
        return {
            "total_requests": done,
            "successful_requests": stats["succeeded"],
            "failed_requests": stats["failed"],
            "error_rate": round(stats["failed"] / done, 4) if done else 0.0,
            "avg_response_time": window["avg_latency"],
            "requests_per_minute": window["requests"],
            "source": "process",
        }

    def gpu_info(self) -> dict[str, Any]:
        """The body of ``GET /api/v1/system/gpu``."""
        gpus = self.gpus.read()
        return {"gpu_count": len(gpus), "gpus": gpus, "nvml_error": self.gpus.error if not gpus else None}

    # ------------------------------------------------------------------ helpers
    def _publish(self, type: str, data: dict[str, Any]) -> None:
        kernel = self.kernel
        if kernel is None or kernel.state is not KernelState.STARTED:
            return
        with contextlib.suppress(LlamaGPUError):  # unloaded meanwhile: its event types are gone
            kernel.publish(type, data)
