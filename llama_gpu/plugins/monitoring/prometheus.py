"""The ``prometheus`` plugin: ``GET /metrics`` in the Prometheus text format, through ``prometheus_client``.

Counters and histograms follow the requests' events (one per request, never per token);
gauges are set from the kernel on every scrape and on every ``inference_stats`` sample.
Labels are the model, the endpoint and the HTTP status: never a key, a user or anything a
caller chooses (a request for an unknown model counts as ``model="unknown"``).

Several processes (gunicorn workers): when ``PROMETHEUS_MULTIPROC_DIR`` is set before
the process starts, ``prometheus_client`` keeps every value in files in that folder and a
scrape of any process reads them all (:class:`prometheus_client.multiprocess.MultiProcessCollector`):
counters add up, the ``live*`` gauges add up (or take the maximum) over live processes, and GPU
gauges take the most recent reading. A process that exits must be marked dead
(``prometheus_client.multiprocess.mark_process_dead``, gunicorn's ``child_exit``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)

from ... import __version__
from ...kernel.errors import LlamaGPUError
from ...kernel.hookspecs import hookimpl
from ...kernel.kernel import Kernel
from ...kernel.types import Event, PluginInfo
from . import MONITORING, PROMETHEUS

PREFIX = "llama_gpu"
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def multiprocess_dir() -> str | None:
    """The folder of multi-process mode, when ``PROMETHEUS_MULTIPROC_DIR`` is set."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class Metrics:
    """One kernel's metric families in a registry of their own (no module globals)."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        disable_created_metrics()  # the *_created series only add noise to every scrape
        self.registry = CollectorRegistry(auto_describe=True)
        self.multiprocess = multiprocess_dir() is not None
        r = self.registry
        self.requests = Counter(
            f"{PREFIX}_requests",
            "Inference requests finished, by outcome.",
            ("model", "endpoint", "status"),
            registry=r,
        )
        self.duration = Histogram(
            f"{PREFIX}_request_duration_seconds",
            "Time from admission to the last token, queue time included.",
            ("model", "endpoint"),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            f"{PREFIX}_time_to_first_token_seconds",
            "Time from admission to the first streamed token.",
            ("model",),
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.queue_time = Histogram(
            f"{PREFIX}_queue_time_seconds",
            "Time a request waited before its model engine admitted it.",
            ("model",),
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(f"{PREFIX}_tokens_generated", "Tokens generated.", ("model",), registry=r)
        self.prompt_tokens = Counter(f"{PREFIX}_prompt_tokens", "Prompt tokens processed.", ("model",), registry=r)
        self.plugin_errors = Counter(f"{PREFIX}_plugin_errors", "Plugin failures.", ("plugin",), registry=r)
        self.running = Gauge(
            f"{PREFIX}_requests_running", "Requests being served.", ("model",), multiprocess_mode="livesum", registry=r
        )
        self.waiting = Gauge(
            f"{PREFIX}_requests_waiting",
            "Requests waiting in a model's queue.",
            ("model",),
            multiprocess_mode="livesum",
            registry=r,
        )
        self.models_loaded = Gauge(
            f"{PREFIX}_models_loaded", "Models in memory.", multiprocess_mode="livesum", registry=r
        )
        self.model_memory = Gauge(
            f"{PREFIX}_model_memory_bytes",
            "Memory a loaded model takes.",
            ("model", "device"),
            multiprocess_mode="livesum",
            registry=r,
        )
        self.model_tps = Gauge(
            f"{PREFIX}_model_tokens_per_second",
            "Recent decode throughput of a model's engine.",
            ("model",),
            multiprocess_mode="livesum",
            registry=r,
        )
        gpu = ("gpu", "name")
        self.gpu_util = Gauge(
            f"{PREFIX}_gpu_utilization_percent", "GPU utilization.", gpu, multiprocess_mode="mostrecent", registry=r
        )
        self.gpu_used = Gauge(
            f"{PREFIX}_gpu_memory_used_bytes", "GPU memory used.", gpu, multiprocess_mode="mostrecent", registry=r
        )
        self.gpu_total = Gauge(
            f"{PREFIX}_gpu_memory_total_bytes", "GPU memory in all.", gpu, multiprocess_mode="mostrecent", registry=r
        )
        self.gpu_temp = Gauge(
            f"{PREFIX}_gpu_temperature_celsius", "GPU temperature.", gpu, multiprocess_mode="mostrecent", registry=r
        )
        self.gpu_power = Gauge(
            f"{PREFIX}_gpu_power_watts", "GPU power draw.", gpu, multiprocess_mode="mostrecent", registry=r
        )
        self.gpu_count = Gauge(f"{PREFIX}_gpus", "GPUs seen through NVML.", multiprocess_mode="max", registry=r)
        self.alerts = Gauge(f"{PREFIX}_alerts_active", "Alerts firing.", multiprocess_mode="max", registry=r)
        self.info = Gauge(f"{PREFIX}_build_info", "Version.", ("version",), multiprocess_mode="max", registry=r)
        self.info.labels(__version__).set(1)
        if not self.multiprocess:  # these read /proc of this process only
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)

    # ------------------------------------------------------------------ events
    def observe(self, event: Event) -> None:
        """Count one request's event."""
        data = event.data
        if event.type == "plugin_error":
            self.plugin_errors.labels(str(data.get("plugin_id", "unknown"))).inc()
            return
        if event.type == "inference_stats":
            self.refresh()
            return
        if event.type not in ("inference_started", "inference_completed", "inference_failed"):
            return
        model = self._model_label(data.get("model"))
        if event.type == "inference_started":
            self.running.labels(model).inc()
            return
        endpoint = str(data.get("endpoint") or "unknown")[:32]
        if event.type == "inference_failed" and data.get("reason") != "refused":
            self.running.labels(model).dec()  # a refusal never started
        status = "200" if event.type == "inference_completed" else str(data.get("status") or 500)
        self.requests.labels(model, endpoint, status).inc()
        if event.type == "inference_completed":
            self.running.labels(model).dec()
            self.duration.labels(model, endpoint).observe(_num(data.get("latency")))
            if data.get("time_to_first_token") is not None:
                self.ttft.labels(model).observe(_num(data["time_to_first_token"]))
            if data.get("queue_time") is not None:
                self.queue_time.labels(model).observe(_num(data["queue_time"]))
            self.prompt_tokens.labels(model).inc(max(0, int(data.get("prompt_tokens") or 0)))
        self.tokens.labels(model).inc(max(0, int(data.get("tokens_generated") or 0)))

    def _model_label(self, model: Any) -> str:
        known = {spec.id for spec in self.kernel.registry.specs()}
        return model if isinstance(model, str) and model in known else "unknown"

    # ------------------------------------------------------------------ gauges
    def refresh(self) -> None:
        """Set the gauges from the kernel and the latest monitoring sample."""
        registry = self.kernel.registry
        loaded = registry.loaded()
        self.models_loaded.set(len(loaded))
        for spec in registry.specs():
            model = loaded.get(spec.id)
            waiting, tps = 0, 0.0
            if model is not None:
                try:
                    stats = registry.engine(spec.id).stats()
                    waiting, tps = stats["waiting"], stats["tokens_per_second"]
                except LlamaGPUError:
                    model = None
            self.waiting.labels(spec.id).set(waiting)
            self.model_tps.labels(spec.id).set(tps)
            if model is not None:
                self.model_memory.labels(spec.id, str(model.device)).set(model.memory_bytes)
            else:
                for labels in _label_sets(self.model_memory, spec.id):
                    self.model_memory.remove(*labels)  # unloaded: no longer a series
        monitor = self.kernel.services.get(MONITORING)
        if monitor is None:
            return
        self.alerts.set(len(monitor.alerts.active()))
        gpus = monitor.latest()["gpu"]["gpus"]
        self.gpu_count.set(len(gpus))
        for g in gpus:
            labels = (str(g["id"]), str(g.get("name") or ""))
            for gauge, key in (
                (self.gpu_util, "utilization"),
                (self.gpu_used, "memory_used"),
                (self.gpu_total, "memory_total"),
                (self.gpu_temp, "temperature"),
                (self.gpu_power, "power_usage"),
            ):
                if g.get(key) is not None:
                    gauge.labels(*labels).set(g[key])

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type (every process's values in multi-process mode)."""
        self.refresh()
        if self.multiprocess:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def _num(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _label_sets(metric: Any, model: str) -> list[tuple[str, ...]]:
    """The label values of ``metric``'s children for ``model``."""
    return [labels for labels in list(metric._metrics) if labels and labels[0] == model]


class PrometheusExporter:
    """Keeps the Prometheus metrics of a kernel, shared as ``kernel.services[PROMETHEUS]``."""

    PLUGIN_INFO = PluginInfo(
        name="Prometheus",
        category="monitoring",
        description="GET /metrics in the Prometheus text format (multi-process aware).",
    )

    def __init__(self) -> None:
        self.metrics: Metrics | None = None

    @hookimpl
    def startup(self, kernel: Kernel) -> None:
        """Create the metric families."""
        self.metrics = Metrics(kernel)
        kernel.services[PROMETHEUS] = self.metrics

    @hookimpl
    def register_routes(self, register: Callable[[Any], None]) -> None:
        """``GET /metrics``."""
        from .routes import metrics_bp

        register(metrics_bp)

    @hookimpl
    def on_event(self, event: Event) -> None:
        """Count requests and plugin errors; refresh the gauges on each sample."""
        if self.metrics is not None:
            self.metrics.observe(event)

    @hookimpl
    def shutdown(self, kernel: Kernel) -> None:
        """Stop sharing the metrics."""
        kernel.services.discard(PROMETHEUS, self.metrics)

    @hookimpl
    def collect_metrics(self) -> Mapping[str, float]:
        """Whether multi-process mode is on."""
        return {"multiprocess": 1.0 if self.metrics is not None and self.metrics.multiprocess else 0.0}
