"""Engine benchmark: llama.cpp's own C++ server and batched decoding beside LLaMA GPU, in one run.

Usage: ``make bench-engine`` or ``.venv/bin/python benchmarks/engine.py [--runs 3] [--tokens 128]
[--threads 2] [--parts batched-bench,llama-server,serve,production,overload] [--out docs/benchmarks.md]``
(needs ``pip install -e '.[gguf,models,bench]'``, a C++ compiler, cmake and ninja).

On one machine and one model file (Qwen2.5-Coder-0.5B Q4_K_M), with the same threads:

- ``batched-bench``: llama.cpp's ``llama-batched-bench``, B=1 and B=8 (step time of a batch);
- ``llama-server``: llama.cpp's C++ server, ``-np 8 -c 8192``;
- ``serve`` / ``production``: ``llama-gpu serve`` (Werkzeug) and ``llama-gpu serve --production`` (gunicorn);
- ``overload``: 503 answers from a full queue; ``raw`` / ``llama-cpp-python``: optional, in-process
  decoding through the binding and ``python -m llama_cpp.server``.

Both llama.cpp tools are built by ``benchmarks/llamacpp_build.py`` from the llama.cpp sources
inside the pinned llama-cpp-python sdist (cached). The servers run at once and their rounds
are interleaved (c1 then c8, server after server, ``--runs`` times): streaming chat, 128
output tokens, temperature 0, ``repeat_penalty`` 1.0, 8 different prompts. Figures are medians
over rounds: aggregate output tokens/s, time to first token (median and max over requests),
per-token latency. Idle RSS is read when a server first answers ready, with the default model
loaded. The table goes into ``--out`` between markers. This is a benchmark, not a test: quote
ratios inside one run, the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

QWEN = "qwen2.5-coder-0.5b-instruct"
MESSAGE = "Write a long story about a dragon who learns to code."
MESSAGES = [
    MESSAGE,
    "Explain how a hash map works, with an example in Python.",
    "Write a poem about the sea at night, in twelve stanzas.",
    "Describe the history of the printing press in detail.",
    "Write a tutorial on binary search trees with code in C.",
    "Tell a long fairy tale about a clockmaker and a fox.",
    "Explain TCP congestion control to a new engineer.",
    "Write a detailed recipe for bread, step by step.",
]
PARTS = ("batched-bench", "llama-server", "serve", "production", "overload")
OPTIONAL_PARTS = ("raw", "llama-cpp-python")
SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
MARK_BEGIN, MARK_END = "<!-- engine-benchmark:begin -->", "<!-- engine-benchmark:end -->"


def model_path(data_dir: str) -> str:
    """The Qwen GGUF, assembled from its packages by the embedded-models plugin."""
    from llama_gpu import Kernel, Settings

    kernel = Kernel(Settings.create(data_dir=data_dir, preload=False, autoload_plugins=False)).start()
    try:
        spec = kernel.registry.resolve(QWEN)
        assert spec.locate is not None
        return spec.locate(lambda _fraction: None)
    finally:
        kernel.stop()


# ----------------------------------------------------------------------------- (a) raw decoding
def raw_decode(path: str, sequences: int, tokens: int, threads: int) -> dict[str, float]:
    """Greedy decoding of ``sequences`` chat prompts in one batch, ``tokens`` each, end of text ignored."""
    import llama_cpp as lib

    vocab_model = lib.Llama(path, n_ctx=64, n_threads=threads, verbose=False)  # weights and vocabulary
    prompt = f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{MESSAGE}<|im_end|>\n<|im_start|>assistant\n"
    prompt_ids = vocab_model.tokenize(prompt.encode(), add_bos=False, special=True)
    model = vocab_model.model
    params = lib.llama_context_default_params()
    params.n_ctx, params.n_batch, params.n_ubatch = 4096 * sequences, 512, 512
    params.n_seq_max, params.kv_unified, params.no_perf = sequences, False, True
    params.n_threads = params.n_threads_batch = threads
    params.flash_attn_type = lib.LLAMA_FLASH_ATTN_TYPE_AUTO  # as the engine and llama.cpp by default
    ctx = lib.llama_init_from_model(model, params)
    batch = lib.llama_batch_init(512, 0, 1)
    chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
    lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_greedy())

    def put(n: int, token: int, pos: int, seq: int, logits: bool) -> None:
        batch.token[n], batch.pos[n], batch.n_seq_id[n], batch.logits[n] = token, pos, 1, logits
        batch.seq_id[n][0] = seq

    try:
        start = time.perf_counter()
        n = 0
        rows = []
        for seq in range(sequences):
            for pos, token in enumerate(prompt_ids):
                put(n, token, pos, seq, pos == len(prompt_ids) - 1)
                n += 1
            rows.append(n - 1)
        batch.n_tokens = n
        assert lib.llama_decode(ctx, batch) == 0
        last = [lib.llama_sampler_sample(chain, ctx, row) for row in rows]
        ttft = time.perf_counter() - start
        for step in range(tokens - 1):
            for seq in range(sequences):
                put(seq, last[seq], len(prompt_ids) + step, seq, True)
            batch.n_tokens = sequences
            assert lib.llama_decode(ctx, batch) == 0
            last = [lib.llama_sampler_sample(chain, ctx, seq) for seq in range(sequences)]
        total = time.perf_counter() - start
    finally:
        lib.llama_sampler_free(chain)
        lib.llama_batch_free(batch)
        lib.llama_free(ctx)
        vocab_model.close()
    return {
        "tokens_per_second": sequences * tokens / total,
        "ttft_median": ttft,
        "ttft_max": ttft,
        "token_latency": (total - ttft) / (tokens - 1),
        "tokens": float(tokens),
    }


# ----------------------------------------------------------------------------- servers
def free_port() -> int:
    """A port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def server(command: list[str], ready: str, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """Run a server until its ``ready`` URL answers 200; stop it afterwards."""
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in the finally below, after the server stops
    process = subprocess.Popen(command, env={**os.environ, **(env or {})}, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 300
        while True:
            if process.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"{command[:3]} exited: {log.read().decode(errors='replace')[-2000:]}")
            try:
                if requests.get(ready, timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{command[:3]} not ready in 300 s")
            time.sleep(0.5)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def chat_stream(base: str, model: str, tokens: int, message: str = MESSAGE) -> dict[str, Any]:
    """One streaming chat; arrival time of each content chunk."""
    body = {
        "model": model,
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": message}],
        "max_tokens": tokens,
        "temperature": 0,
        "repeat_penalty": 1.0,
        "stream": True,
    }
    start = time.perf_counter()
    times: list[float] = []
    with requests.post(f"{base}/v1/chat/completions", json=body, stream=True, timeout=600) as response:
        response.raise_for_status()
        for line in response.iter_lines(decode_unicode=True):
            if not line or not line.startswith("data: ") or line == "data: [DONE]":
                continue
            delta = json.loads(line[6:])["choices"][0].get("delta", {})
            if delta.get("content"):
                times.append(time.perf_counter())
    return {"start": start, "times": times}


def load_round(base: str, model: str, concurrency: int, tokens: int) -> dict[str, float]:
    """``concurrency`` clients at once; aggregate throughput and latency figures."""
    results: list[dict[str, Any]] = [{} for _ in range(concurrency)]
    barrier = threading.Barrier(concurrency)

    def client(i: int) -> None:
        barrier.wait()
        results[i] = chat_stream(base, model, tokens, MESSAGES[i % len(MESSAGES)])

    threads = [threading.Thread(target=client, args=(i,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    start = min(r["start"] for r in results)
    end = max(r["times"][-1] for r in results)
    produced = sum(len(r["times"]) for r in results)
    ttfts = [r["times"][0] - r["start"] for r in results]
    gaps = [(r["times"][-1] - r["times"][0]) / (len(r["times"]) - 1) for r in results if len(r["times"]) > 1]
    return {
        "tokens_per_second": produced / (end - start),
        "ttft_median": statistics.median(ttfts),
        "ttft_max": max(ttfts),
        "token_latency": statistics.median(gaps),
        "tokens": produced / concurrency,
    }


def median_of(rounds: list[dict[str, float]]) -> dict[str, float]:
    """Each figure's median over rounds."""
    return {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}


def overload_probe(base: str, model: str, probes: int = 20) -> dict[str, float]:
    """Time 503 answers while the only slot is taken and nothing may wait."""
    body = {"model": model, "prompt": "Write a long story about a dragon:", "max_tokens": 2000, "stream": True}
    body["stop"] = ["never-appears-in-the-story"]
    busy = requests.post(f"{base}/v1/completions", json=body, stream=True, timeout=600)
    next(busy.iter_lines())
    latencies = []
    for _ in range(probes):
        start = time.perf_counter()
        # one token: if the busy request has ended (end of text) this one is served, and quickly
        response = requests.post(f"{base}/v1/completions", json={**body, "stream": False, "max_tokens": 1}, timeout=60)
        if response.status_code != 503:  # the busy request ended (end of text): its slot is free
            break
        latencies.append(time.perf_counter() - start)
    busy.close()
    assert len(latencies) >= 5, latencies
    return {"median_ms": statistics.median(latencies) * 1000, "max_ms": max(latencies) * 1000, "n": len(latencies)}


# ----------------------------------------------------------------------------- llama.cpp tools
def batched_bench(
    binary: Path, path: str, prompt_tokens: int, tokens: int, threads: int, flash_attn: str = "auto"
) -> dict[int, dict[str, float]]:
    """``llama-batched-bench`` at B=1 and B=8: decode tokens/s and the time of one decode step, per batch size."""
    command = [str(binary), "-m", path, "-c", "8192", "-b", "512", "-ub", "512", "-npp", str(prompt_tokens)]
    command += ["-ntg", str(tokens), "-npl", "1,8", "-t", str(threads), "-tb", str(threads), "--output-format", "jsonl"]
    command += ["-fa", flash_attn]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rows: dict[int, dict[str, float]] = {}
    for line in out.splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            rows[int(r["pl"])] = {
                "tokens_per_second": float(r["speed_tg"]),
                "step_ms": float(r["t_tg"]) / int(r["tg"]) * 1000,
                "prompt_tokens_per_second": float(r["speed_pp"]),
            }
    return rows


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children, MB."""
    import psutil

    root = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]) / 2**20


# ----------------------------------------------------------------------------- report
def row(name: str, figures: dict[str, float]) -> str:
    """One line of the results table."""
    return (
        f"| {name} | {figures['tokens_per_second']:.1f} | {figures['ttft_median'] * 1000:.0f} | "
        f"{figures['ttft_max'] * 1000:.0f} | {figures['token_latency'] * 1000:.1f} | {figures['tokens']:.0f} |"
    )


def target_rows(figures: dict[str, dict[str, float]], bench: dict[int, dict[str, float]]) -> list[str]:
    """The issue's targets as ratios measured in this run (``n/a`` where a part did not run)."""
    out = []

    def ratio(label: str, a: str, b: str, key: str, goal: str, invert: bool = False) -> None:
        if a in figures and b in figures:
            x, y = figures[a][key], figures[b][key]
            value = y / x if invert else x / y
            out.append(f"| {label} | {value:.2f} | {goal} |")

    for ours in ("serve", "serve --production"):
        ratio(
            f"`{ours}` c1 / `llama-server` c1, tokens/s", f"{ours} c1", "llama-server c1", "tokens_per_second", "≥ 1.05"
        )
        if 1 in bench and f"{ours} c1" in figures:
            value = figures[f"{ours} c1"]["tokens_per_second"] / bench[1]["tokens_per_second"]
            out.append(f"| `{ours}` c1 / `llama-batched-bench` B=1 decode, tokens/s | {value:.2f} | ≥ 0.9 |")
        ratio(
            f"`{ours}` c8 / `llama-server` c8, tokens/s", f"{ours} c8", "llama-server c8", "tokens_per_second", "≥ 1.0"
        )
        ratio(
            f"`llama-server` c8 TTFT median / `{ours}`'s", f"{ours} c8", "llama-server c8", "ttft_median", "≥ 1.0",
            invert=True,
        )  # fmt: skip
    ratio(
        "`serve --production` c8 / `serve` c8, tokens/s",
        "serve --production c8",
        "serve c8",
        "tokens_per_second",
        "≥ 1.0",
    )
    return out


def main() -> None:
    """Run the chosen parts, print the table and write it into ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--flash-attn",
        choices=("auto", "off"),
        default="auto",
        help="every part (off: for a build that crashes with it)",
    )
    parser.add_argument("--parts", default=",".join(PARTS), help=f"of {', '.join(PARTS + OPTIONAL_PARTS)}")
    parser.add_argument("--data-dir", default=tempfile.mkdtemp(prefix="llama-gpu-bench-"))
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"))
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    if parts - set(PARTS + OPTIONAL_PARTS):
        parser.error(f"unknown parts: {sorted(parts - set(PARTS + OPTIONAL_PARTS))}")
    path = model_path(args.data_dir)
    figures: dict[str, dict[str, float]] = {}
    notes: list[str] = []
    bench: dict[int, dict[str, float]] = {}
    bin_dir = None
    if parts & {"batched-bench", "llama-server"}:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from llamacpp_build import build

        bin_dir = build()

    if "raw" in parts:
        raw_decode(path, 1, 8, args.threads)  # warm-up: map the weights
        figures["raw c1"] = median_of([raw_decode(path, 1, args.tokens, args.threads) for _ in range(args.runs)])
        figures["raw c8"] = median_of([raw_decode(path, 8, args.tokens, args.threads) for _ in range(args.runs)])
    if "batched-bench" in parts:
        assert bin_dir is not None
        import llama_cpp

        vocab = llama_cpp.Llama(path, n_ctx=64, vocab_only=True, verbose=False)
        prompt = (
            f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{MESSAGE}<|im_end|>\n<|im_start|>assistant\n"
        )
        prompt_tokens = len(vocab.tokenize(prompt.encode(), add_bos=False, special=True))
        vocab.close()
        bench = batched_bench(
            bin_dir / "llama-batched-bench", path, prompt_tokens, args.tokens, args.threads, args.flash_attn
        )
        print("llama-batched-bench", bench, flush=True)

    servers: dict[str, str] = {}  # name -> base URL
    pids: dict[str, int] = {}
    with contextlib.ExitStack() as stack:
        if "llama-cpp-python" in parts:
            port = free_port()
            command = [sys.executable, "-m", "llama_cpp.server", "--model", path, "--model_alias", QWEN]
            command += ["--n_ctx", "4096", "--n_threads", str(args.threads), "--n_threads_batch", str(args.threads)]
            command += ["--interrupt_requests", "False", "--host", "127.0.0.1", "--port", str(port)]
            stack.enter_context(server(command, f"http://127.0.0.1:{port}/v1/models"))
            servers["llama_cpp.server"] = f"http://127.0.0.1:{port}"
        if "llama-server" in parts:
            assert bin_dir is not None
            port = free_port()
            command = [str(bin_dir / "llama-server"), "-m", path, "-np", "8", "-c", "8192", "-t", str(args.threads)]
            command += ["-tb", str(args.threads), "--host", "127.0.0.1", "--port", str(port), "--no-webui"]
            command += ["-fa", args.flash_attn]
            process = stack.enter_context(server(command, f"http://127.0.0.1:{port}/health"))
            servers["llama-server"] = f"http://127.0.0.1:{port}"
            pids["llama-server"] = process.pid
        for name, flag in (("serve", []), ("serve --production", ["--production"])):
            if (name == "serve" and "serve" not in parts) or (name != "serve" and "production" not in parts):
                continue
            port = free_port()
            data = tempfile.mkdtemp(prefix="llama-gpu-bench-", dir=args.data_dir)
            command = [str(Path(sys.executable).parent / "llama-gpu"), "serve", *flag, "--host", "127.0.0.1"]
            command += ["--port", str(port)]
            env = {
                "LLAMA_GPU_DATA_DIR": data,
                "LLAMA_GPU_MODELS_DIR": str(Path(args.data_dir) / "models"),
                "LLAMA_GPU_PARALLEL": "8",
                "LLAMA_GPU_AUTOLOAD_PLUGINS": "0",
                "LLAMA_GPU_AUTH": "off",  # as llama-server: no keys
            }
            base = f"http://127.0.0.1:{port}"
            process = stack.enter_context(server(command, f"{base}/ready", env))
            time.sleep(2)  # let start-up work settle before reading the idle RSS
            answer = requests.get(f"{base}/api/v1/models/{QWEN}", timeout=30).json()
            model = answer.get("model") or {}
            if not model:
                print(name, answer, flush=True)
            notes.append(
                f"`{name}` idle RSS with the default model ready: {rss_mb(process.pid):.0f} MB "
                f"(model file {os.path.getsize(path) / 2**20:.0f} MB; the engine counts "
                f"{model.get('memory_usage')} for weights and KV cache, "
                f"{(model.get('runtime') or {}).get('kv_cells')} KV cells)."
            )
            settings: dict[str, Any] = {"n_threads": args.threads}
            if args.flash_attn == "off":
                settings["flash_attn"] = False
            config = {"config": {"settings": settings}}
            requests.put(f"{base}/api/v1/plugins/llamacpp/config", json=config, timeout=30).raise_for_status()
            requests.delete(f"{base}/api/v1/models/{QWEN}/unload", timeout=60).raise_for_status()
            requests.post(f"{base}/api/v1/models/{QWEN}/load", json={}, timeout=300).raise_for_status()
            servers[name], pids[name] = base, process.pid
        if "llama-server" in pids:
            notes.append(f"`llama-server` idle RSS: {rss_mb(pids['llama-server']):.0f} MB.")
        for base in servers.values():
            load_round(base, QWEN, 1, 8)  # warm-up
        rounds: dict[str, list[dict[str, float]]] = {}
        for _ in range(args.runs):  # interleaved: every server sees the same noise
            for c in (1, 8):
                for name, base in servers.items():
                    rounds.setdefault(f"{name} c{c}", []).append(load_round(base, QWEN, c, args.tokens))
        for key in sorted(rounds, key=lambda k: (k[-1], list(servers).index(k.rsplit(" ", 1)[0]))):
            figures[key] = median_of(rounds[key])
        for name in ("serve", "serve --production"):
            if name in servers:
                engine = requests.get(f"{servers[name]}/api/v1/models/{QWEN}", timeout=30).json()["model"]["engine"]
                notes.append(
                    f"`{name}` engine: step {engine['step_ms']} ms median, of which outside `llama_decode` "
                    f"{engine['step_overhead_ms']} ms; mean batch {engine['batch_size']} sequences."
                )
    print(json.dumps(figures, indent=1), flush=True)

    if "overload" in parts:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        command = [str(Path(sys.executable).parent / "llama-gpu"), "serve", "--host", "127.0.0.1", "--port", str(port)]
        env = {
            "LLAMA_GPU_DATA_DIR": tempfile.mkdtemp(prefix="llama-gpu-bench-", dir=args.data_dir),
            "LLAMA_GPU_MODELS_DIR": str(Path(args.data_dir) / "models"),
            "LLAMA_GPU_AUTOLOAD_PLUGINS": "0",
            "LLAMA_GPU_AUTH": "off",  # as llama-server: no keys
            "LLAMA_GPU_PARALLEL": "1",
            "LLAMA_GPU_MAX_QUEUE": "0",
        }
        with server(command, f"{base}/ready", env):
            overload = overload_probe(base, QWEN)
        notes.append(
            f"A full queue answers 503 in {overload['median_ms']:.1f} ms median, {overload['max_ms']:.1f} ms max "
            f"({overload['n']:.0f} requests while the only slot is busy, `LLAMA_GPU_PARALLEL=1 LLAMA_GPU_MAX_QUEUE=0`; "
            "target < 50 ms)."
        )

    lines = [
        f"Qwen2.5-Coder-0.5B-Instruct Q4_K_M, {args.threads} threads, {args.tokens} output tokens, temperature 0, "
        f"8 different prompts, streaming chat, median of {args.runs} interleaved rounds, flash attention "
        f"{args.flash_attn} everywhere; "
        f"`python benchmarks/engine.py --parts {','.join(sorted(parts))}` on {os.cpu_count()} cores.",
        "",
        "| run | output tokens/s | TTFT median (ms) | TTFT max (ms) | per-token latency (ms) | tokens/request |",
        "|---|---|---|---|---|---|",
        *(row(name, f) for name, f in figures.items()),
    ]
    if bench:
        lines += [
            "",
            "| `llama-batched-bench` | decode tokens/s | step (ms) | prompt tokens/s |",
            "|---|---|---|---|",
            *(
                f"| B={b} | {r['tokens_per_second']:.1f} | {r['step_ms']:.1f} | {r['prompt_tokens_per_second']:.1f} |"
                for b, r in sorted(bench.items())
            ),
        ]
    targets = target_rows(figures, bench)
    if targets:
        lines += ["", "| target | measured | goal |", "|---|---|---|", *targets]
    lines += ["", *(f"- {n}" for n in notes)]
    table = "\n".join(lines)
    print(table)
    out = Path(args.out)
    text = out.read_text() if out.exists() else f"# Benchmarks\n\n{MARK_BEGIN}\n{MARK_END}\n"
    head, _, rest = text.partition(MARK_BEGIN)
    _, _, tail = rest.partition(MARK_END)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"{head}{MARK_BEGIN}\n{table}\n{MARK_END}{tail}")


if __name__ == "__main__":
    main()
