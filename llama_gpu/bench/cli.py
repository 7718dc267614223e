"""``llama-gpu bench``: run a benchmark, export it to Excel, plot experiments."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from .errors import BenchError


def _fail(exc: BenchError) -> None:
    click.echo(f"error: {type(exc).__name__}: {exc}", err=True)
    sys.exit(2)


def _users(value: str) -> list[int]:
    try:
        users = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r}: use integers separated by commas, e.g. 1,2,4") from None
    if not users or any(n < 1 for n in users):
        raise click.BadParameter(f"{value!r}: every value must be at least 1")
    return users


def _goodput(values: tuple[str, ...]) -> dict[str, float]:
    slos: dict[str, float] = {}
    for item in " ".join(values).split():
        name, sep, number = item.partition(":")
        try:
            slos[name] = float(number)
        except ValueError:
            raise click.BadParameter(f"{item!r}: use name:milliseconds, e.g. ttft:500 tpot:50") from None
        if not sep:
            raise click.BadParameter(f"{item!r}: use name:milliseconds")
    return slos


def _json_object(value: str | None, flag: str) -> dict[str, Any]:
    if not value:
        return {}
    try:
        data = json.loads(value)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint=flag) from None
    if not isinstance(data, dict):
        raise click.BadParameter("must be a JSON object", param_hint=flag)
    return data


@click.group()
def bench() -> None:
    """Benchmark any OpenAI-compatible server (genai-bench / vLLM bench serve metrics)."""


@bench.command("run")
@click.option("--api-backend", default="openai", show_default=True, help="The API flavour.")
@click.option("--api-base", default="http://127.0.0.1:5000/v1", show_default=True, help="The server's /v1 URL.")
@click.option("--api-key", envvar="LLAMA_GPU_BENCH_API_KEY", default=None, help="Bearer key [LLAMA_GPU_BENCH_API_KEY].")
@click.option("--model", "model", required=True, help="The model id to ask for.")
@click.option("--task", type=click.Choice(["text-to-text", "text-to-embeddings"]), default="text-to-text")
@click.option(
    "--traffic-scenario", multiple=True, help="D(in,out), N(mu,sd)/(mu,sd), U(lo,hi)/(lo,hi), E(in); repeatable."
)
@click.option("--dataset", default=None, help="'sonnets' (default) or a .txt (one prompt a line) or .jsonl file.")
@click.option("--num-users", default="1", show_default=True, help="Concurrent users; a sweep: 1,2,4,8.")
@click.option("--max-time-per-run", type=float, default=60.0, show_default=True, help="Seconds per run.")
@click.option("--max-requests-per-run", type=int, default=100, show_default=True, help="Requests per run.")
@click.option("--spawn-rate", type=float, default=None, help="Users started per second (closed loop).")
@click.option("--request-rate", type=float, default=None, help="Poisson arrivals per second (open loop).")
@click.option("--output-dir", default="experiments", show_default=True, help="Where experiment folders go.")
@click.option("--experiment-name", default=None, help="The experiment folder's name [time_model_task].")
@click.option("--goodput", multiple=True, help="SLOs in ms, e.g. 'ttft:500 tpot:50'.")
@click.option("--endpoint", type=click.Choice(["chat", "completions"]), default="chat", show_default=True)
@click.option("--additional-request-params", default=None, help='JSON sampling parameters, e.g. {"temperature": 0}.')
@click.option("--server-name", default=None, help="A label for the server (used in plots).")
@click.option("--seed", type=int, default=0, show_default=True)
def run_command(**opts: Any) -> None:
    """Run a benchmark: one run per (scenario, users); results as JSON in an experiment folder."""
    from .config import BenchmarkConfig
    from .report import summary_table
    from .runner import Benchmark

    server_info = {"name": opts["server_name"]} if opts["server_name"] else {}
    try:
        config = BenchmarkConfig(
            api_backend=opts["api_backend"],
            api_base=opts["api_base"],
            api_key=opts["api_key"],
            api_model_name=opts["model"],
            task=opts["task"],
            dataset_name=opts["dataset"],
            traffic_scenario=list(opts["traffic_scenario"]) or None,
            num_users=_users(opts["num_users"]),
            max_time_per_run=opts["max_time_per_run"],
            max_requests_per_run=opts["max_requests_per_run"],
            spawn_rate=opts["spawn_rate"],
            request_rate=opts["request_rate"],
            output_dir=opts["output_dir"],
            experiment_name=opts["experiment_name"],
            goodput=_goodput(opts["goodput"]),
            endpoint=opts["endpoint"],
            additional_sampling_params=_json_object(opts["additional_request_params"], "--additional-request-params"),
            server_info=server_info,
            seed=opts["seed"],
        )
        bars: dict[int, Any] = {}
        shown: dict[int, int] = {}

        def progress(event: dict[str, Any]) -> None:
            index = event["run_index"]
            target = event["requests_target"]
            if index not in bars:
                for old in bars.values():
                    old.render_finish()
                label = f"run {index + 1}/{event['runs_total']} {event['scenario']} users={event['num_users']}"
                length = target if target else max(1, int(event["max_time"]))
                bars[index] = click.progressbar(length=length, label=label, file=sys.stderr)
                shown[index] = 0
            now = event["completed"] + event["errors"] if target else int(event["elapsed"])
            bar = bars[index]
            bar.update(max(0, min(bar.length, now) - shown[index]))
            shown[index] = min(bar.length, now)

        result = Benchmark(config, on_progress=progress).run()
        for bar in bars.values():
            bar.render_finish()
    except BenchError as exc:
        _fail(exc)
        return
    click.echo(summary_table(result.runs))
    click.echo(f"token counts: {result.benchmark_info['token_counting']}")
    click.echo(f"experiment: {result.experiment_dir}")


@bench.command("excel")
@click.option("--experiment-dir", required=True, help="An experiment folder written by 'bench run'.")
@click.option("--output-file", required=True, help="The .xlsx to write.")
def excel_command(experiment_dir: str, output_file: str) -> None:
    """Export an experiment to Excel: a Summary sheet and one sheet per run."""
    from .report import write_excel

    try:
        click.echo(f"wrote {write_excel(experiment_dir, output_file)}")
    except BenchError as exc:
        _fail(exc)


@bench.command("plot")
@click.option("--experiment-dirs", required=True, multiple=True, help="Experiment folders; several overlay.")
@click.option("--output-file", required=True, help="The .png to write.")
@click.argument("more_dirs", nargs=-1)
def plot_command(experiment_dirs: tuple[str, ...], output_file: str, more_dirs: tuple[str, ...]) -> None:
    """Plot experiments in a 2x4 grid (throughput, latency percentiles, TPOT, errors…).

    ``--experiment-dirs A B`` and ``--experiment-dirs A --experiment-dirs B`` both overlay A and B.
    """
    from .plot import plot_experiments

    folders = [part for value in (*experiment_dirs, *more_dirs) for part in value.split(",") if part]
    try:
        click.echo(f"wrote {plot_experiments(folders, output_file)}")
    except BenchError as exc:
        _fail(exc)
