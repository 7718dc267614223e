"""Settings from ``LLAMA_GPU_*`` environment variables.

Each field of :class:`Settings` is read from ``LLAMA_GPU_<FIELD>`` (upper case); the CLI
flags mirror them. A value that does not parse raises :class:`ConfigurationError` naming
the variable, so a typo fails at start-up rather than at the first request.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import ConfigurationError

ENV_PREFIX = "LLAMA_GPU_"


def _default_data_dir() -> str:
    return str(Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "llama-gpu")


@dataclasses.dataclass(frozen=True)
class Settings:
    """Every setting of the server, with its default."""

    #: Address and port ``llama-gpu serve`` listens on.
    host: str = "127.0.0.1"
    port: int = 5000
    #: Folder for the embedded database, the model store and other state.
    data_dir: str = dataclasses.field(default_factory=_default_data_dir)
    #: Model answering requests that name ``"default"`` or no model.
    default_model: str = "qwen2.5-coder-0.5b-instruct"
    #: Folder scanned for ``*.gguf`` files and Hugging Face (safetensors) directories.
    models_dir: str = ""
    #: Folder where models published as packages are assembled (default ``<data_dir>/store``); several
    #: servers, or a whole test run, may share one.
    model_store: str = ""
    #: Models kept in memory at once; loading one more evicts the least recently used idle one.
    max_loaded_models: int = 2
    #: Seconds an idle model stays loaded (negative: forever; 0: unload after each request).
    keep_alive: float = 300.0
    #: Which models a request may load on first use: ``default-only`` (the default model only),
    #: ``any`` (every known model), ``off`` (none: an admin loads them); ``true``/``false`` are
    #: aliases of ``any``/``off``.
    autoload: str = "default-only"
    #: Load the default model in the background at start-up.
    preload: bool = True
    #: Bytes all loaded models may take together (0: only the free memory limits).
    memory_limit: int = 0
    #: Third-party plugins allowed (entry-point names); ``None`` allows every installed one.
    plugins: tuple[str, ...] | None = None
    #: Plugins never loaded, built-in or third-party (essential ones excepted: error).
    disable_plugins: tuple[str, ...] = ()
    #: Load allowed third-party plugins at start-up (else only on request through the API).
    autoload_plugins: bool = True
    #: Consecutive failures after which a plugin is disabled.
    plugin_failure_threshold: int = 3
    #: Longest prompt accepted, in characters (enforced by the ``limits`` filter).
    max_input_length: int = 32768
    #: Largest number of tokens a request may ask for.
    max_tokens_limit: int = 8192
    #: Largest request body, in bytes.
    max_body_size: int = 4 * 1024 * 1024
    #: Sequences one model decodes together (continuous batching); each gets its own context.
    parallel: int = 8
    #: Requests that may wait per model beyond those running; more are refused at once (503).
    max_queue: int = 64
    #: Seconds a request may wait in a model's queue before it is refused (0: no limit).
    queue_timeout: float = 60.0
    #: SQLAlchemy URL of the database; empty: SQLite (WAL) at ``<data_dir>/llama-gpu.db``.
    database_url: str = ""
    #: Apply pending migrations when the database is first used (else refuse to start).
    db_auto_upgrade: bool = True
    #: ``required``: every API call needs an API key or a login token; ``off``: open (local use).
    auth: str = "required"
    #: With ``auth=off``, allow ``host`` to be a non-loopback address anyway (anyone who reaches it is an admin).
    unsafe_open_bind: bool = False
    #: Host names the server answers to (Flask's ``TRUSTED_HOSTS``; ``.example.com`` also matches
    #: subdomains); empty: any ``Host``, except with ``auth=off``, where only loopback names and these are.
    trusted_hosts: tuple[str, ...] = ()
    #: Secret that signs login tokens (HS256, at least 32 bytes); empty: generated once into ``<data_dir>/jwt-secret``.
    jwt_secret: str = ""
    #: Seconds a login token is valid.
    jwt_expires: int = 3600
    #: Redis URL shared by instances for rate-limit counters; empty: in memory.
    redis_url: str = ""
    #: Enforce rate limits.
    rate_limits: bool = True
    #: Overrides of the per-group limits, e.g. ``infer=2000/200,batch=50/5`` (authenticated/anonymous per hour).
    rate_limit_overrides: str = ""
    #: ``/metrics`` answers without credentials (else it needs a ``read`` key).
    metrics_public: bool = True
    #: Seconds between live samples (``system_metrics``, ``gpu_metrics``, ``inference_stats`` events; alerts).
    metrics_interval: float = 5.0
    #: Seconds between samples stored in the database (the ``/api/v1/system/metrics`` series).
    metrics_store_interval: float = 60.0
    #: Days stored samples are kept.
    metrics_retention_days: float = 8.0
    #: Proxies in front of the server whose ``X-Forwarded-For`` is trusted (0: use the peer address).
    trusted_proxies: int = 0
    #: Open SSE streams and Socket.IO connections one identity may hold at once per process (0: no cap).
    max_streams_per_identity: int = 16
    #: Open SSE streams and Socket.IO requests one client address may hold at once per process (0: no cap).
    max_streams_per_address: int = 32
    #: Open SSE streams and Socket.IO requests per process in all (0: no cap); gunicorn gets 16 threads more.
    max_streams: int = 48
    #: Socket.IO connect attempts per client address and minute (0: no limit).
    socket_connects_per_minute: int = 60
    #: Refused Socket.IO connects (bad or missing credentials) per client address and minute (0: no limit).
    socket_failures_per_minute: int = 10
    #: Seconds between re-checks of every Socket.IO connection's credentials (revoked, expired: disconnected).
    socket_recheck_interval: float = 5.0
    #: Seconds ``stop()`` waits for running requests before shutting down anyway.
    drain_timeout: float = 30.0
    #: Events buffered per subscriber before new ones are dropped for it.
    event_queue_size: int = 1000
    #: Python logging level.
    log_level: str = "INFO"
    #: Sequences one caller (user, key or address) may have running or queued at once, all models together.
    max_concurrent_sequences: int = 64
    #: Benchmark jobs one caller may have queued or running at once.
    max_benchmark_jobs: int = 2
    #: Longest a benchmark job may run, in seconds (its runs and its API key end then).
    max_benchmark_seconds: float = 1800.0
    #: Days request-log rows are kept (0: forever).
    request_log_retention_days: float = 30.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``env`` (default: ``os.environ``), then apply ``overrides``."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            name = ENV_PREFIX + field.name.upper()
            if name in env:
                values[field.name] = _parse(name, env[name], field.type)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.create(**values)

    @classmethod
    def create(cls, **values: Any) -> Settings:
        """Build settings from Python values, checking names and ranges."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigurationError(f"unknown setting(s): {', '.join(unknown)}", details={"unknown": unknown})
        if "autoload" in values:
            values["autoload"] = _autoload(values["autoload"])
        for key in ("plugins", "disable_plugins", "trusted_hosts"):
            if isinstance(values.get(key), str):
                values[key] = _split(values[key])
            elif values.get(key) is not None:
                values[key] = tuple(values[key])
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Raise :class:`ConfigurationError` for values out of range."""
        positive = (
            "port",
            "plugin_failure_threshold",
            "max_input_length",
            "max_tokens_limit",
            "max_body_size",
            "event_queue_size",
            "max_loaded_models",
            "parallel",
            "max_concurrent_sequences",
            "max_benchmark_jobs",
        )
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigurationError(
                    f"{ENV_PREFIX}{name.upper()} must be a positive integer, got {value!r}",
                    details={"setting": name, "value": repr(value)},
                )
        if self.port > 65535:
            raise ConfigurationError(f"{ENV_PREFIX}PORT must be at most 65535, got {self.port}")
        if self.memory_limit < 0:
            raise ConfigurationError(f"{ENV_PREFIX}MEMORY_LIMIT must be >= 0 bytes, got {self.memory_limit}")
        if not isinstance(self.max_queue, int) or isinstance(self.max_queue, bool) or self.max_queue < 0:
            raise ConfigurationError(f"{ENV_PREFIX}MAX_QUEUE must be an integer >= 0, got {self.max_queue!r}")
        if self.queue_timeout < 0:
            raise ConfigurationError(f"{ENV_PREFIX}QUEUE_TIMEOUT must be >= 0, got {self.queue_timeout}")
        if self.drain_timeout < 0:
            raise ConfigurationError(f"{ENV_PREFIX}DRAIN_TIMEOUT must be >= 0, got {self.drain_timeout}")
        for name in ("metrics_interval", "metrics_store_interval", "metrics_retention_days"):
            if not getattr(self, name) > 0:
                raise ConfigurationError(
                    f"{ENV_PREFIX}{name.upper()} must be a positive number, got {getattr(self, name)!r}",
                    details={"setting": name},
                )
        if not self.max_benchmark_seconds > 0:
            raise ConfigurationError(
                f"{ENV_PREFIX}MAX_BENCHMARK_SECONDS must be a positive number, got {self.max_benchmark_seconds!r}"
            )
        if self.request_log_retention_days < 0:
            raise ConfigurationError(
                f"{ENV_PREFIX}REQUEST_LOG_RETENTION_DAYS must be >= 0, got {self.request_log_retention_days!r}"
            )
        if self.autoload not in AUTOLOAD_MODES:
            raise ConfigurationError(
                f"{ENV_PREFIX}AUTOLOAD must be one of {', '.join(AUTOLOAD_MODES)} or true/false, got {self.autoload!r}",
                details={"setting": "autoload", "value": repr(self.autoload)},
            )
        if self.auth not in ("required", "off"):
            raise ConfigurationError(f"{ENV_PREFIX}AUTH must be 'required' or 'off', got {self.auth!r}")
        if self.auth == "off" and not is_loopback(self.host) and not self.unsafe_open_bind:
            raise ConfigurationError(
                f"{ENV_PREFIX}AUTH=off makes every caller an admin, so the server listens only on a loopback "
                f"address (127.0.0.1, ::1, localhost), not {self.host!r}. Turn authentication on, or set "
                f"{ENV_PREFIX}UNSAFE_OPEN_BIND=1 (serve --unsafe-open-bind) if the network is yours alone.",
                details={"setting": "host", "value": self.host},
            )
        if self.jwt_secret and len(self.jwt_secret.encode()) < 32:
            raise ConfigurationError(
                f"{ENV_PREFIX}JWT_SECRET is {len(self.jwt_secret.encode())} bytes long; a signing secret needs at "
                "least 32 random bytes (e.g. the output of `openssl rand -hex 32`), or leave it unset to have one "
                "generated",
                details={"setting": "jwt_secret"},
            )
        if self.jwt_expires <= 0 or self.trusted_proxies < 0:
            raise ConfigurationError(
                f"{ENV_PREFIX}JWT_EXPIRES must be > 0 and {ENV_PREFIX}TRUSTED_PROXIES >= 0",
                details={"jwt_expires": self.jwt_expires, "trusted_proxies": self.trusted_proxies},
            )
        for name in (
            "max_streams_per_identity",
            "max_streams_per_address",
            "max_streams",
            "socket_connects_per_minute",
            "socket_failures_per_minute",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigurationError(
                    f"{ENV_PREFIX}{name.upper()} must be an integer >= 0, got {value!r}", details={"setting": name}
                )
        if not self.socket_recheck_interval > 0:
            raise ConfigurationError(
                f"{ENV_PREFIX}SOCKET_RECHECK_INTERVAL must be a positive number, got {self.socket_recheck_interval!r}",
                details={"setting": "socket_recheck_interval"},
            )
        if self.log_level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ConfigurationError(f"{ENV_PREFIX}LOG_LEVEL must be a logging level, got {self.log_level!r}")

    @property
    def self_url(self) -> str:
        """The server's own base URL from its configured address (a wildcard bind means loopback)."""
        host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    def may_autoload(self, model_id: str) -> bool:
        """Whether a request may load ``model_id`` on first use (``model_id`` resolved, not ``default``)."""
        if self.autoload == "any":
            return True
        return self.autoload == "default-only" and model_id == self.default_model

    @property
    def models_path(self) -> str:
        """Where models live: ``models_dir``, else ``<data_dir>/models``."""
        return self.models_dir or os.path.join(self.data_dir, "models")

    @property
    def store_path(self) -> str:
        """Where packaged models are assembled: ``model_store``, else ``<data_dir>/store``."""
        return self.model_store or os.path.join(self.data_dir, "store")

    @property
    def database(self) -> str:
        """The database URL in use: ``database_url``, else the embedded SQLite file."""
        return self.database_url or "sqlite:///" + os.path.join(self.data_dir, "llama-gpu.db")

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied and checked."""
        return self.create(**{**dataclasses.asdict(self), **changes})


#: Values of ``LLAMA_GPU_AUTOLOAD``; booleans are aliases (``true``: ``any``, ``false``: ``off``).
AUTOLOAD_MODES = ("default-only", "any", "off")
_AUTOLOAD_ALIASES = {"true": "any", "1": "any", "yes": "any", "on": "any", "false": "off", "0": "off", "no": "off"}


def _autoload(value: Any) -> Any:
    if isinstance(value, bool):
        return "any" if value else "off"
    if isinstance(value, str):
        lowered = value.strip().lower()
        return _AUTOLOAD_ALIASES.get(lowered, lowered)
    return value


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name, IPv6 possibly in brackets) is this machine only."""
    name = host.strip().strip("[]").lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _split(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _parse(name: str, raw: str, annotation: Any) -> Any:
    kind = str(annotation)
    try:
        if kind.startswith("int"):
            return int(raw)
        if kind.startswith("float"):
            return float(raw)
        if kind.startswith("bool"):
            lowered = raw.strip().lower()
            if lowered in {"1", "true", "yes", "on"}:
                return True
            if lowered in {"0", "false", "no", "off", ""}:
                return False
            raise ValueError(raw)
        if kind.startswith("tuple"):
            return _split(raw)
    except ValueError:
        raise ConfigurationError(
            f"{name}={raw!r} is not a valid {kind.split(' ')[0].split('[')[0]}",
            details={"variable": name, "value": raw},
        ) from None
    return raw
