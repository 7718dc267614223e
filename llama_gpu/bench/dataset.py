"""Prompt datasets: Shakespeare's sonnets shipped with the package, or a file of one's own.

A ``.txt`` file holds one prompt per line (blank lines are skipped); a ``.jsonl`` file one
JSON object per line with a string ``"prompt"``. Prompts of about a requested number of
input tokens are built by joining the dataset's lines, as vLLM's sonnet dataset does.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .errors import DatasetError

SONNETS = "sonnets"
PREFIX = "Pick as many lines as you can from these poem lines:\n"
_ROMAN = re.compile(r"^[IVXLCDM]+$")


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate: about four characters per token (at least one per word)."""
    return max(len(text.split()), round(len(text) / 4)) if text else 0


@dataclass
class Dataset:
    """The prompts of a dataset; ``lines`` is the pool long prompts are built from."""

    name: str
    prompts: list[str]

    @property
    def lines(self) -> list[str]:
        """The pool of text lines."""
        return self.prompts

    def pick(self, rng: random.Random) -> str:
        """One prompt as written in the dataset."""
        return rng.choice(self.prompts)

    def build(self, input_tokens: int, rng: random.Random) -> str:
        """A prompt of about ``input_tokens`` tokens (by :func:`estimate_tokens`) from random lines."""
        prefix = PREFIX if input_tokens > 2 * estimate_tokens(PREFIX) else ""
        parts, budget = [prefix] if prefix else [], input_tokens - estimate_tokens(prefix)
        while budget > 0:
            line = rng.choice(self.prompts)
            cost = estimate_tokens(line)
            if cost > budget:
                words = line.split()
                line = " ".join(words[: max(1, min(len(words), budget))])
                while estimate_tokens(line) > budget and " " in line:
                    line = line.rsplit(" ", 1)[0]
                cost = budget
            parts.append(line + "\n")
            budget -= cost
        return "".join(parts).rstrip("\n")


def load_dataset(name: str | None) -> Dataset:
    """The sonnets (``None`` or ``"sonnets"``) or the prompts of a ``.txt``/``.jsonl`` file."""
    if name in (None, SONNETS):
        text = resources.files("llama_gpu.bench").joinpath("data/sonnets.txt").read_text(encoding="utf-8")
        lines = [line.strip() for line in text.splitlines()]
        return Dataset(SONNETS, [line for line in lines if line and not _ROMAN.match(line)])
    path = Path(name)
    if not path.is_file():
        raise DatasetError(f"dataset file {name!r} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"dataset file {name!r} cannot be read: {exc}") from exc
    if path.suffix == ".txt":
        prompts = [line.strip() for line in text.splitlines() if line.strip()]
    elif path.suffix == ".jsonl":
        prompts = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{name}: line {number} is not JSON: {exc.msg}") from exc
            if not isinstance(item, dict) or not isinstance(item.get("prompt"), str) or not item["prompt"].strip():
                raise DatasetError(f'{name}: line {number} needs a non-empty string "prompt"')
            prompts.append(item["prompt"])
    else:
        raise DatasetError(f"dataset file {name!r}: use a .txt (one prompt per line) or .jsonl file")
    if not prompts:
        raise DatasetError(f"dataset file {name!r} has no prompt")
    return Dataset(path.name, prompts)
