"""Per-request metrics and their per-run aggregates, as genai-bench and vLLM's ``bench serve`` define them.

- TTFT: time from sending the request to the first streamed content;
- E2E latency: time from sending to the end of the response;
- TPOT: ``(E2E - TTFT) / (output tokens - 1)``, undefined for a single output token;
- ITL: the gaps between consecutive content chunks;
- output speed: ``1 / TPOT`` tokens per second.

Statistics use the population standard deviation and linearly interpolated percentiles
(numpy's default), so the figures match those tools'.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

STAT_KEYS = ("mean", "min", "max", "stddev", "p50", "p90", "p95", "p99")
DISTRIBUTIONS = ("ttft", "e2e_latency", "tpot", "itl", "output_speed", "input_tokens", "output_tokens")


@dataclass
class RequestMetrics:
    """What one request measured; times in seconds from ``start`` (a ``time.perf_counter`` value)."""

    scenario: str
    input_tokens: int = 0
    output_tokens: int = 0
    requested_output_tokens: int | None = None
    start: float = 0.0
    ttft: float | None = None
    e2e_latency: float | None = None
    itl: list[float] = field(default_factory=list)
    error_code: str | None = None
    error_message: str | None = None
    token_source: str = "usage"

    @property
    def ok(self) -> bool:
        """Whether the request completed without error."""
        return self.error_code is None

    @property
    def tpot(self) -> float | None:
        """Time per output token after the first, or ``None`` with fewer than two tokens."""
        if self.ttft is None or self.e2e_latency is None or self.output_tokens < 2:
            return None
        return (self.e2e_latency - self.ttft) / (self.output_tokens - 1)

    @property
    def output_speed(self) -> float | None:
        """Output tokens per second after the first token (``1 / TPOT``)."""
        tpot = self.tpot
        return 1.0 / tpot if tpot else None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict, including the derived TPOT and output speed."""
        data = asdict(self)
        data["tpot"], data["output_speed"] = self.tpot, self.output_speed
        return data


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation between closest ranks."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def stats(values: list[float]) -> dict[str, float | None]:
    """mean, min, max, population stddev and p50/p90/p95/p99 of ``values`` (all ``None`` when empty)."""
    if not values:
        return {key: None for key in STAT_KEYS}
    mean = sum(values) / len(values)
    return {
        "mean": mean,
        "min": min(values),
        "max": max(values),
        "stddev": math.sqrt(sum((v - mean) ** 2 for v in values) / len(values)),
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
    }


def meets_slos(metric: RequestMetrics, slos: Mapping[str, float]) -> bool:
    """Whether a completed request meets every SLO (milliseconds; ``ttft``, ``tpot``, ``e2el``, ``itl``)."""
    if not metric.ok:
        return False
    for name, limit_ms in slos.items():
        limit = limit_ms / 1000.0
        if name == "ttft":
            value: float | None = metric.ttft
        elif name == "tpot":
            value = metric.tpot
        elif name == "itl":
            value = max(metric.itl) if metric.itl else None
        else:
            value = metric.e2e_latency
        if value is not None and value > limit:
            return False
    return True


def aggregate(
    metrics: list[RequestMetrics],
    duration: float,
    slos: Mapping[str, float] | None = None,
    custom: Mapping[str, Callable[[list[RequestMetrics]], float | None]] | None = None,
) -> dict[str, Any]:
    """The run's aggregates over its ``duration`` (seconds) — the keys of the public contract."""
    done = [m for m in metrics if m.ok]
    errors = [m for m in metrics if not m.ok]
    span = duration if duration > 0 else float("nan")
    input_total = sum(m.input_tokens for m in done)
    output_total = sum(m.output_tokens for m in done)

    def per_second(value: float) -> float | None:
        return value / span if duration > 0 else None

    series: dict[str, list[float]] = {
        "ttft": [m.ttft for m in done if m.ttft is not None],
        "e2e_latency": [m.e2e_latency for m in done if m.e2e_latency is not None],
        "tpot": [t for t in (m.tpot for m in done) if t is not None],
        "itl": [gap for m in done for gap in m.itl],
        "output_speed": [s for s in (m.output_speed for m in done) if s is not None],
        "input_tokens": [float(m.input_tokens) for m in done],
        "output_tokens": [float(m.output_tokens) for m in done],
    }
    result: dict[str, Any] = {
        "requests": len(metrics),
        "completed": len(done),
        "errors": len(errors),
        "error_rate": len(errors) / len(metrics) if metrics else 0.0,
        "error_codes": dict(Counter(m.error_code for m in errors)),
        "duration": duration,
        "requests_per_second": per_second(len(done)),
        "requests_per_minute": (per_second(len(done)) or 0.0) * 60 if duration > 0 else None,
        "input_throughput": per_second(input_total),
        "output_throughput": per_second(output_total),
        "total_throughput": per_second(input_total + output_total),
        "total_input_tokens": input_total,
        "total_output_tokens": output_total,
        "avg_latency": stats(series["e2e_latency"])["mean"],
        "goodput": per_second(sum(meets_slos(m, slos) for m in done)) if slos else None,
        "slos": dict(slos or {}),
    }
    for name in DISTRIBUTIONS:
        result[name] = stats(series[name])
    result["custom"] = {name: fn(metrics) for name, fn in (custom or {}).items()}
    return result
