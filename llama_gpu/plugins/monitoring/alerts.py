"""Threshold alerts over the live samples: GPU memory, error rate, queue depth, latency.

A rule compares one metric of each sample with a threshold. When a sample crosses it the
rule's alert fires (an ``alert`` event with ``state: "firing"``); when a later sample is
back on the right side it resolves (``state: "resolved"``). A metric missing from a
sample (no GPU, no request in the window) leaves the rule's state as it is.

Rules are the ``alert_rules`` setting of the ``monitoring`` plugin, e.g.
``PUT /api/v1/plugins/monitoring/config {"config": {"settings": {"alert_rules": [...]}}}``.
"""

from __future__ import annotations

import dataclasses
import operator
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from ...kernel.types import new_id

#: Metrics a rule may watch, as the sampler computes them.
METRICS: dict[str, str] = {
    "gpu_memory": "highest GPU memory use of any GPU, percent",
    "gpu_utilization": "highest GPU utilization of any GPU, percent",
    "cpu_usage": "CPU use, percent",
    "memory_usage": "system memory use, percent",
    "disk_usage": "disk use of the data folder, percent",
    "error_rate": "failed share of the requests finished in the window (any error), 0..1",
    "server_error_rate": "share of the requests in the window that failed with a 5xx error, 0..1",
    "queue_depth": "requests waiting in all model queues",
    "requests_running": "requests being served",
    "latency_p95": "95th percentile request latency in the window, seconds",
    "latency_avg": "mean request latency in the window, seconds",
}
OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}
SEVERITIES = ("info", "warning", "critical")

DEFAULT_RULES: tuple[dict[str, Any], ...] = (
    {"name": "gpu_memory_high", "metric": "gpu_memory", "op": ">", "threshold": 95.0, "severity": "warning"},
    {"name": "error_rate_high", "metric": "server_error_rate", "op": ">", "threshold": 0.1, "severity": "critical"},
    {"name": "queue_depth_high", "metric": "queue_depth", "op": ">", "threshold": 32, "severity": "warning"},
    {"name": "latency_high", "metric": "latency_p95", "op": ">", "threshold": 30.0, "severity": "warning"},
    {"name": "memory_high", "metric": "memory_usage", "op": ">", "threshold": 95.0, "severity": "warning"},
)


@dataclasses.dataclass(frozen=True)
class Rule:
    """Fire when ``metric op threshold``."""

    name: str
    metric: str
    op: str
    threshold: float
    severity: str = "warning"

    @classmethod
    def parse(cls, raw: Any) -> Rule:
        """A rule from its JSON form; ``ValueError`` naming what is wrong."""
        if not isinstance(raw, Mapping):
            raise ValueError(f"an alert rule must be an object, got {raw!r}")
        unknown = set(raw) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"alert rule has unknown field(s) {sorted(unknown)}")
        name, metric, op = raw.get("name"), raw.get("metric"), raw.get("op", ">")
        threshold, severity = raw.get("threshold"), raw.get("severity", "warning")
        if not isinstance(name, str) or not name or len(name) > 64:
            raise ValueError("alert rule name must be a string of 1 to 64 characters")
        if metric not in METRICS:
            raise ValueError(f"alert rule {name!r}: metric must be one of {sorted(METRICS)}")
        if op not in OPERATORS:
            raise ValueError(f"alert rule {name!r}: op must be one of {sorted(OPERATORS)}")
        if not isinstance(threshold, int | float) or isinstance(threshold, bool):
            raise ValueError(f"alert rule {name!r}: threshold must be a number")
        if severity not in SEVERITIES:
            raise ValueError(f"alert rule {name!r}: severity must be one of {list(SEVERITIES)}")
        return cls(name=name, metric=metric, op=op, threshold=float(threshold), severity=severity)

    def describe(self) -> dict[str, Any]:
        """The rule as JSON."""
        return dataclasses.asdict(self)


def parse_rules(raw: Any) -> tuple[Rule, ...]:
    """Rules from a JSON list; ``ValueError`` for a bad one or a name used twice."""
    if not isinstance(raw, list | tuple):
        raise ValueError("alert_rules must be a list of rules")
    rules = tuple(Rule.parse(item) for item in raw)
    names = [r.name for r in rules]
    if len(names) != len(set(names)):
        raise ValueError("alert rule names must be unique")
    return rules


class AlertManager:
    """Evaluates rules against samples and remembers the firing alerts."""

    def __init__(self, rules: tuple[Rule, ...] = ()) -> None:
        self._lock = threading.Lock()
        self._rules = rules
        self._active: dict[str, dict[str, Any]] = {}

    @property
    def rules(self) -> tuple[Rule, ...]:
        """The rules in force."""
        return self._rules

    def set_rules(self, rules: tuple[Rule, ...]) -> list[dict[str, Any]]:
        """Replace the rules; alerts of rules that are gone or changed resolve (returned)."""
        with self._lock:
            self._rules = rules
            keep = {r.name: r for r in rules}
            gone = [name for name, alert in self._active.items() if keep.get(name) != alert["_rule"]]
            return [self._resolve(name, None) for name in gone]

    def active(self) -> list[dict[str, Any]]:
        """The firing alerts, oldest first."""
        with self._lock:
            return [_public(a) for a in self._active.values()]

    def evaluate(self, values: Mapping[str, float | None]) -> list[dict[str, Any]]:
        """Check every rule against ``values``; returns the alerts that fired or resolved now."""
        changes = []
        with self._lock:
            for rule in self._rules:
                value = values.get(rule.metric)
                if value is None:
                    continue
                crossed = OPERATORS[rule.op](float(value), rule.threshold)
                if crossed and rule.name not in self._active:
                    alert = {
                        "id": new_id("alert"),
                        "rule": rule.name,
                        "metric": rule.metric,
                        "state": "firing",
                        "severity": rule.severity,
                        "message": f"{rule.metric} is {_fmt(value)} ({rule.op} {_fmt(rule.threshold)})",
                        "value": value,
                        "threshold": rule.threshold,
                        "started_at": time.time(),
                        "resolved_at": None,
                        "_rule": rule,
                    }
                    self._active[rule.name] = alert
                    changes.append(_public(alert))
                elif crossed:
                    self._active[rule.name]["value"] = value
                elif rule.name in self._active:
                    changes.append(self._resolve(rule.name, value))
        return changes

    def _resolve(self, name: str, value: float | None) -> dict[str, Any]:
        alert = self._active.pop(name)
        alert.update(state="resolved", resolved_at=time.time())
        if value is not None:
            alert["value"] = value
            alert["message"] = f"{alert['metric']} is back to {_fmt(value)}"
        else:
            alert["message"] = f"rule {name!r} was changed or removed"
        return _public(alert)


def _public(alert: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in alert.items() if not k.startswith("_")}


def _fmt(value: float) -> str:
    return f"{value:.4g}"
