"""`llama-gpu bench` end to end against a live LLaMA GPU: run → experiment folder → excel → plot."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from llama_gpu.cli import main as cli

from .test_bench_live import Live, start_live, stop_live

pytestmark = pytest.mark.timeout(600)
openpyxl = pytest.importorskip("openpyxl")
pytest.importorskip("matplotlib")


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    server_live, server, thread = start_live(tmp_path)
    yield server_live
    stop_live(server_live, server, thread)


def bench_run(live: Live, out: Path, name: str, *extra: str) -> dict:
    result = CliRunner().invoke(
        cli,
        [
            "bench", "run", "--api-base", live.api_base, "--api-key", live.key, "--model", "echo",
            "--endpoint", "completions", "--traffic-scenario", "D(20,8)", "--num-users", "1,2,4",
            "--max-requests-per-run", "8", "--max-time-per-run", "60", "--output-dir", str(out),
            "--experiment-name", name, "--server-name", name, "--goodput", "ttft:2000 tpot:500", *extra,
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "TTFT p90" in result.output and f"experiment: {out / name}" in result.output  # the summary table
    meta = json.loads((out / name / "experiment_metadata.json").read_text())
    assert len(meta["runs"]) == 3 and meta["benchmark_info"]["token_counting"] == "usage"
    return meta


def test_run_excel_plot(live: Live, tmp_path: Path) -> None:
    out = tmp_path / "experiments"
    live.kernel.configure_plugin("echo", {"settings": {"token_delay": 0.005}})
    meta = bench_run(live, out, "fast")
    live.kernel.configure_plugin("echo", {"settings": {"token_delay": 0.03}})
    bench_run(live, out, "slow")
    runs = [json.loads((out / "fast" / name).read_text()) for name in meta["runs"]]
    assert [r["num_users"] for r in runs] == [1, 2, 4]
    assert all(r["aggregated_metrics"]["completed"] == 8 for r in runs)

    xlsx = tmp_path / "fast.xlsx"
    done = CliRunner().invoke(
        cli, ["bench", "excel", "--experiment-dir", str(out / "fast"), "--output-file", str(xlsx)]
    )
    assert done.exit_code == 0, done.output
    book = openpyxl.load_workbook(xlsx)
    assert book.sheetnames == ["Summary", "Run 1 D(20,8) u1", "Run 2 D(20,8) u2", "Run 3 D(20,8) u4"]
    rows = list(book["Summary"].iter_rows(values_only=True))
    header_at = next(i for i, row in enumerate(rows) if row[0] == "scenario")
    header, data = rows[header_at], rows[header_at + 1 : header_at + 4]
    col = {name: header.index(name) for name in ("num_users", "completed", "output tok/s", "TTFT p90 ms")}
    assert [row[col["num_users"]] for row in data] == [1, 2, 4]
    assert [row[col["completed"]] for row in data] == [8, 8, 8]
    for row, run in zip(data, runs, strict=True):
        agg = run["aggregated_metrics"]
        assert row[col["output tok/s"]] == pytest.approx(agg["output_throughput"])
        assert row[col["TTFT p90 ms"]] == pytest.approx(agg["ttft"]["p90"] * 1000)
    per_run = list(book["Run 2 D(20,8) u2"].iter_rows(values_only=True))
    ttft_row = next(row for row in per_run if row[0] == "ttft")
    assert ttft_row[1] == pytest.approx(runs[1]["aggregated_metrics"]["ttft"]["mean"])
    assert sum(1 for row in per_run if row[-1] == "usage") == 8  # one row per request

    png = tmp_path / "compare.png"
    done = CliRunner().invoke(
        cli, ["bench", "plot", "--experiment-dirs", str(out / "fast"), str(out / "slow"), "--output-file", str(png)]
    )
    assert done.exit_code == 0, done.output
    from PIL import Image

    with Image.open(png) as image:
        assert image.size == (1980, 900) and image.getextrema() != ((255, 255), (255, 255), (255, 255), (255, 255))
    keep = Path("test-artifacts")
    if keep.is_dir():
        shutil.copy(png, keep / "bench_compare.png")  # for a person to look at


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--num-users", "0"], "at least 1"),
        (["--num-users", "a,b"], "integers separated by commas"),
        (["--traffic-scenario", "X(1,2)"], "traffic_scenario"),
        (["--traffic-scenario", "U(10,5)/(1,2)"], "min must not exceed"),
        (["--api-base", "not-a-url"], "api_base"),
        (["--api-base", "http://127.0.0.1:9/v1"], "APIError: cannot reach"),
        (["--dataset", "/nonexistent/prompts.txt"], "DatasetError"),
        (["--task", "image-to-text"], "image-to-text"),
        (["--goodput", "ttft=5"], "name:milliseconds"),
        (["--goodput", "speed:5"], "unknown SLO"),
        (["--max-time-per-run", "0"], "max_time_per_run"),
        (["--additional-request-params", "[1]"], "JSON object"),
    ],
)
def test_bad_run_input_exits_2(tmp_path: Path, args: list[str], message: str) -> None:
    base = ["bench", "run", "--model", "echo", "--output-dir", str(tmp_path), "--api-base", "http://127.0.0.1:9/v1"]
    result = CliRunner().invoke(cli, base + args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not any(tmp_path.iterdir())  # nothing written


def test_a_wrong_key_exits_2_with_the_status(live: Live, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["bench", "run", "--api-base", live.api_base, "--api-key", "lgk_bad", "--model", "echo",
              "--output-dir", str(tmp_path)],
    )  # fmt: skip
    assert result.exit_code == 2 and "APIError: HTTP 401" in result.output


def test_excel_and_plot_refuse_what_is_not_an_experiment(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["bench", "excel", "--experiment-dir", str(tmp_path), "--output-file", "x.xlsx"])
    assert result.exit_code == 2 and "not an experiment folder" in result.output
    (tmp_path / "experiment_metadata.json").write_text("{not json")
    result = runner.invoke(cli, ["bench", "plot", "--experiment-dirs", str(tmp_path), "--output-file", "x.png"])
    assert result.exit_code == 2 and "cannot read the experiment" in result.output
    assert "bench" in runner.invoke(cli, ["--help"]).output
