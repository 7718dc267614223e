"""Token sampling, per-request decoding state and the KV-cache decode loop of the PyTorch backend.

The sampler follows llama.cpp's chain: penalties over the last :data:`PENALTY_WINDOW`
tokens (prompt included), then ``top_k``, ``top_p``, ``min_p`` on the untempered
distribution, then the temperature; a temperature of 0 is greedy. Each request owns a
``torch.Generator`` seeded with ``request.seed``, so a seed reproduces a completion.
torch is imported inside functions: the server starts without it.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ...kernel.backend import BatchRunner, GeneratedToken, Sequence
from ...kernel.types import InferenceRequest
from .text import StopBuffer

if TYPE_CHECKING:
    import torch

    from .torch import TorchModel

#: How many of the latest tokens the repetition, presence and frequency penalties look at.
PENALTY_WINDOW = 64


class Sampler:
    """Picks the next token of one request from its logits."""

    def __init__(self, request: InferenceRequest) -> None:
        import torch

        self.request = request
        seed = request.seed if request.seed is not None else random.randrange(2**63)
        self.generator = torch.Generator().manual_seed(int(seed) % 2**64)

    def penalize(self, logits: torch.Tensor, history: list[int]) -> torch.Tensor:
        """Apply repetition (divide positive / multiply negative), presence and frequency penalties."""
        import torch

        r = self.request
        if not history or (r.repeat_penalty == 1.0 and not r.presence_penalty and not r.frequency_penalty):
            return logits
        ids, counts = torch.tensor(history[-PENALTY_WINDOW:]).unique(return_counts=True)
        picked = logits[ids]
        if r.repeat_penalty != 1.0:
            picked = torch.where(picked > 0, picked / r.repeat_penalty, picked * r.repeat_penalty)
        picked = picked - counts.to(picked.dtype) * r.frequency_penalty - r.presence_penalty
        logits = logits.clone()
        logits[ids] = picked
        return logits

    def sample(self, logits: torch.Tensor, history: list[int]) -> int:
        """The next token id from one row of float32 CPU logits and the tokens so far."""
        import torch

        r = self.request
        logits = self.penalize(logits, history)
        if r.temperature <= 0:
            return int(torch.argmax(logits))
        if r.top_k > 0 and r.top_k < logits.numel():
            kth = torch.topk(logits, r.top_k).values[-1]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if r.top_p < 1.0:
            ordered, order = torch.sort(logits, descending=True)
            probs = torch.softmax(ordered, dim=-1)
            drop = probs.cumsum(dim=-1) - probs > r.top_p  # keep the token that crosses top_p
            logits = logits.index_fill(0, order[drop], float("-inf"))
        if r.min_p > 0.0:
            probs = torch.softmax(logits, dim=-1)
            logits = logits.masked_fill(probs < r.min_p * probs.max(), float("-inf"))
        probs = torch.softmax(logits / r.temperature, dim=-1)
        return int(torch.multinomial(probs, 1, generator=self.generator))


def logprobs_of(logits: torch.Tensor, token: int, top_n: int, piece: Any) -> tuple[float, dict[str, float]]:
    """The chosen token's log-probability under the model and the ``top_n`` best alternatives."""
    import torch

    logprobs = torch.log_softmax(logits.double(), dim=-1)
    top: dict[str, float] = {}
    if top_n > 0:
        values, ids = torch.topk(logprobs, min(top_n, logprobs.numel()))
        top = {piece(int(i)): float(v) for v, i in zip(values, ids, strict=True)}
    return float(logprobs[token]), top


class IncrementalText:
    """Turns a growing list of token ids into text, one new suffix per token.

    It decodes a short window (a few tokens of context plus the new ones) rather than the
    whole sequence, so that sentencepiece spaces and multi-byte characters come out right;
    text ending in an incomplete UTF-8 sequence (U+FFFD) waits for the next token.
    """

    def __init__(self, tokenizer: Any, prompt: list[int], context: int = 5) -> None:
        self._tokenizer = tokenizer
        self.ids = list(prompt)
        self._read = len(self.ids)
        self._prefix = max(0, self._read - context)

    def _decode(self, ids: list[int]) -> str:
        return str(self._tokenizer.decode(ids, skip_special_tokens=True))

    def push(self, token: int) -> str:
        """Add ``token``; return the text it completes (possibly empty)."""
        self.ids.append(token)
        return self._advance(final=False)

    def flush(self) -> str:
        """Whatever is still held back, incomplete characters included."""
        return self._advance(final=True)

    def _advance(self, final: bool) -> str:
        before = self._decode(self.ids[self._prefix : self._read])
        after = self._decode(self.ids[self._prefix :])
        if len(after) <= len(before) or (after.endswith("\ufffd") and not final):
            return ""
        self._prefix, self._read = self._read, len(self.ids)
        return after[len(before) :]


class RowDecoder:
    """The decoding state of one request (one row of a batch): sampler, text, stop strings."""

    def __init__(
        self, request: InferenceRequest, prompt: list[int], tokenizer: Any, eos_ids: set[int], pad_id: int
    ) -> None:
        self.request, self.eos_ids = request, eos_ids
        self.sampler = Sampler(request)
        self.text = IncrementalText(tokenizer, prompt)
        self.stops = StopBuffer(request.stop)
        self._piece = lambda token: str(tokenizer.decode([token]))
        #: Tokens produced, whether the row has ended, and the token to feed next.
        self.produced, self.done, self.last = 0, False, pad_id

    def finish(self, reason: str) -> GeneratedToken:
        """The closing marker: the text still held back (when no stop string was hit) and the reason."""
        self.done = True
        text, stopped = self.stops.push(self.text.flush())
        return GeneratedToken(text=text if stopped else text + self.stops.flush(), finish_reason=reason)

    def step(self, logits: torch.Tensor) -> list[GeneratedToken]:
        """Sample from this row's logits; return the token and, when the row ends, the marker."""
        token = self.sampler.sample(logits, self.text.ids)
        if token in self.eos_ids:
            return [self.finish("stop")]
        self.last = token
        self.produced += 1
        text, stopped = self.stops.push(self.text.push(token))
        logprob, top = None, None
        if self.request.logprobs is not None:
            logprob, top = logprobs_of(logits, token, self.request.logprobs, self._piece)
        out = [GeneratedToken(text=text, token_id=token, logprob=logprob, top_logprobs=top)]
        if stopped:
            self.done = True
            out.append(GeneratedToken(text="", finish_reason="stop"))
        elif self.produced >= self.request.max_tokens:
            out.append(self.finish("length"))
        return out


def decode(
    model: Any, rows: list[RowDecoder], prompts: list[list[int]], pad_id: int, device: str, keep_last: bool
) -> Iterator[list[tuple[int, GeneratedToken]]]:
    """Run ``model`` over left-padded ``prompts``, then one token per step through its KV cache.

    Yields, per forward pass, the ``(row, token)`` pairs it produced, until every row has
    ended (a row marked ``done`` from outside stops being sampled); the caller holds the
    model's lock and ``torch.inference_mode()``.
    """
    import torch

    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    padded = bool((mask == 0).any())
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    extra = {"logits_to_keep": 1} if keep_last else {}
    cache = None
    ended = [(n, row.finish("length")) for n, row in enumerate(rows) if row.request.max_tokens <= 0]
    if ended:
        yield ended
    while not all(row.done for row in rows):
        out = model(
            input_ids=ids,
            attention_mask=mask if padded else None,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            **extra,
        )
        cache, logits = out.past_key_values, out.logits[:, -1, :].float().cpu()
        del out
        yield [(n, token) for n, row in enumerate(rows) if not row.done for token in row.step(logits[n])]
        ids = torch.tensor([row.last for row in rows], device=device).unsqueeze(1)
        mask = torch.cat([mask, torch.ones_like(ids)], dim=1)
        positions = positions[:, -1:] + 1


class AlignedBatchRunner(BatchRunner):
    """Step-aligned batches for the torch backend.

    The requests admitted while the model is idle decode together in one left-padded batch
    over a shared KV cache; a row that ends (or is dropped) stops being sampled at once, and
    new requests wait until every row of the batch has ended. (Continuous admission would
    mean re-padding the cache of running rows on every join; not done here.)
    """

    def __init__(self, model: TorchModel, parallel: int) -> None:
        self._model = model
        self.max_sequences = parallel
        self._seqs: list[Sequence] = []
        self._rows: list[RowDecoder] = []
        self._steps: Iterator[list[tuple[int, GeneratedToken]]] | None = None

    def prepare(self, seq: Sequence) -> None:
        """Refuse what the model cannot serve; tokenize."""
        seq.prompt = self._model.check(seq.request)

    def can_admit(self, active: int) -> bool:
        """Only while no batch is decoding."""
        return self._steps is None and active < self.max_sequences

    def admit(self, seq: Sequence) -> None:
        """Join the batch that starts at the next step."""
        self._seqs.append(seq)

    def step(self) -> list[tuple[Sequence, list[GeneratedToken]]]:
        """One forward pass of the batch (the first one starts it)."""
        if self._steps is None:
            if not self._seqs:
                return []
            prompts = [seq.prompt or [] for seq in self._seqs]
            self._rows = self._model.row_decoders([s.request for s in self._seqs], prompts)
            self._steps = self._model.decode_rows(self._rows, prompts)
        seqs = self._seqs
        pairs = next(self._steps, None)
        grouped: dict[int, list[GeneratedToken]] = {}
        for n, token in pairs or []:
            grouped.setdefault(n, []).append(token)
        if pairs is None or all(row.done for row in self._rows):
            self._end()
        return [(seqs[n], tokens) for n, tokens in grouped.items()]

    def drop(self, seq: Sequence) -> None:
        """Stop sampling ``seq``'s row; the batch ends when no row is left."""
        if seq in self._seqs and self._rows:
            self._rows[self._seqs.index(seq)].done = True
            if all(row.done for row in self._rows):
                self._end()
        elif seq in self._seqs:
            self._seqs.remove(seq)

    def _end(self) -> None:
        if self._steps is not None:
            self._steps.close()  # leaves the model's lock and inference mode
        self._steps, self._rows, self._seqs = None, [], []

    def close(self) -> None:
        """End any running batch."""
        self._end()
