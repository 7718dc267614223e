"""A 2x4 grid of the experiments' figures (matplotlib, Agg); several experiments overlay, to compare servers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import BenchmarkError
from .report import load_experiment, value_at

#: The panels: (title, x label, x path, y label, y path, x scale, y scale); "num_users" is the concurrency.
PANELS: tuple[tuple[str, str, tuple[str, ...], str, tuple[str, ...], float, float], ...] = (
    (
        "Output throughput vs TTFT",
        "mean TTFT (ms)",
        ("ttft", "mean"),
        "output tokens/s",
        ("output_throughput",),
        1000,
        1,
    ),
    (
        "Output speed vs throughput",
        "output tokens/s",
        ("output_throughput",),
        "per-request tokens/s",
        ("output_speed", "mean"),
        1,
        1,
    ),
    ("E2E latency p90 vs RPS", "requests/s", ("requests_per_second",), "E2E p90 (s)", ("e2e_latency", "p90"), 1, 1),
    ("E2E latency p99 vs RPS", "requests/s", ("requests_per_second",), "E2E p99 (s)", ("e2e_latency", "p99"), 1, 1),
    ("TPOT vs concurrency", "concurrent users", ("num_users",), "mean TPOT (ms)", ("tpot", "mean"), 1, 1000),
    ("TTFT p90 vs concurrency", "concurrent users", ("num_users",), "TTFT p90 (ms)", ("ttft", "p90"), 1, 1000),
    ("Error rate vs concurrency", "concurrent users", ("num_users",), "error rate (%)", ("error_rate",), 1, 100),
    ("Total throughput vs concurrency", "concurrent users", ("num_users",), "tokens/s", ("total_throughput",), 1, 1),
)


def _label(folder: Path, info: dict[str, Any]) -> str:
    server = info.get("server") or {}
    name = server.get("name") if isinstance(server, dict) else None
    return f"{name or folder.name} ({info.get('model', '?')})"


def plot_experiments(folders: list[str | Path], output: str | Path) -> Path:
    """Draw the grid for one or more experiment folders into a PNG; each (experiment, scenario) is one line."""
    if not folders:
        raise BenchmarkError("no experiment folder to plot")
    try:
        import matplotlib
    except ImportError:
        raise BenchmarkError("bench plot needs matplotlib: pip install 'llama-gpu[bench]'") from None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = []
    for folder in folders:
        info, runs = load_experiment(folder)
        by_scenario: dict[str, list[dict[str, Any]]] = {}
        for run in runs:
            by_scenario.setdefault(run["scenario"], []).append(run)
        for scenario, items in by_scenario.items():
            items.sort(key=lambda r: r["num_users"])
            series.append((f"{_label(Path(folder), info)} {scenario}", items))
    figure, axes = plt.subplots(2, 4, figsize=(22, 10))
    for ax, (title, xlabel, xpath, ylabel, ypath, xscale, yscale) in zip(axes.flat, PANELS, strict=True):
        for label, runs in series:
            points = []
            for run in runs:
                agg = {**run["aggregated_metrics"], "num_users": run["num_users"]}
                x, y = value_at(agg, xpath, xscale), value_at(agg, ypath, yscale)
                if x is not None and y is not None:
                    points.append((x, y, run["num_users"]))
            if not points:
                continue
            line = ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)[0]
            if xpath != ("num_users",):
                for x, y, users in points:
                    ax.annotate(
                        f"u{users}",
                        (x, y),
                        textcoords="offset points",
                        xytext=(4, 4),
                        fontsize=8,
                        color=line.get_color(),
                    )
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        if xpath == ("num_users",):
            users = sorted({run["num_users"] for _, runs in series for run in runs})
            ax.set_xscale("log", base=2)
            ax.set_xticks(users, [str(u) for u in users])
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        if ypath == ("error_rate",):
            top = max((line.get_ydata().max() for line in ax.get_lines()), default=0.0)
            ax.set_ylim(0, max(5.0, top * 1.1))  # a flat zero line shows as "no errors", not as noise
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if not handles:
        for ax in axes.flat:
            handles, labels = ax.get_legend_handles_labels()
            if handles:
                break
    figure.legend(handles, labels, loc="upper center", ncol=min(4, max(1, len(labels))), fontsize=10)
    figure.tight_layout(rect=(0, 0, 1, 0.93))
    out = Path(output)
    try:
        figure.savefig(out, dpi=90)
    except OSError as exc:
        raise BenchmarkError(f"cannot write {out}: {exc}") from exc
    finally:
        plt.close(figure)
    return out
