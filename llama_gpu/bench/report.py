"""Experiment folders read back, the summary table, and the Excel export (openpyxl)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import BenchmarkError
from .metrics import DISTRIBUTIONS, STAT_KEYS
from .runner import METADATA_FILE

#: The summary columns: (header, path into aggregated_metrics, scale).
SUMMARY_COLUMNS: tuple[tuple[str, tuple[str, ...], float], ...] = (
    ("requests", ("requests",), 1),
    ("completed", ("completed",), 1),
    ("errors", ("errors",), 1),
    ("error rate", ("error_rate",), 1),
    ("duration s", ("duration",), 1),
    ("req/s", ("requests_per_second",), 1),
    ("req/min", ("requests_per_minute",), 1),
    ("input tok/s", ("input_throughput",), 1),
    ("output tok/s", ("output_throughput",), 1),
    ("total tok/s", ("total_throughput",), 1),
    ("TTFT mean ms", ("ttft", "mean"), 1000),
    ("TTFT p50 ms", ("ttft", "p50"), 1000),
    ("TTFT p90 ms", ("ttft", "p90"), 1000),
    ("TTFT p99 ms", ("ttft", "p99"), 1000),
    ("E2E mean s", ("e2e_latency", "mean"), 1),
    ("E2E p90 s", ("e2e_latency", "p90"), 1),
    ("E2E p99 s", ("e2e_latency", "p99"), 1),
    ("TPOT mean ms", ("tpot", "mean"), 1000),
    ("TPOT p90 ms", ("tpot", "p90"), 1000),
    ("ITL mean ms", ("itl", "mean"), 1000),
    ("speed tok/s", ("output_speed", "mean"), 1),
    ("goodput req/s", ("goodput",), 1),
)


def value_at(metrics: dict[str, Any], path: tuple[str, ...], scale: float = 1) -> float | None:
    """A (scaled) figure of ``aggregated_metrics``, ``None`` where there is none."""
    value: Any = metrics
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value * scale if isinstance(value, int | float) else None


def load_experiment(folder: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The (benchmark_info, runs) of an experiment folder; :class:`BenchmarkError` when it is not one."""
    path = Path(folder)
    meta = path / METADATA_FILE
    if not meta.is_file():
        raise BenchmarkError(f"{folder} is not an experiment folder (no {METADATA_FILE})")
    try:
        data = json.loads(meta.read_text(encoding="utf-8"))
        runs = [json.loads((path / name).read_text(encoding="utf-8")) for name in data["runs"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BenchmarkError(f"{folder}: cannot read the experiment: {exc}") from exc
    return data.get("benchmark_info", {}), runs


def summary_table(runs: list[dict[str, Any]]) -> str:
    """A plain-text table of the runs (one line each)."""
    cols = (
        ("scenario", 16),
        ("users", 5),
        ("done", 5),
        ("err", 4),
        ("req/s", 7),
        ("out tok/s", 9),
        ("TTFT p50", 9),
        ("TTFT p90", 9),
        ("TPOT p50", 9),
        ("E2E p90", 8),
        ("goodput", 7),
    )
    lines = ["  ".join(name.rjust(width) if i else name.ljust(width) for i, (name, width) in enumerate(cols))]

    def fmt(value: float | None, unit: str = "", digits: int = 2) -> str:
        return "-" if value is None else f"{value:.{digits}f}{unit}"

    for run in runs:
        agg = run["aggregated_metrics"]
        cells = (
            str(run["scenario"]),
            str(run["num_users"]),
            str(agg["completed"]),
            str(agg["errors"]),
            fmt(agg["requests_per_second"]),
            fmt(agg["output_throughput"], digits=1),
            fmt(value_at(agg, ("ttft", "p50"), 1000), "ms", 0),
            fmt(value_at(agg, ("ttft", "p90"), 1000), "ms", 0),
            fmt(value_at(agg, ("tpot", "p50"), 1000), "ms", 1),
            fmt(value_at(agg, ("e2e_latency", "p90")), "s"),
            fmt(agg.get("goodput")),
        )
        lines.append(
            "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, (_, w)) in enumerate(zip(cells, cols, strict=True)))
        )
    return "\n".join(lines)


def _sheet_name(index: int, run: dict[str, Any], used: set[str]) -> str:
    name = f"Run {index + 1} {run['scenario']} u{run['num_users']}"
    for bad in "[]:*?/\\":
        name = name.replace(bad, "_")
    name = name[:31]
    while name in used:
        name = name[:28] + f"~{len(used)}"
    used.add(name)
    return name


def write_excel(folder: str | Path, output: str | Path) -> Path:
    """Write an experiment to an ``.xlsx``: a ``Summary`` sheet, then one sheet per run."""
    try:
        from openpyxl import Workbook
        from openpyxl.styles import Font
    except ImportError:
        raise BenchmarkError("bench excel needs openpyxl: pip install 'llama-gpu[bench]'") from None

    info, runs = load_experiment(folder)
    book = Workbook()
    summary = book.active
    summary.title = "Summary"
    bold = Font(bold=True)
    summary.append(["Experiment", str(Path(folder).name)])
    for key in ("model", "api_base", "task", "dataset", "started_at", "token_counting"):
        summary.append([key, str(info.get(key, ""))])
    summary.append([])
    header = ["scenario", "num_users", *(name for name, _, _ in SUMMARY_COLUMNS)]
    summary.append(header)
    for cell in summary[summary.max_row]:
        cell.font = bold
    for run in runs:
        agg = run["aggregated_metrics"]
        summary.append([run["scenario"], run["num_users"], *(value_at(agg, p, s) for _, p, s in SUMMARY_COLUMNS)])
    used: set[str] = {"Summary"}
    for index, run in enumerate(runs):
        sheet = book.create_sheet(_sheet_name(index, run, used))
        agg = run["aggregated_metrics"]
        sheet.append(["scenario", run["scenario"], "num_users", run["num_users"]])
        for key in (
            "requests",
            "completed",
            "errors",
            "error_rate",
            "duration",
            "requests_per_second",
            "requests_per_minute",
            "input_throughput",
            "output_throughput",
            "total_throughput",
            "goodput",
        ):
            sheet.append([key, agg.get(key)])
        sheet.append(["error_codes", json.dumps(agg.get("error_codes", {}))])
        for name, value in (agg.get("custom") or {}).items():
            sheet.append([f"custom.{name}", value])
        sheet.append([])
        sheet.append(["metric (s, tokens, tok/s)", *STAT_KEYS])
        for cell in sheet[sheet.max_row]:
            cell.font = bold
        for name in DISTRIBUTIONS:
            sheet.append([name, *(agg[name][key] for key in STAT_KEYS)])
        sheet.append([])
        columns = [
            "start",
            "ttft",
            "e2e_latency",
            "tpot",
            "output_speed",
            "input_tokens",
            "output_tokens",
            "requested_output_tokens",
            "error_code",
            "token_source",
        ]
        sheet.append(columns)
        for cell in sheet[sheet.max_row]:
            cell.font = bold
        for metric in run["request_metrics"]:
            sheet.append([metric.get(c) for c in columns])
    out = Path(output)
    try:
        book.save(out)
    except OSError as exc:
        raise BenchmarkError(f"cannot write {out}: {exc}") from exc
    return out
