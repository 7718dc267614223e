"""Load time, memory and decode speed of the embedded models on this machine.

Usage: ``.venv/bin/python scripts/measure_backends.py [--data-dir DIR] [--tokens N] [--runs N]``.
Decode speed is (completion tokens - 1) / (generation time - time to first token), the
median of ``--runs`` greedy generations. Numbers from a shared machine are noisy: compare
ratios taken in one run.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import psutil

from llama_gpu import InferenceRequest, Kernel, Settings

GENERATIVE = ("qwen2.5-coder-0.5b-instruct", "gemma-3-270m")
EMBEDDING = "all-minilm-l6-v2"


def main() -> None:
    """Measure each embedded model and print one line per model."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=tempfile.mkdtemp(prefix="llama-gpu-measure-"))
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    settings = Settings.create(data_dir=args.data_dir, default_model="echo", preload=False, autoload_plugins=False)
    kernel = Kernel(settings).start()
    process = psutil.Process()
    try:
        for model_id in GENERATIVE:
            rss = process.memory_info().rss
            start = time.perf_counter()
            kernel.load_model(model_id)
            first = time.perf_counter() - start
            kernel.unload_model(model_id)
            start = time.perf_counter()
            info = kernel.load_model(model_id)
            again = time.perf_counter() - start
            grown = process.memory_info().rss - rss
            rates = []
            for _ in range(args.runs):
                request = InferenceRequest(
                    prompt="Write a long story about a dragon.", model=model_id, temperature=0, max_tokens=args.tokens
                )
                response = kernel.complete(request)
                decode = response.inference_time - (response.time_to_first_token or 0.0)
                rates.append((response.completion_tokens - 1) / decode)
            print(
                f"{model_id}: first load {first:.2f}s (incl. assembly), reload {again:.2f}s, "
                f"model memory {info['memory_usage'] / 2**20:.0f} MiB, RSS +{grown / 2**20:.0f} MiB, "
                f"decode {statistics.median(rates):.1f} tok/s (median of {args.runs}, {args.tokens} tokens, greedy)"
            )
            kernel.unload_model(model_id)
        start = time.perf_counter()
        info = kernel.load_model(EMBEDDING)
        load = time.perf_counter() - start
        texts = [f"sentence number {i} about cats and dogs" for i in range(256)]
        kernel.embed(EMBEDDING, texts[:8])
        start = time.perf_counter()
        kernel.embed(EMBEDDING, texts)
        print(
            f"{EMBEDDING}: load {load:.2f}s, model memory {info['memory_usage'] / 2**20:.0f} MiB, "
            f"{len(texts) / (time.perf_counter() - start):.0f} sentences/s (batch of 256)"
        )
    finally:
        kernel.stop()


if __name__ == "__main__":
    main()
