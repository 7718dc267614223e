"""Continuous batching for llama.cpp: several sequences in one context through ``llama_batch``.

The runner owns a second context on the model's weights with ``parallel`` sequences in one
unified KV cache of ``kv_size`` cells (default 8192, at most ``parallel * n_ctx``): a sequence
may grow to ``n_ctx`` cells, and the cache is sized to what is used rather than to every
sequence at its longest. A sequence's prompt is fed only once its cells (prompt plus
``max_tokens``) are free, so a decode never runs out of cells: until then it waits, and
cached prefixes of finished sequences are dropped to make room.

Each step builds one batch: the next token of every decoding sequence, then prompt chunks
of newcomers within ``n_batch`` tokens in all, so running streams keep flowing
while a long prompt is processed over several steps. A finished sequence's cells stay in
its slot: a newcomer takes the free slot whose cells share the longest prefix with its
prompt and decodes only the rest (``prefix_cache``; off for sliding-window models, whose
caches cannot drop a suffix). Each sequence has its own sampler
chain (penalties, top-k, top-p, min-p, temperature, a seeded distribution, a JSON grammar)
and a stop buffer; a finished or dropped sequence's cells are removed at once.

Only the engine thread calls ``admit``/``step``/``drop``; ``prepare`` runs in request threads
and only tokenizes (llama.cpp's tokenizer reads the vocabulary and is safe to share).
"""

from __future__ import annotations

import ctypes
import dataclasses
import random
import time
from typing import TYPE_CHECKING, Any

from ...kernel.backend import BatchRunner, GeneratedToken, Sequence
from ...kernel.errors import InferenceFailed, InvalidInput, ModelLoadFailed
from .text import StopBuffer

if TYPE_CHECKING:
    from .llamacpp import LlamaCppModel

#: Latest tokens (prompt included) the repetition, presence and frequency penalties look at.
PENALTY_LAST_N = 64


@dataclasses.dataclass(eq=False)
class _State:
    """One sequence in the context: its cells, sampler and text."""

    slot: int
    sampler: Any
    stops: StopBuffer
    fed: int = 0  # prompt tokens in the cache
    n_past: int = 0  # cells the sequence holds
    produced: int = 0
    last: int = -1  # sampled token to feed in the next step
    row: int = -1  # this step's batch row whose logits it samples
    reserve: int = 0  # cells it may come to hold (prompt plus max_tokens)
    started: bool = False  # its cells are reserved and its prompt is being fed


class LlamaBatchRunner(BatchRunner):
    """Decodes up to ``parallel`` sequences of a :class:`LlamaCppModel` together."""

    def __init__(self, model: LlamaCppModel, parallel: int, params: dict[str, Any]) -> None:
        import llama_cpp

        from .llamacpp import flash_attn_type

        self._lib = llama_cpp
        self._model = model
        self.max_sequences = parallel
        self.n_ctx = params["n_ctx"]
        self.n_batch = max(params["n_batch"], parallel)
        kv_size = params.get("kv_size") or self.n_ctx * parallel
        #: Cells of the unified cache: enough for one sequence at its longest, no more than all at theirs.
        self.kv_cells = max(self.n_ctx, min(int(kv_size), self.n_ctx * parallel))
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = self.kv_cells
        cparams.n_batch = cparams.n_ubatch = self.n_batch
        cparams.n_seq_max = parallel
        cparams.n_threads = cparams.n_threads_batch = params["n_threads"]
        cparams.kv_unified = True
        cparams.no_perf = True
        cparams.flash_attn_type = flash_attn_type(params["flash_attn"])
        llm_model = model.native_model
        self._ctx = llama_cpp.llama_init_from_model(llm_model, cparams)
        if not self._ctx:
            raise ModelLoadFailed(
                f"llama.cpp could not create a context of {parallel} x {self.n_ctx} tokens for {model.spec.id!r}",
                details={"parallel": parallel, "n_ctx": self.n_ctx},
            )
        self._memory = llama_cpp.llama_get_memory(self._ctx)
        self._vocab = llama_cpp.llama_model_get_vocab(llm_model)
        self._n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
        self._batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        self._free = list(range(parallel - 1, -1, -1))
        #: The tokens whose cells each slot holds (kept after a sequence ends, for prefix reuse).
        self._cells: list[list[int]] = [[] for _ in range(parallel)]
        self.prefix_cache = bool(params.get("prefix_cache", True)) and llama_cpp.llama_model_n_swa(llm_model) == 0
        self.reused_tokens = 0
        #: Most cells ever reserved or held at once (never above ``kv_cells``).
        self.peak_cells = 0
        self._active: list[Sequence] = []
        self._piece = ctypes.create_string_buffer(256)
        self._decode_seconds = 0.0
        self._batch_tokens = 0
        n_layer = llama_cpp.llama_model_n_layer(llm_model)
        head_dim = llama_cpp.llama_model_n_embd(llm_model) // max(1, llama_cpp.llama_model_n_head(llm_model))
        #: K and V in f16 for every cell: what the context's cache takes (an upper bound with sliding windows).
        self.kv_bytes = cparams.n_ctx * n_layer * 2 * head_dim * llama_cpp.llama_model_n_head_kv(llm_model) * 2

    # request threads -----------------------------------------------------------------------
    def prepare(self, seq: Sequence) -> None:
        """Tokenize the prompt and check that prompt plus ``max_tokens`` fit one sequence's context."""
        request = seq.request
        tokens = self._model.prompt_tokens(request)
        if len(tokens) + request.max_tokens > self.n_ctx:
            raise InvalidInput(
                f"prompt ({len(tokens)} tokens) plus max_tokens ({request.max_tokens}) exceeds the context "
                f"of {self.n_ctx} tokens per sequence",
                details={
                    "context_length": self.n_ctx,
                    "prompt_tokens": len(tokens),
                    "max_tokens": request.max_tokens,
                    "parallel": self.max_sequences,
                },
            )
        seq.prompt = tokens

    # engine thread ---------------------------------------------------------------------------
    def admit(self, seq: Sequence) -> None:
        """Give ``seq`` a free sequence id and its own sampler chain."""
        if seq.prompt is None:
            self.prepare(seq)
        assert seq.prompt is not None
        slot, keep = self._slot_for(seq.prompt)
        self._free.remove(slot)
        self._lib.llama_memory_seq_rm(self._memory, slot, keep, -1)
        del self._cells[slot][keep:]
        self.reused_tokens += keep
        state = _State(slot=slot, sampler=self._sampler(seq), stops=StopBuffer(seq.request.stop), fed=keep, n_past=keep)
        state.reserve = len(seq.prompt) + seq.request.max_tokens
        seq.state = state
        self._active.append(seq)

    def _slot_for(self, prompt: list[int]) -> tuple[int, int]:
        """The free slot sharing the longest prefix with ``prompt``, and how many cells to keep."""
        if not self.prefix_cache:
            return self._free[-1], 0
        best, keep = self._free[-1], 0
        for slot in reversed(self._free):
            cells = self._cells[slot]
            n = 0
            limit = min(len(cells), len(prompt) - 1)  # the last prompt token is decoded again for its logits
            while n < limit and cells[n] == prompt[n]:
                n += 1
            if n > keep:
                best, keep = slot, n
        return best, keep

    def _sampler(self, seq: Sequence) -> Any:
        lib, r = self._lib, seq.request
        params = lib.llama_sampler_chain_default_params()
        params.no_perf = True
        chain = lib.llama_sampler_chain_init(params)
        if r.response_format == "json_object":
            from llama_cpp.llama_grammar import JSON_GBNF

            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_grammar(self._vocab, JSON_GBNF.encode(), b"root"))
        if r.repeat_penalty != 1.0 or r.presence_penalty or r.frequency_penalty:
            penalties = lib.llama_sampler_init_penalties(
                self._n_vocab, PENALTY_LAST_N, r.repeat_penalty, r.frequency_penalty, r.presence_penalty
            )
            assert seq.prompt is not None
            for token in seq.prompt[-PENALTY_LAST_N:]:  # the prompt counts as history, as in llama.cpp
                lib.llama_sampler_accept(penalties, token)
            lib.llama_sampler_chain_add(chain, penalties)
        if r.temperature <= 0:
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_greedy())
            return chain
        if r.top_k > 0:
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_k(r.top_k))
        if r.top_p < 1.0:
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_p(r.top_p, 1))
        if r.min_p > 0.0:
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_min_p(r.min_p, 1))
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_temp(r.temperature))
        seed = r.seed if r.seed is not None else random.randrange(2**31)
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_dist(seed % 2**32))
        return chain

    def step(self) -> list[tuple[Sequence, list[GeneratedToken]]]:
        """Decode one batch: a token per decoding sequence plus prompt chunks; sample each."""
        rows = self._fill()
        if rows == 0:
            return []
        start = time.perf_counter()
        code = self._lib.llama_decode(self._ctx, self._batch)
        self._decode_seconds, self._batch_tokens = time.perf_counter() - start, rows
        if code != 0:
            raise InferenceFailed(f"llama_decode failed with status {code}", details={"status": code})
        results: list[tuple[Sequence, list[GeneratedToken]]] = []
        for seq in list(self._active):
            state: _State = seq.state
            if state.row >= 0:
                tokens = self._sample(seq, state)
                results.append((seq, tokens))
                if tokens[-1].finish_reason is not None:
                    self._release(seq)
        return results

    def _fill(self) -> int:
        batch, n = self._batch, 0

        def add(token: int, pos: int, slot: int, logits: bool) -> None:
            nonlocal n
            batch.token[n], batch.pos[n], batch.n_seq_id[n], batch.logits[n] = token, pos, 1, logits
            batch.seq_id[n][0] = slot
            self._cells[slot].append(token)
            n += 1

        pending = []
        for seq in self._active:
            state: _State = seq.state
            state.row = -1
            if state.fed < len(seq.prompt or ()):
                pending.append(seq)
                continue
            state.row = n
            add(state.last, state.n_past, state.slot, True)
            state.n_past += 1
        for seq in pending:  # prompts in arrival order, chunked to what the batch has left
            state, prompt = seq.state, seq.prompt or []
            take = min(self.n_batch - n, len(prompt) - state.fed)
            if take <= 0 or not (state.started or self._reserve(seq)):
                break
            for token in prompt[state.fed : state.fed + take]:
                add(token, state.n_past, state.slot, False)
                state.n_past += 1
            state.fed += take
            if state.fed == len(prompt):
                batch.logits[n - 1] = True
                state.row = n - 1
        batch.n_tokens = n
        return n

    def _reserve(self, seq: Sequence) -> bool:
        """Reserve ``seq``'s cells in the cache, dropping cached prefixes if needed; False: not yet."""
        state: _State = seq.state
        waiting = [s for s in self._active if s is not seq and not s.state.started]

        def used() -> int:
            held = sum(s.state.reserve for s in self._active if s.state.started)
            held += sum(len(self._cells[s.state.slot]) for s in waiting)  # kept prefixes of those not fed yet
            return held + sum(len(self._cells[slot]) for slot in self._free)

        victims = [slot for slot in self._free if self._cells[slot]]
        victims += [s.state.slot for s in waiting if self._cells[s.state.slot]]
        while used() + state.reserve > self.kv_cells and victims:
            slot = victims.pop(0)
            self._lib.llama_memory_seq_rm(self._memory, slot, -1, -1)
            self._cells[slot].clear()
            for other in waiting:
                if other.state.slot == slot:
                    other.state.fed = other.state.n_past = 0
        if used() + state.reserve > self.kv_cells:
            return False
        state.started = True
        self.peak_cells = max(self.peak_cells, used())  # its own reserve included now
        return True

    def _sample(self, seq: Sequence, state: _State) -> list[GeneratedToken]:
        lib, request = self._lib, seq.request
        logprob = top = None
        if request.logprobs is not None:
            logprob_row = lib.llama_get_logits_ith(self._ctx, state.row)
        token = lib.llama_sampler_sample(state.sampler, self._ctx, state.row)
        if lib.llama_vocab_is_eog(self._vocab, token):
            return [GeneratedToken(text=state.stops.flush(), finish_reason="stop")]
        if request.logprobs is not None:
            logprob, top = self._model.logprobs_from(logprob_row, token, request.logprobs)
        state.produced += 1
        state.last = token
        text, stopped = state.stops.push_bytes(self._token_bytes(token))
        out = [GeneratedToken(text=text, token_id=token, logprob=logprob, top_logprobs=top)]
        if stopped:
            out.append(GeneratedToken(text="", finish_reason="stop"))
        elif state.produced >= request.max_tokens:
            out.append(GeneratedToken(text=state.stops.flush(), finish_reason="length"))
        return out

    def _token_bytes(self, token: int) -> bytes:
        n = self._lib.llama_token_to_piece(self._vocab, token, self._piece, len(self._piece), 0, False)
        if n < 0:
            self._piece = ctypes.create_string_buffer(-n)
            n = self._lib.llama_token_to_piece(self._vocab, token, self._piece, len(self._piece), 0, False)
        return self._piece.raw[:n]

    def drop(self, seq: Sequence) -> None:
        """Free a sequence that did not finish."""
        if seq in self._active:
            self._release(seq)

    def _release(self, seq: Sequence) -> None:
        state: _State = seq.state
        self._active.remove(seq)
        if not self.prefix_cache:
            self._lib.llama_memory_seq_rm(self._memory, state.slot, -1, -1)
            self._cells[state.slot].clear()
        self._lib.llama_sampler_free(state.sampler)
        self._free.append(state.slot)

    def stats(self) -> dict[str, float]:
        """Tokens in the last batch, seconds inside ``llama_decode``, prompt tokens reused from the cache."""
        return {
            "batch_tokens": self._batch_tokens,
            "decode_seconds": self._decode_seconds,
            "reused_tokens": self.reused_tokens,
        }

    def close(self) -> None:
        """Free the samplers, the batch and the context."""
        for seq in list(self._active):
            self._release(seq)
        if self._ctx:
            self._lib.llama_batch_free(self._batch)
            self._lib.llama_free(self._ctx)
            self._ctx = None
