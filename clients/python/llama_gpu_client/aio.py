"""The asynchronous client: :class:`LlamaGPUClient`'s methods as coroutines.

Each call runs the synchronous client in a worker thread (``asyncio.to_thread``), so the
event loop never blocks and the package needs no second HTTP library; a stream yields its
tokens as an async iterator. Retries, errors and results are those of the sync client.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable
from typing import Any

from .client import DEFAULT_TIMEOUT, InferenceStream, LlamaGPUClient
from .types import StreamToken

__all__ = ["AsyncInferenceStream", "AsyncLlamaGPUClient"]

_END = object()


class AsyncInferenceStream:
    """The tokens of ``stream_infer`` as an async iterator; ``request_id`` and ``text`` as on the sync stream."""

    def __init__(self, stream: InferenceStream) -> None:
        self._stream = stream
        self._tokens = iter(stream)
        self.request_id = stream.request_id

    @property
    def text(self) -> str:
        """The text so far."""
        return self._stream.text

    def __aiter__(self) -> AsyncIterator[StreamToken]:
        return self

    async def __anext__(self) -> StreamToken:
        token = await asyncio.to_thread(next, self._tokens, _END)
        if token is _END:
            raise StopAsyncIteration
        return token  # type: ignore[return-value]

    async def aclose(self) -> None:
        """Close the connection (the server cancels an unfinished request)."""
        await asyncio.to_thread(self._stream.close)

    async def __aenter__(self) -> AsyncInferenceStream:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()


class AsyncLlamaGPUClient:
    """Coroutine versions of every :class:`LlamaGPUClient` method (same arguments, same results).

    ``create_socket`` is not wrapped: the socket is threaded already (use it as is).
    """

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:5000",
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = 2,
        **options: Any,
    ) -> None:
        self.sync = LlamaGPUClient(base_url, api_key, timeout, max_retries, **options)

    @property
    def api_key(self) -> str | None:
        """The key or login token in use."""
        return self.sync.api_key

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.sync, name)
        if name.startswith("_") or not callable(method) or name in ("create_socket", "close"):
            return method

        @functools.wraps(method)
        async def call(*args: Any, **kwargs: Any) -> Any:
            return await asyncio.to_thread(method, *args, **kwargs)

        return call

    async def stream_infer(self, text: str, *args: Any, **kwargs: Any) -> AsyncInferenceStream:
        """Like :meth:`LlamaGPUClient.stream_infer`: refusals raise here, then iterate with ``async for``."""
        stream = await asyncio.to_thread(self.sync.stream_infer, text, *args, **kwargs)
        return AsyncInferenceStream(stream)

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await asyncio.to_thread(self.sync.close)

    async def __aenter__(self) -> AsyncLlamaGPUClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()
