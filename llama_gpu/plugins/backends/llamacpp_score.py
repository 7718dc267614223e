"""Token log-probabilities of a text under a llama.cpp model, in a context of its own.

The engine thread owns the batch runner's context and ``generate`` the ``Llama`` object's;
a :class:`Scorer` makes a third, small ``llama_context`` on the same ``llama_model`` (the
weights are shared, only a KV cache of ``n_ctx`` cells is added) and decodes the text in
chunks of :data:`CHUNK` tokens with logits for every position. The vocabulary can be large
(Gemma 3: 262,144 tokens), so a chunk's logits are ``CHUNK * n_vocab`` floats: a small chunk
keeps that buffer at tens of megabytes. Callers hold the scorer's lock.
"""

from __future__ import annotations

from typing import Any

from ...kernel.errors import InferenceFailed, InvalidInput, ModelLoadFailed

#: Tokens decoded per ``llama_decode`` call (each with its row of logits).
CHUNK = 64


class Scorer:
    """A scoring context on a loaded ``llama_model``; not thread-safe (the model's score lock guards it)."""

    def __init__(self, llama_model: Any, n_ctx: int, n_threads: int, flash_attn: bool | str = False) -> None:
        import llama_cpp

        from .llamacpp import flash_attn_type

        self._lib = llama_cpp
        self.n_ctx = n_ctx
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = params.n_ubatch = CHUNK
        params.n_seq_max = 1
        params.n_threads = params.n_threads_batch = n_threads
        params.no_perf = True
        # as the engine's context: flash attention only when configured (its rounding differs)
        params.flash_attn_type = flash_attn_type(flash_attn)
        self._ctx = llama_cpp.llama_init_from_model(llama_model, params)
        if not self._ctx:
            raise ModelLoadFailed(f"llama.cpp could not create a scoring context of {n_ctx} tokens")
        self._memory = llama_cpp.llama_get_memory(self._ctx)
        self._n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(llama_model))
        self._batch = llama_cpp.llama_batch_init(CHUNK, 0, 1)
        n_head = max(1, llama_cpp.llama_model_n_head(llama_model))
        head_dim = llama_cpp.llama_model_n_embd(llama_model) // n_head
        #: K and V in f16 for every cell (an upper bound with sliding windows), plus the logits buffer.
        n_layer, n_head_kv = llama_cpp.llama_model_n_layer(llama_model), llama_cpp.llama_model_n_head_kv(llama_model)
        self.kv_bytes = n_ctx * n_layer * 2 * head_dim * n_head_kv * 2 + CHUNK * self._n_vocab * 4

    def score(self, tokens: list[int], steps: list[int] | None = None) -> list[float]:
        """``log p(tokens[i + 1] | tokens[..i])`` for every ``i``: one item fewer than ``tokens``.

        ``steps``: how many tokens each decode takes, in order (then :data:`CHUNK` at a time). The
        figures depend slightly on it (CPU kernels round differently for a batch than for one
        token), so a caller can decode as the engine did: the prompt at once, then a token a step.
        """
        import numpy as np

        if len(tokens) > self.n_ctx:
            raise InvalidInput(
                f"text of {len(tokens)} tokens exceeds the scoring context of {self.n_ctx} tokens",
                details={"tokens": len(tokens), "context_length": self.n_ctx},
            )
        lib, batch = self._lib, self._batch
        lib.llama_memory_clear(self._memory, True)
        scores: list[float] = []
        fed = len(tokens) - 1  # the last token is never fed: nothing follows it to score
        start, plan = 0, [n for n in steps or () if n > 0]
        while start < fed:
            chunk = tokens[start : min(start + min(plan.pop(0) if plan else CHUNK, CHUNK), fed)]
            for i, token in enumerate(chunk):
                batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = token, start + i, 1, True
                batch.seq_id[i][0] = 0
            batch.n_tokens = len(chunk)
            code = lib.llama_decode(self._ctx, batch)
            if code != 0:
                raise InferenceFailed(f"llama_decode failed with status {code} while scoring", details={"status": code})
            # row by row through the batch's output ids: the context may keep its outputs in another order
            rows = np.stack(
                [
                    np.ctypeslib.as_array(lib.llama_get_logits_ith(self._ctx, i), shape=(self._n_vocab,))
                    for i in range(len(chunk))
                ]
            ).astype(np.float64)
            peak = rows.max(axis=1, keepdims=True)
            norm = peak[:, 0] + np.log(np.exp(rows - peak).sum(axis=1))
            following = np.asarray(tokens[start + 1 : start + 1 + len(chunk)])
            scores.extend((rows[np.arange(len(chunk)), following] - norm).tolist())
            start += len(chunk)
        return scores

    def close(self) -> None:
        """Free the batch and the context (before the model is freed)."""
        if self._ctx:
            self._lib.llama_batch_free(self._batch)
            self._lib.llama_free(self._ctx)
            self._ctx = None


class Embedder:
    """Mean-pooled embeddings from a context of its own on a loaded ``llama_model``.

    The weights are shared with the model's other contexts: only this context's KV cache
    (``n_ctx`` cells, counted in :attr:`kv_bytes`) is added, never a second copy of the
    model. Not thread-safe (the model's lock guards it).
    """

    def __init__(self, llama_model: Any, n_ctx: int, n_threads: int) -> None:
        import llama_cpp

        self._lib = llama_cpp
        self._model = llama_model
        self.n_ctx = n_ctx
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = params.n_ubatch = n_ctx  # a pooled sequence is decoded in one batch
        params.n_seq_max = 1
        params.n_threads = params.n_threads_batch = n_threads
        params.embeddings = True
        params.pooling_type = llama_cpp.LLAMA_POOLING_TYPE_MEAN  # one vector per text, also for a chat GGUF
        params.no_perf = True
        self._ctx = llama_cpp.llama_init_from_model(llama_model, params)
        if not self._ctx:
            raise ModelLoadFailed(f"llama.cpp could not create an embedding context of {n_ctx} tokens")
        self._memory = llama_cpp.llama_get_memory(self._ctx)
        self._n_embd = llama_cpp.llama_model_n_embd(llama_model)
        self._batch = llama_cpp.llama_batch_init(n_ctx, 0, 1)
        n_head = max(1, llama_cpp.llama_model_n_head(llama_model))
        head_dim = self._n_embd // n_head
        n_layer, n_head_kv = llama_cpp.llama_model_n_layer(llama_model), llama_cpp.llama_model_n_head_kv(llama_model)
        self.kv_bytes = n_ctx * n_layer * 2 * head_dim * n_head_kv * 2 + n_ctx * self._n_embd * 4

    def embed(self, tokens: list[int]) -> list[float]:
        """The normalised mean-pooled embedding of ``tokens``."""
        import numpy as np

        if not tokens:
            raise InvalidInput("cannot embed an empty text", details={"field": "input"})
        if len(tokens) > self.n_ctx:
            raise InvalidInput(
                f"text of {len(tokens)} tokens exceeds the embedding context of {self.n_ctx} tokens",
                details={"tokens": len(tokens), "context_length": self.n_ctx},
            )
        lib, batch = self._lib, self._batch
        lib.llama_memory_clear(self._memory, True)
        for i, token in enumerate(tokens):
            batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = token, i, 1, True
            batch.seq_id[i][0] = 0
        batch.n_tokens = len(tokens)
        code = lib.llama_decode(self._ctx, batch)
        if code != 0:
            raise InferenceFailed(f"llama_decode failed with status {code} while embedding", details={"status": code})
        pointer = lib.llama_get_embeddings_seq(self._ctx, 0)
        if not pointer:
            raise InferenceFailed("llama.cpp returned no pooled embedding")
        vector = np.ctypeslib.as_array(pointer, shape=(self._n_embd,)).astype(np.float64)
        norm = float(np.linalg.norm(vector))
        return (vector / norm if norm > 0 else vector).tolist()

    def close(self) -> None:
        """Free the batch and the context (before the model is freed)."""
        if self._ctx:
            self._lib.llama_batch_free(self._batch)
            self._lib.llama_free(self._ctx)
            self._ctx = None
