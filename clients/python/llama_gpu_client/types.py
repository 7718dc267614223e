"""Typed results of the client: one dataclass per answer of the server.

Each keeps the server's whole JSON object in ``raw`` (fields this client does not name are
still there); ``from_json`` builds one from that object.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Self

__all__ = [
    "Alerts",
    "ApiKey",
    "BatchItemResult",
    "BatchResult",
    "ChatResult",
    "CreatedApiKey",
    "GPUInfo",
    "InferenceResult",
    "LogEntry",
    "LoginResult",
    "Metrics",
    "Model",
    "ModelDetails",
    "ModelLoadResult",
    "ModelUnloadResult",
    "Plugin",
    "PluginConfig",
    "PluginLoadResult",
    "RateLimitInfo",
    "StreamToken",
    "SystemStatus",
]


@dataclasses.dataclass(frozen=True)
class RateLimitInfo:
    """The ``X-RateLimit-*`` headers of the last response: limit per hour, what is left, reset (epoch s)."""

    limit: int
    remaining: int
    reset: int


@dataclasses.dataclass(frozen=True)
class InferenceResult:
    """The answer of ``POST /api/v1/infer``."""

    generated_text: str
    tokens_generated: int
    inference_time: float
    model_used: str
    backend: str
    request_id: str | None
    processing_time: float | None
    raw: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Self:
        """From the response body."""
        result, meta = body["result"], body.get("metadata") or {}
        return cls(
            generated_text=result["generated_text"],
            tokens_generated=result["tokens_generated"],
            inference_time=result["inference_time"],
            model_used=result.get("model_used", ""),
            backend=result.get("backend", ""),
            request_id=meta.get("request_id"),
            processing_time=meta.get("processing_time"),
            raw=body,
        )


@dataclasses.dataclass(frozen=True)
class StreamToken:
    """One event of a stream: the token's ``text``; the last one has ``is_complete`` and ``final_text``."""

    text: str
    position: int
    is_complete: bool
    final_text: str | None = None

    @classmethod
    def from_json(cls, event: dict[str, Any]) -> Self:
        """From one SSE ``data:`` object."""
        return cls(
            text=event.get("token", ""),
            position=event.get("position", 0),
            is_complete=bool(event.get("is_complete")),
            final_text=event.get("final_text"),
        )


@dataclasses.dataclass(frozen=True)
class BatchItemResult:
    """One item of a batch, under the ``id`` it was sent with."""

    id: str
    generated_text: str
    tokens_generated: int
    inference_time: float

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> Self:
        """From one item of ``results``."""
        return cls(item["id"], item["generated_text"], item["tokens_generated"], item["inference_time"])


@dataclasses.dataclass(frozen=True)
class BatchResult:
    """The answer of ``POST /api/v1/batch_infer``: ``results`` in input order (iterable, sized, indexable)."""

    results: list[BatchItemResult]
    batch_id: str
    total_processing_time: float
    items_processed: int
    backend: str
    raw: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Self:
        """From the response body."""
        meta = body.get("metadata") or {}
        return cls(
            results=[BatchItemResult.from_json(r) for r in body["results"]],
            batch_id=meta.get("batch_id", ""),
            total_processing_time=meta.get("total_processing_time", 0.0),
            items_processed=meta.get("items_processed", len(body["results"])),
            backend=meta.get("backend", ""),
            raw=body,
        )

    def __iter__(self) -> Any:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, index: int) -> BatchItemResult:
        return self.results[index]

    def by_id(self, id: str) -> BatchItemResult:
        """The result of the item sent as ``id`` (``KeyError`` if none)."""
        for result in self.results:
            if result.id == id:
                return result
        raise KeyError(id)


@dataclasses.dataclass(frozen=True)
class Model:
    """One model of ``GET /api/v1/models``."""

    id: str
    name: str
    type: str
    loaded: bool
    backend: str | None
    capabilities: list[str]
    size: str | None
    memory_usage: str | None
    estimated_memory: str | None
    raw: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> Self:
        """From one item of ``models``."""
        return cls(
            id=item["id"],
            name=item.get("name", item["id"]),
            type=item.get("type", ""),
            loaded=bool(item.get("loaded")),
            backend=item.get("backend"),
            capabilities=list(item.get("capabilities") or []),
            size=item.get("size"),
            memory_usage=item.get("memory_usage"),
            estimated_memory=item.get("estimated_memory"),
            raw=item,
        )


@dataclasses.dataclass(frozen=True)
class ModelDetails:
    """``GET /api/v1/models/{id}``: catalog facts, state and (when loaded) runtime and engine figures."""

    id: str
    name: str
    loaded: bool
    status: str
    backend: str | None
    architecture: str | None
    parameters: int | None
    context_length: int | None
    quantization: str | None
    format: str | None
    type: str
    capabilities: list[str]
    memory_usage: str | None
    performance: dict[str, Any]
    runtime: dict[str, Any] | None
    engine: dict[str, Any] | None
    raw: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, model: dict[str, Any]) -> Self:
        """From the ``model`` object."""
        return cls(
            id=model["id"],
            name=model.get("name", model["id"]),
            loaded=bool(model.get("loaded")),
            status=model.get("status", ""),
            backend=model.get("backend"),
            architecture=model.get("architecture"),
            parameters=model.get("parameters"),
            context_length=model.get("context_length"),
            quantization=model.get("quantization"),
            format=model.get("format"),
            type=model.get("type", ""),
            capabilities=list(model.get("capabilities") or []),
            memory_usage=model.get("memory_usage"),
            performance=dict(model.get("performance") or {}),
            runtime=model.get("runtime"),
            engine=model.get("engine"),
            raw=model,
        )


@dataclasses.dataclass(frozen=True)
class ModelLoadResult:
    """``POST /api/v1/models/{id}/load``."""

    id: str
    loaded: bool
    backend: str | None
    memory_usage: str | None
    load_time: float
    message: str
    raw: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Self:
        """From the response body."""
        model = body["model"]
        return cls(
            id=model["id"],
            loaded=bool(model.get("loaded")),
            backend=model.get("backend"),
            memory_usage=model.get("memory_usage"),
            load_time=model.get("load_time", 0.0),
            message=body.get("message", ""),
            raw=body,
        )


@dataclasses.dataclass(frozen=True)
class ModelUnloadResult:
    """``DELETE /api/v1/models/{id}/unload``: the memory freed (``"595.2MB"``)."""

    message: str
    freed_memory: str | None
    raw: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Self:
        """From the response body."""
        return cls(body.get("message", ""), body.get("freed_memory"), raw=body)


@dataclasses.dataclass(frozen=True)
class PluginConfig:
    """A plugin's configuration: enabled, priority (lower runs first), settings."""

    enabled: bool
    priority: int
    settings: dict[str, Any]

    @classmethod
    def from_json(cls, config: dict[str, Any]) -> Self:
        """From a ``config`` object."""
        settings = dict(config.get("settings") or {})
        return cls(bool(config.get("enabled", True)), int(config.get("priority", 50)), settings)


@dataclasses.dataclass(frozen=True)
class Plugin:
    """One plugin of ``GET /api/v1/plugins``."""

    id: str
    name: str
    version: str | None
    status: str
    category: str | None
    source: str | None
    essential: bool
    priority: int | None
    config: PluginConfig
    hooks: list[str]
    failures: int
    last_error: str | None
    raw: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False, compare=False)

    @property
    def loaded(self) -> bool:
        """Whether the plugin is loaded."""
        return self.status == "loaded"

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> Self:
        """From one item of ``plugins``."""
        return cls(
            id=item["id"],
            name=item.get("name", item["id"]),
            version=item.get("version"),
            status=item.get("status", ""),
            category=item.get("category"),
            source=item.get("source"),
            essential=bool(item.get("essential")),
            priority=item.get("priority"),
            config=PluginConfig.from_json(item.get("config") or {}),
            hooks=list(item.get("hooks") or []),
            failures=int(item.get("failures") or 0),
            last_error=item.get("last_error"),
            raw=item,
        )


@dataclasses.dataclass(frozen=True)
class PluginLoadResult:
    """``POST /api/v1/plugins/{id}/load``."""

    id: str
    status: str
    load_time: float
    enabled: bool
    priority: int
    message: str
    raw: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Self:
        """From the response body."""
        plugin = body["plugin"]
        config = plugin.get("config") or {}
        return cls(
            id=plugin["id"],
            status=plugin.get("status", ""),
            load_time=plugin.get("load_time", 0.0),
            enabled=bool(config.get("enabled", True)),
            priority=int(config.get("priority", 50)),
            message=body.get("message", ""),
            raw=body,
        )


@dataclasses.dataclass(frozen=True)
class SystemStatus:
    """``GET /api/v1/system/status``; the machine figures (``cpu_usage``, ``gpu_usage``…) come out of ``system``."""

    status: str
    uptime: float
    version: str
    instance: str | None
    cpu_usage: float | None
    memory_usage: float | None
    disk_usage: float | None
    gpu_count: int
    gpu_usage: list[Any]
    gpu_memory: list[Any]
    services: dict[str, str]
    engine: dict[str, Any]
    statistics: dict[str, Any]
    alerts_active: int
    raw: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Self:
        """From the response body."""
        system = body.get("system") or {}
        return cls(
            status=body["status"],
            uptime=body.get("uptime", 0.0),
            version=body.get("version", ""),
            instance=body.get("instance"),
            cpu_usage=system.get("cpu_usage"),
            memory_usage=system.get("memory_usage"),
            disk_usage=system.get("disk_usage"),
            gpu_count=int(system.get("gpu_count") or 0),
            gpu_usage=list(system.get("gpu_usage") or []),
            gpu_memory=list(system.get("gpu_memory") or []),
            services=dict(body.get("services") or {}),
            engine=dict(body.get("engine") or {}),
            statistics=dict(body.get("statistics") or {}),
            alerts_active=int(body.get("alerts_active") or 0),
            raw=body,
        )


@dataclasses.dataclass(frozen=True)
class GPUInfo:
    """``GET /api/v1/system/gpu``: every GPU (``gpu_count`` 0 and ``nvml_error`` where there is none)."""

    gpu_count: int
    gpus: list[dict[str, Any]]
    nvml_error: str | None
    raw: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Self:
        """From the response body."""
        return cls(int(body.get("gpu_count") or 0), list(body.get("gpus") or []), body.get("nvml_error"), raw=body)


@dataclasses.dataclass(frozen=True)
class Metrics:
    """``GET /api/v1/system/metrics``: one list per series, aligned with ``timestamps`` (``None``: nothing stored)."""

    timeframe: str
    granularity: str
    timestamps: list[str]
    request_rate: list[float | None]
    response_time: list[float | None]
    error_rate: list[float | None]
    gpu_utilization: list[float | None]
    memory_usage: list[float | None]
    cpu_usage: list[float | None]
    tokens_per_second: list[float | None]
    raw: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Self:
        """From the response body."""
        m = body.get("metrics") or {}
        names = ("request_rate", "response_time", "error_rate", "gpu_utilization", "memory_usage", "cpu_usage")
        series = {name: list(m.get(name) or []) for name in (*names, "tokens_per_second")}
        return cls(
            timeframe=body.get("timeframe", ""),
            granularity=body.get("granularity", ""),
            timestamps=list(m.get("timestamps") or []),
            raw=body,
            **series,
        )


@dataclasses.dataclass(frozen=True)
class LogEntry:
    """One record of ``GET /api/v1/system/logs``."""

    timestamp: str
    level: str
    component: str
    logger: str
    message: str
    metadata: dict[str, Any]

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> Self:
        """From one item of ``logs``."""
        return cls(
            timestamp=item.get("timestamp", ""),
            level=item.get("level", ""),
            component=item.get("component", ""),
            logger=item.get("logger", ""),
            message=item.get("message", ""),
            metadata=dict(item.get("metadata") or {}),
        )


@dataclasses.dataclass(frozen=True)
class Alerts:
    """``GET /api/v1/monitoring/alerts``: the firing alerts and the rules in force."""

    alerts: list[dict[str, Any]]
    rules: list[dict[str, Any]]

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Self:
        """From the response body."""
        return cls(list(body.get("alerts") or []), list(body.get("rules") or []))


@dataclasses.dataclass(frozen=True)
class LoginResult:
    """``POST /api/v1/auth/login``: the login token and who it is for."""

    token: str = dataclasses.field(repr=False)
    expires_in: int
    user_id: int
    username: str
    role: str
    permissions: list[str]

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Self:
        """From the response body."""
        user = body.get("user") or {}
        return cls(
            token=body["token"],
            expires_in=int(body.get("expires_in") or 0),
            user_id=user.get("id"),
            username=user.get("username", ""),
            role=user.get("role", ""),
            permissions=list(user.get("permissions") or []),
        )


@dataclasses.dataclass(frozen=True)
class CreatedApiKey:
    """``POST /v1/auth/keys``: the new key's secret ``api_key`` (shown only this once)."""

    key_id: int
    api_key: str = dataclasses.field(repr=False)
    prefix: str | None = None
    expires: str | None = None
    permissions: list[str] = dataclasses.field(default_factory=list)

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Self:
        """From the response body."""
        return cls(
            key_id=body["key_id"],
            api_key=body["api_key"],
            prefix=body.get("prefix"),
            expires=body.get("expires"),
            permissions=list(body.get("permissions") or []),
        )


@dataclasses.dataclass(frozen=True)
class ApiKey:
    """One key of ``GET /api/v1/auth/keys`` (never its secret)."""

    id: int
    name: str
    prefix: str
    role: str
    permissions: list[str] | None
    tier: str | None
    created_at: str | None
    expires_at: str | None
    revoked_at: str | None
    last_used_at: str | None

    @property
    def revoked(self) -> bool:
        """Whether the key is revoked."""
        return self.revoked_at is not None

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> Self:
        """From one item of ``keys``."""
        fields = [f.name for f in dataclasses.fields(cls)]
        return cls(**{name: item.get(name) for name in fields})


@dataclasses.dataclass(frozen=True)
class ChatResult:
    """A chat streamed over the socket: the whole ``text``, with ``chunks`` as they came."""

    request_id: str
    text: str
    finish_reason: str | None
    usage: dict[str, int]
    inference_time: float
    model: str | None
    chunks: list[str]

    @classmethod
    def from_json(cls, done: dict[str, Any], chunks: list[str]) -> Self:
        """From the ``chat_done`` event and the chunks' texts."""
        return cls(
            request_id=done["request_id"],
            text=done.get("text", ""),
            finish_reason=done.get("finish_reason"),
            usage=dict(done.get("usage") or {}),
            inference_time=done.get("inference_time", 0.0),
            model=done.get("model"),
            chunks=chunks,
        )
