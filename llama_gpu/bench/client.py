"""An OpenAI-compatible client that times streamed responses (``requests`` with ``stream=True``)."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import requests

from .config import BenchmarkConfig
from .dataset import estimate_tokens
from .errors import APIError
from .metrics import RequestMetrics

#: Tokenize endpoints tried, in order, when the server sends no usage: (path below the root, body key).
TOKENIZE_ENDPOINTS = (("/api/v1/tokenize", "text"), ("/extras/tokenize", "input"))


def _error_of(response: requests.Response) -> tuple[str | None, str]:
    """The (code, message) of an error response: the OpenAI shape, the native envelope, or the text."""
    try:
        body = response.json()
    except ValueError:
        return None, (response.text or response.reason or "")[:300]
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code = error.get("code") or error.get("type")
        return (str(code) if code else None), str(error.get("message") or error)[:300]
    if isinstance(body, dict) and "detail" in body:
        return None, str(body["detail"])[:300]
    return None, str(body)[:300]


def _socket_of(response: requests.Response) -> socket.socket | None:
    """The socket a streamed response is read from, if it can be found."""
    sock = getattr(getattr(response.raw, "connection", None), "sock", None)
    if sock is None:  # http.client lets go of a connection that closes after this response; the file keeps it
        fp = getattr(getattr(response.raw, "_fp", None), "fp", None)
        sock = getattr(getattr(fp, "raw", None), "_sock", None)
    return sock if isinstance(sock, socket.socket) else None


def _sse_lines(response: requests.Response) -> Iterator[bytes]:
    """The response's lines as soon as each arrives (``iter_lines`` buffers 512 bytes, too late for TTFT)."""
    read1 = getattr(response.raw, "read1", None)
    if read1 is None:  # urllib3 1.x
        yield from response.iter_lines(chunk_size=1)
        return
    pending = b""
    while data := read1(65536):
        pending += data
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield line.rstrip(b"\r")
    if pending:
        yield pending


class TokenCounter:
    """Counts tokens when the server sends no usage: its tokenize endpoint if it has one, else an estimate."""

    def __init__(self, client: OpenAIClient) -> None:
        self._client = client
        self._lock = threading.Lock()
        self._endpoint: tuple[str, str] | bool | None = False  # False: not probed yet
        self.method = "none"

    def count(self, text: str) -> int:
        """The tokens of ``text``; sets :attr:`method` to ``tokenize:<path>`` or ``estimate``."""
        with self._lock:
            if self._endpoint is False:
                self._endpoint = None
                for path, key in TOKENIZE_ENDPOINTS:
                    if self._tokenize(path, key, "probe") is not None:
                        self._endpoint = (path, key)
                        break
                self.method = f"tokenize:{self._endpoint[0]}" if self._endpoint else "estimate"
        if self._endpoint:
            found = self._tokenize(*self._endpoint, text)
            if found is not None:
                return found
        return estimate_tokens(text)

    def _tokenize(self, path: str, key: str, text: str) -> int | None:
        try:
            answer = requests.post(
                self._client.root + path,
                json={key: text, "model": self._client.config.api_model_name},
                headers=self._client.headers,
                timeout=10,
            )
            tokens = answer.json().get("tokens") if answer.ok else None
        except (requests.RequestException, ValueError, AttributeError):
            return None
        return len(tokens) if isinstance(tokens, list) else None


class OpenAIClient:
    """Sends the benchmark's requests to ``/v1/chat/completions``, ``/v1/completions`` or ``/v1/embeddings``."""

    def __init__(self, config: BenchmarkConfig) -> None:
        self.config = config
        base = config.api_base
        self.root = base[: -len("/v1")] if base.endswith("/v1") else base
        self.headers = {"Content-Type": "application/json"}
        if config.api_key:
            self.headers["Authorization"] = f"Bearer {config.api_key}"
        self.tokens = TokenCounter(self)
        self._active: set[requests.Response] = set()
        self._lock = threading.Lock()
        self.usage_seen = False

    # ------------------------------------------------------------------ preflight
    def check(self) -> dict[str, Any]:
        """``GET /models``: raise :class:`APIError` (with the HTTP status) when the server refuses or is down."""
        try:
            answer = requests.get(f"{self.config.api_base}/models", headers=self.headers, timeout=10)
        except requests.RequestException as exc:
            raise APIError(f"cannot reach {self.config.api_base}: {type(exc).__name__}") from exc
        if not answer.ok:
            code, message = _error_of(answer)
            raise APIError(f"GET /models: {message}", status=answer.status_code, code=code)
        try:
            ids = [m.get("id") for m in answer.json().get("data", [])]
        except (ValueError, AttributeError):
            ids = []
        return {"models": ids, "model_listed": self.config.api_model_name in ids}

    def abort_all(self) -> None:
        """Close every response being read, so that its worker stops at once."""
        with self._lock:
            active = list(self._active)
        for response in active:
            # a worker blocked reading holds the stream's lock, so close() alone would wait for the server's next
            # chunk; shutting the socket down ends that read at once
            sock = _socket_of(response)
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(Exception):  # closing from another thread may race; the worker notices
                response.close()

    # ------------------------------------------------------------------ requests
    def send(
        self, session: requests.Session, prompt: str, max_tokens: int | None, scenario: str, stop: threading.Event
    ) -> RequestMetrics | None:
        """One timed request; ``None`` when ``stop`` aborted it (it is then not counted)."""
        metric = RequestMetrics(scenario=scenario, requested_output_tokens=max_tokens)
        if self.config.task == "text-to-embeddings":
            return self._embed(session, prompt, metric)
        chat = self.config.endpoint == "chat"
        body: dict[str, Any] = {"model": self.config.api_model_name, **self.config.additional_sampling_params}
        body.update(stream=True, stream_options={"include_usage": True})
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        if chat:
            body["messages"] = [{"role": "user", "content": prompt}]
        else:
            body["prompt"] = prompt
        url = f"{self.config.api_base}/{'chat/completions' if chat else 'completions'}"
        usage: dict[str, Any] | None = None
        chunks, text, last = 0, [], 0.0
        metric.start = time.perf_counter()
        try:
            response = session.post(
                url, json=body, headers=self.headers, stream=True, timeout=self.config.request_timeout
            )
            with self._lock:
                self._active.add(response)
            try:
                if not response.ok:
                    _, message = _error_of(response)
                    metric.error_code, metric.error_message = str(response.status_code), message
                    metric.e2e_latency = time.perf_counter() - metric.start
                    return metric
                for line in _sse_lines(response):
                    if stop.is_set():
                        return None
                    if not line.startswith(b"data:"):
                        continue
                    data = line[5:].strip()
                    if data == b"[DONE]":
                        break
                    event = json.loads(data)
                    if event.get("error"):
                        raise ValueError(str(event["error"])[:300])
                    if event.get("usage"):
                        usage = event["usage"]
                    for choice in event.get("choices") or []:
                        piece = (choice.get("delta") or {}).get("content") if chat else choice.get("text")
                        if not piece:
                            continue
                        now = time.perf_counter()
                        if metric.ttft is None:
                            metric.ttft = now - metric.start
                        else:
                            metric.itl.append(now - last)
                        last, chunks = now, chunks + 1
                        text.append(piece)
            finally:
                with self._lock:
                    self._active.discard(response)
                response.close()
        except (requests.RequestException, OSError, AttributeError) as exc:
            if stop.is_set():
                return None
            metric.error_code = "timeout" if isinstance(exc, requests.Timeout) else "connection_error"
            metric.error_message = f"{type(exc).__name__}: {exc}"[:300]
            metric.e2e_latency = time.perf_counter() - metric.start
            return metric
        except ValueError as exc:
            metric.error_code, metric.error_message = "stream_error", str(exc)[:300]
            metric.e2e_latency = time.perf_counter() - metric.start
            return metric
        metric.e2e_latency = time.perf_counter() - metric.start
        if metric.ttft is None:
            metric.error_code, metric.error_message = "empty_response", "the stream had no content"
            return metric
        self._count(metric, usage, prompt, "".join(text), chunks)
        return metric

    def _count(
        self, metric: RequestMetrics, usage: dict[str, Any] | None, prompt: str, output: str, chunks: int
    ) -> None:
        if usage and usage.get("completion_tokens") is not None:
            self.usage_seen = True
            metric.input_tokens = int(usage.get("prompt_tokens") or 0)
            metric.output_tokens = int(usage["completion_tokens"])
            metric.token_source = "usage"
            return
        metric.input_tokens = self.tokens.count(prompt)
        metric.output_tokens = max(1, self.tokens.count(output)) if output else chunks
        metric.token_source = self.tokens.method

    def _embed(self, session: requests.Session, prompt: str, metric: RequestMetrics) -> RequestMetrics:
        body = {"model": self.config.api_model_name, "input": prompt, **self.config.additional_sampling_params}
        metric.start = time.perf_counter()
        try:
            response = session.post(
                f"{self.config.api_base}/embeddings",
                json=body,
                headers=self.headers,
                timeout=self.config.request_timeout,
            )
        except requests.RequestException as exc:
            metric.error_code = "timeout" if isinstance(exc, requests.Timeout) else "connection_error"
            metric.error_message = f"{type(exc).__name__}: {exc}"[:300]
            metric.e2e_latency = time.perf_counter() - metric.start
            return metric
        metric.e2e_latency = metric.ttft = time.perf_counter() - metric.start
        if not response.ok:
            _, message = _error_of(response)
            metric.error_code, metric.error_message = str(response.status_code), message
            return metric
        try:
            usage = response.json().get("usage") or {}
        except (ValueError, AttributeError):
            usage = {}
        if usage.get("prompt_tokens") is not None:
            self.usage_seen = True
            metric.input_tokens, metric.token_source = int(usage["prompt_tokens"]), "usage"
        else:
            metric.input_tokens, metric.token_source = self.tokens.count(prompt), self.tokens.method
        return metric
