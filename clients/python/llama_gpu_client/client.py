"""The synchronous client of the native API (``/api/v1``), over ``requests``."""

from __future__ import annotations

import contextlib
import datetime as dt
import email.utils
import json
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import requests

from .errors import APIConnectionError, LlamaGPUError, build_error
from .types import (
    Alerts,
    ApiKey,
    BatchResult,
    CreatedApiKey,
    GPUInfo,
    InferenceResult,
    LogEntry,
    LoginResult,
    Metrics,
    Model,
    ModelDetails,
    ModelLoadResult,
    ModelUnloadResult,
    Plugin,
    PluginConfig,
    PluginLoadResult,
    RateLimitInfo,
    StreamToken,
    SystemStatus,
)

if TYPE_CHECKING:
    from .socket import LlamaGPUSocket

__all__ = ["DEFAULT_TIMEOUT", "InferenceStream", "LlamaGPUClient"]

#: Seconds a call may take, by default (a model loaded on first use takes a few seconds).
DEFAULT_TIMEOUT = 120.0
#: Statuses that are retried (the server refused before doing anything).
RETRY_STATUSES = frozenset({429, 503})


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds: a number, or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


class InferenceStream:
    """The tokens of ``stream_infer`` as they are generated: iterate for :class:`StreamToken` objects.

    ``request_id`` names the request on the server (``cancel_request``); ``text`` is the text so
    far; closing the stream (``close()``, leaving a ``with`` block, or breaking out of the loop
    and dropping it) closes the connection, and the server frees the sequence at its next step.
    An error the server reports mid-stream is raised as its :class:`LlamaGPUError`.
    """

    def __init__(self, response: requests.Response, request_id: str) -> None:
        self.response = response
        self.request_id = request_id
        self.text = ""
        self.final: StreamToken | None = None
        self._lines = response.iter_lines(decode_unicode=True)

    def __iter__(self) -> Iterator[StreamToken]:
        try:
            for line in self._lines:
                if not line or not line.startswith("data:"):
                    continue
                event = json.loads(line[5:].strip())
                if "error" in event:
                    raise build_error(event["error"], status=self.response.status_code, request_id=self.request_id)
                token = StreamToken.from_json(event)
                self.text += token.text
                if token.is_complete:
                    self.final = token
                yield token
                if token.is_complete:
                    return
        except requests.RequestException as exc:
            raise APIConnectionError(f"the stream broke: {exc}", request_id=self.request_id) from exc
        finally:
            self.close()

    def close(self) -> None:
        """Close the connection (the server cancels an unfinished request)."""
        self.response.close()

    def __enter__(self) -> InferenceStream:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class LlamaGPUClient:
    """A client of one LLaMA GPU server.

    ``api_key`` is an API key (``lgk_…``) or a login token; :meth:`login` sets one.
    ``timeout`` is the seconds one HTTP call may take. A 429 or 503 answer is retried up to
    ``max_retries`` times, after the ``Retry-After`` the server sent (else an exponential
    backoff from ``backoff`` seconds); a wait longer than ``max_retry_wait`` is not slept
    through: the error is raised at once, with its ``retry_after``.
    Use it as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:5000",
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = 2,
        *,
        max_retry_wait: float = 30.0,
        backoff: float = 0.5,
        session: requests.Session | None = None,
    ) -> None:
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http:// or https:// URL, got {base_url!r}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0, got {timeout}")
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self.max_retries = max_retries
        self.max_retry_wait = max_retry_wait
        self.backoff = backoff
        #: The rate-limit headers of the latest response that carried them.
        self.rate_limit: RateLimitInfo | None = None
        #: The ``X-Request-ID`` of the latest response.
        self.last_request_id: str | None = None
        self._session = session or requests.Session()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ plumbing
    def close(self) -> None:
        """Close the HTTP connections."""
        self._session.close()

    def __enter__(self) -> LlamaGPUClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _headers(self, request_id: str | None = None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        if request_id:
            headers["X-Request-ID"] = request_id
        return headers

    def _send(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, Any] | None = None,
        stream: bool = False,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> requests.Response:
        """Send one call (retrying 429/503); raise the mapped error for any non-2xx answer."""
        url = self.base_url + path
        attempt = 0
        while True:
            try:
                response = self._session.request(
                    method,
                    url,
                    json=json_body,
                    params={k: v for k, v in (params or {}).items() if v is not None},
                    headers=self._headers(request_id),
                    timeout=timeout or self.timeout,
                    stream=stream,
                )
            except requests.Timeout as exc:
                raise APIConnectionError(f"{method} {path} timed out after {timeout or self.timeout}s") from exc
            except requests.RequestException as exc:
                raise APIConnectionError(f"{method} {path} failed: {exc}") from exc
            self._remember(response)
            if response.ok:
                return response
            error = self._error(response)
            response.close()
            wait = error.retry_after if error.retry_after is not None else self.backoff * 2**attempt
            if response.status_code not in RETRY_STATUSES or attempt >= self.max_retries or wait > self.max_retry_wait:
                raise error
            attempt += 1
            time.sleep(wait)

    def _remember(self, response: requests.Response) -> None:
        headers = response.headers
        with self._lock:
            self.last_request_id = headers.get("X-Request-ID", self.last_request_id)
            with contextlib.suppress(KeyError, ValueError):
                self.rate_limit = RateLimitInfo(
                    int(headers["X-RateLimit-Limit"]),
                    int(headers["X-RateLimit-Remaining"]),
                    int(headers["X-RateLimit-Reset"]),
                )

    @staticmethod
    def _error(response: requests.Response) -> LlamaGPUError:
        try:
            body = response.json()
        except ValueError:
            body = None
        error = body.get("error") if isinstance(body, dict) else None
        request_id = (body.get("request_id") if isinstance(body, dict) else None) or response.headers.get(
            "X-Request-ID"
        )
        return build_error(
            error,
            status=response.status_code,
            request_id=request_id,
            retry_after=_retry_after(response.headers.get("Retry-After")),
            fallback_message=f"HTTP {response.status_code}: {response.text[:200]}",
        )

    def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = self._send(method, path, **kwargs)
        try:
            body = response.json()
        except ValueError as exc:
            raise LlamaGPUError(
                f"{method} {path}: the answer is not JSON", code="INVALID_RESPONSE", status=response.status_code
            ) from exc
        if not isinstance(body, dict):
            raise LlamaGPUError(f"{method} {path}: expected a JSON object", code="INVALID_RESPONSE")
        return body

    @staticmethod
    def _id(value: str, what: str) -> str:
        if not isinstance(value, str) or not value:
            raise ValueError(f"{what} must be a non-empty string, got {value!r}")
        return quote(value, safe="")

    # ------------------------------------------------------------------ inference
    def infer(
        self,
        text: str,
        model: str = "default",
        max_tokens: int = 100,
        temperature: float = 1.0,
        top_p: float = 1.0,
    ) -> InferenceResult:
        """Generate a completion of ``text`` (``POST /api/v1/infer``)."""
        body = {"text": text, "model": model, "max_tokens": max_tokens, "temperature": temperature, "top_p": top_p}
        return InferenceResult.from_json(self._json("POST", "/api/v1/infer", json_body=body))

    def stream_infer(
        self,
        text: str,
        model: str = "default",
        max_tokens: int = 100,
        temperature: float = 1.0,
        top_p: float = 1.0,
        *,
        request_id: str | None = None,
    ) -> InferenceStream:
        """Generate a completion of ``text`` token by token (``POST /api/v1/stream_infer``, Server-Sent Events).

        Refusals (bad input, unknown model, 401/403/429/503) are raised here, before any
        token; ``request_id`` (default: a fresh one) lets :meth:`cancel_request` stop it.
        """
        request_id = request_id or f"sdk-{uuid.uuid4().hex}"
        body = {"text": text, "model": model, "max_tokens": max_tokens, "temperature": temperature, "top_p": top_p}
        response = self._send("POST", "/api/v1/stream_infer", json_body=body, stream=True, request_id=request_id)
        return InferenceStream(response, response.headers.get("X-Request-ID", request_id))

    def batch_infer(
        self,
        inputs: Sequence[str | Mapping[str, Any]],
        model: str = "default",
        max_tokens: int = 100,
        temperature: float = 1.0,
    ) -> BatchResult:
        """Generate completions of several prompts at once (``POST /api/v1/batch_infer``).

        Each input is a prompt (its id is its position, ``"0"``, ``"1"``…) or a mapping
        ``{"id", "text", "max_tokens"?}``; ``max_tokens`` is the default of items without one.
        """
        if isinstance(inputs, str | bytes) or not isinstance(inputs, Sequence):
            raise TypeError("inputs must be a list of prompts or of {'id', 'text'} mappings")
        items = []
        for n, item in enumerate(inputs):
            if isinstance(item, str):
                items.append({"id": str(n), "text": item, "max_tokens": max_tokens})
            elif isinstance(item, Mapping):
                items.append({"max_tokens": max_tokens, "id": str(n), **item})
            else:
                raise TypeError(f"inputs[{n}] must be a string or a mapping, got {type(item).__name__}")
        body = {"inputs": items, "model": model, "temperature": temperature}
        return BatchResult.from_json(self._json("POST", "/api/v1/batch_infer", json_body=body))

    def cancel_request(self, request_id: str) -> bool:
        """Cancel a running or queued request of this caller (any, for an admin): ``DELETE /api/v1/requests/{id}``.

        ``True`` once cancelled; a request that is not running (finished, or never was) raises
        :class:`NotFoundError`.
        """
        body = self._json("DELETE", f"/api/v1/requests/{self._id(request_id, 'request_id')}")
        return bool(body.get("cancelled"))

    # ------------------------------------------------------------------ models
    def list_models(self) -> list[Model]:
        """Every model the server knows, loaded or not."""
        return [Model.from_json(m) for m in self._json("GET", "/api/v1/models")["models"]]

    def get_model(self, model_id: str) -> ModelDetails:
        """One model's facts, state and (when loaded) runtime and engine figures."""
        body = self._json("GET", f"/api/v1/models/{self._id(model_id, 'model_id')}")
        return ModelDetails.from_json(body["model"])

    def load_model(
        self,
        model_id: str,
        backend: str | None = None,
        quantization: str | None = None,
        *,
        max_memory: str | int | None = None,
        prefer_gpu: bool | None = None,
        n_ctx: int | None = None,
    ) -> ModelLoadResult:
        """Load a model (admin); ``max_memory`` is bytes or a string like ``"80%"`` or ``"8GB"``."""
        options = {
            "backend": backend,
            "quantization": quantization,
            "max_memory": max_memory,
            "prefer_gpu": prefer_gpu,
            "n_ctx": n_ctx,
        }
        body = {k: v for k, v in options.items() if v is not None}
        path = f"/api/v1/models/{self._id(model_id, 'model_id')}/load"
        return ModelLoadResult.from_json(self._json("POST", path, json_body=body, timeout=max(self.timeout, 600)))

    def unload_model(self, model_id: str) -> ModelUnloadResult:
        """Unload a model (admin)."""
        path = f"/api/v1/models/{self._id(model_id, 'model_id')}/unload"
        return ModelUnloadResult.from_json(self._json("DELETE", path))

    # ------------------------------------------------------------------ plugins
    def list_plugins(self) -> list[Plugin]:
        """Every installed plugin with its status and configuration."""
        return [Plugin.from_json(p) for p in self._json("GET", "/api/v1/plugins")["plugins"]]

    def load_plugin(self, plugin_id: str, config: Mapping[str, Any] | None = None) -> PluginLoadResult:
        """Load an installed, allowed plugin (admin); ``config`` is ``{enabled?, priority?, settings?}``."""
        path = f"/api/v1/plugins/{self._id(plugin_id, 'plugin_id')}/load"
        return PluginLoadResult.from_json(self._json("POST", path, json_body={"config": dict(config or {})}))

    def unload_plugin(self, plugin_id: str) -> str:
        """Unload a plugin (admin; essential ones refuse with :class:`PluginEssentialError`); its id."""
        path = f"/api/v1/plugins/{self._id(plugin_id, 'plugin_id')}/unload"
        return str(self._json("DELETE", path)["plugin_id"])

    def update_plugin_config(self, plugin_id: str, config: Mapping[str, Any]) -> PluginConfig:
        """Change a plugin's ``enabled``, ``priority`` or ``settings`` (admin); its configuration now."""
        path = f"/api/v1/plugins/{self._id(plugin_id, 'plugin_id')}/config"
        return PluginConfig.from_json(self._json("PUT", path, json_body={"config": dict(config)})["config"])

    # ------------------------------------------------------------------ system
    def get_system_status(self) -> SystemStatus:
        """Status, uptime, version, machine use, services and request statistics."""
        return SystemStatus.from_json(self._json("GET", "/api/v1/system/status"))

    def get_gpu_info(self) -> GPUInfo:
        """Every GPU of the server (none: ``gpu_count`` 0)."""
        return GPUInfo.from_json(self._json("GET", "/api/v1/system/gpu"))

    def get_metrics(self, timeframe: str = "1h", granularity: str = "1m") -> Metrics:
        """Stored metric series: ``timeframe`` 1h|6h|24h|7d in buckets of ``granularity`` 1m|5m|15m|1h."""
        params = {"timeframe": timeframe, "granularity": granularity}
        return Metrics.from_json(self._json("GET", "/api/v1/system/metrics", params=params))

    def get_logs(
        self,
        level: str | None = None,
        limit: int | None = None,
        since: dt.datetime | str | None = None,
        component: str | None = None,
    ) -> list[LogEntry]:
        """The server's newest log records at ``level`` or above (admin)."""
        if isinstance(since, dt.datetime):
            since = (since if since.tzinfo else since.replace(tzinfo=dt.UTC)).isoformat()
        params = {"level": level, "limit": limit, "since": since, "component": component}
        return [LogEntry.from_json(e) for e in self._json("GET", "/api/v1/system/logs", params=params)["logs"]]

    def get_alerts(self) -> Alerts:
        """Firing alerts and the alert rules."""
        return Alerts.from_json(self._json("GET", "/api/v1/monitoring/alerts"))

    def health(self) -> bool:
        """Whether the server is alive (``GET /health``, no key needed)."""
        try:
            return self._send("GET", "/health").ok
        except LlamaGPUError:
            return False

    # ------------------------------------------------------------------ access
    def login(self, username: str, password: str) -> LoginResult:
        """Log in with a user name and password; the client uses the token from then on."""
        body = self._json("POST", "/api/v1/auth/login", json_body={"username": username, "password": password})
        result = LoginResult.from_json(body)
        self.api_key = result.token
        return result

    def create_api_key(
        self, name: str, permissions: Sequence[str] | None = None, expires_in: int | str | None = None
    ) -> CreatedApiKey:
        """Create an API key with at most the caller's permissions; ``expires_in`` is seconds or ``"30d"``."""
        body: dict[str, Any] = {"name": name, "expires_in": expires_in}
        if permissions is not None:
            body["permissions"] = list(permissions)
        return CreatedApiKey.from_json(self._json("POST", "/v1/auth/keys", json_body=body))

    def list_api_keys(self) -> list[ApiKey]:
        """The caller's keys (every key, for an admin), never their secrets."""
        return [ApiKey.from_json(k) for k in self._json("GET", "/api/v1/auth/keys")["keys"]]

    def revoke_api_key(self, key_id: int) -> ApiKey:
        """Revoke a key; the key as it is now."""
        return ApiKey.from_json(self._json("DELETE", f"/api/v1/auth/keys/{int(key_id)}")["key"])

    # ------------------------------------------------------------------ socket
    def create_socket(
        self, *, connect: bool = True, transports: Sequence[str] = ("websocket",), wait_timeout: float = 10.0
    ) -> LlamaGPUSocket:
        """A Socket.IO connection to the server with this client's credentials (connected unless ``connect=False``)."""
        from .socket import LlamaGPUSocket

        sock = LlamaGPUSocket(self.base_url, self.api_key, transports=transports, wait_timeout=wait_timeout)
        if connect:
            sock.connect()
        return sock
