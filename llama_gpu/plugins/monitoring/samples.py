"""Stored metric samples and request-log statistics (SQL lives here, not in the kernel).

Every instance writes its samples with an ``instance`` label, so that several instances
sharing one PostgreSQL give one series: rates add up across instances, the other
figures are averaged.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import case, delete, func, insert, select

from ...db import MetricSample, RequestLog
from ...kernel.types import utc_iso

#: Series of ``GET /api/v1/system/metrics`` and how values of several instances combine.
SERIES: dict[str, str] = {
    "request_rate": "sum",  # requests per second
    "response_time": "mean",  # seconds
    "error_rate": "mean",  # 0..1
    "gpu_utilization": "mean",  # percent
    "memory_usage": "mean",  # percent
    "cpu_usage": "mean",  # percent
    "tokens_per_second": "sum",
}
TIMEFRAMES: dict[str, int] = {"1h": 3600, "6h": 6 * 3600, "24h": 24 * 3600, "7d": 7 * 24 * 3600}
GRANULARITIES: dict[str, int] = {"1m": 60, "5m": 300, "15m": 900, "1h": 3600}
#: The request log's status of a request its client cancelled (left): neither a success nor an error.
CANCELLED = 499


#: Seconds of the request log that ``/api/v1/system/status`` totals (the last day).
STATISTICS_WINDOW = 86_400.0


class SampleStore:
    """Writes and reads :class:`~llama_gpu.db.MetricSample` rows.

    :param database: The shared :class:`~llama_gpu.db.Database`.
    :param instance: This instance's label (host and process).
    """

    def __init__(self, database: Any, instance: str) -> None:
        self.db = database
        self.instance = instance

    def store(self, values: Mapping[str, float | None], when: dt.datetime) -> int:
        """Write one row per known, measured value; returns how many."""
        rows = [
            {"name": name, "value": float(value), "labels": {"instance": self.instance}, "created_at": when}
            for name, value in values.items()
            if name in SERIES and value is not None and math.isfinite(value)
        ]
        if rows:
            with self.db.session() as session:
                session.execute(insert(MetricSample), rows)
        return len(rows)

    def prune(self, before: dt.datetime) -> int:
        """Delete samples older than ``before``; returns how many."""
        with self.db.session() as session:
            result = session.execute(delete(MetricSample).where(MetricSample.created_at < before))
            return int(result.rowcount or 0)

    def series(self, seconds: int, step: int, now: dt.datetime | None = None) -> dict[str, list[Any]]:
        """Every series over the last ``seconds`` in buckets of ``step`` seconds (``None`` where nothing was stored)."""
        now = now or dt.datetime.now(dt.UTC)
        end = math.floor(now.timestamp() / step) * step
        start = end - seconds + step
        with self.db.session() as session:
            rows = session.execute(
                select(MetricSample.name, MetricSample.value, MetricSample.labels, MetricSample.created_at).where(
                    MetricSample.created_at >= dt.datetime.fromtimestamp(start, dt.UTC),
                    MetricSample.name.in_(list(SERIES)),
                )
            ).all()
        return _bucketed(rows, start, end, step)

    def prune_requests(self, before: dt.datetime) -> int:
        """Delete request-log rows older than ``before`` (``LLAMA_GPU_REQUEST_LOG_RETENTION_DAYS``); how many."""
        with self.db.session() as session:
            result = session.execute(delete(RequestLog).where(RequestLog.created_at < before))
            return int(result.rowcount or 0)

    def request_statistics(self, window: float = STATISTICS_WINDOW) -> dict[str, Any]:
        """Totals of the last ``window`` seconds of the request log (requests, outcomes, latency, last minute).

        Only rows in the window are read, through the index on ``created_at``: the cost of a status
        call does not grow with the log. A request its client cancelled is not an error: it counts
        in neither ``successful`` nor ``failed``.
        """
        now = dt.datetime.now(dt.UTC)
        minute_ago, since = now - dt.timedelta(minutes=1), now - dt.timedelta(seconds=window)
        with self.db.session() as session:
            total, ok, cancelled, latency, recent = session.execute(
                select(
                    func.count(RequestLog.id),
                    func.sum(case((RequestLog.status < 400, 1), else_=0)),
                    func.sum(case((RequestLog.status == CANCELLED, 1), else_=0)),
                    func.avg(RequestLog.latency_ms),
                    func.sum(case((RequestLog.created_at >= minute_ago, 1), else_=0)),
                ).where(RequestLog.created_at >= since)
            ).one()
        total, ok, cancelled = int(total or 0), int(ok or 0), int(cancelled or 0)
        failed = total - ok - cancelled
        return {
            "total_requests": total,
            "successful_requests": ok,
            "failed_requests": failed,
            "cancelled_requests": cancelled,
            "error_rate": round(failed / total, 4) if total else 0.0,
            "avg_response_time": round(float(latency) / 1000.0, 4) if latency is not None else None,
            "requests_per_minute": int(recent or 0),
            "window_seconds": int(window),
        }


def _bucketed(rows: Iterable[Any], start: int, end: int, step: int) -> dict[str, list[Any]]:
    # bucket → name → instance → values
    cells: dict[int, dict[str, dict[str, list[float]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for name, value, labels, created in rows:
        when = created if created.tzinfo else created.replace(tzinfo=dt.UTC)  # SQLite returns naive UTC
        bucket = math.floor(when.timestamp() / step) * step
        if start <= bucket <= end:
            instance = (labels or {}).get("instance", "")
            cells[bucket][name][instance].append(value)
    buckets = list(range(start, end + step, step))
    out: dict[str, list[Any]] = {"timestamps": [utc_iso(b, timespec="seconds") for b in buckets]}
    for name, how in SERIES.items():
        column: list[float | None] = []
        for bucket in buckets:
            per_instance = [sum(v) / len(v) for v in cells[bucket][name].values()] if bucket in cells else []
            if not per_instance:
                column.append(None)
            else:
                total = sum(per_instance)
                column.append(round(total if how == "sum" else total / len(per_instance), 4))
        out[name] = column
    return out
