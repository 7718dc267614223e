"""The benchmark settings: the fields of the GenAI Bench document, validated."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from .errors import ConfigurationError
from .scenarios import DATASET, Scenario, parse_scenario

TASKS = ("text-to-text", "text-to-embeddings")
BACKENDS = ("openai",)
ENDPOINTS = ("chat", "completions")
#: SLO names accepted in ``goodput`` (milliseconds), with the metric each one bounds.
SLOS = {"ttft": "ttft", "tpot": "tpot", "e2el": "e2e_latency", "e2e_latency": "e2e_latency", "itl": "itl"}


@dataclass
class BenchmarkConfig:
    """What to benchmark and how hard; build it directly or with :meth:`from_dict` (both validate)."""

    api_backend: str = "openai"
    api_base: str = "http://127.0.0.1:5000/v1"
    api_key: str | None = None
    api_model_name: str = ""
    task: str = "text-to-text"
    dataset_name: str | None = None
    traffic_scenario: list[str] | None = None
    num_users: list[int] = field(default_factory=lambda: [1])
    max_time_per_run: float = 60.0
    max_requests_per_run: int | None = 100
    spawn_rate: float | None = None
    request_rate: float | None = None
    output_dir: str | None = None
    additional_sampling_params: dict[str, Any] = field(default_factory=dict)
    server_info: dict[str, Any] = field(default_factory=dict)
    goodput: dict[str, float] = field(default_factory=dict)
    seed: int = 0
    endpoint: str = "chat"
    request_timeout: float = 300.0
    experiment_name: str | None = None

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Check and normalise every field; raise :class:`ConfigurationError` naming the first bad one."""
        self._choice("api_backend", BACKENDS)
        self._choice("task", TASKS)
        self._choice("endpoint", ENDPOINTS)
        url = urlparse(self.api_base) if isinstance(self.api_base, str) else None
        if url is None or url.scheme not in ("http", "https") or not url.netloc:
            raise ConfigurationError(
                "api_base", f"must be an http(s) URL like http://host:5000/v1, got {self.api_base!r}"
            )
        self.api_base = self.api_base.rstrip("/")
        if self.api_key is not None and not isinstance(self.api_key, str):
            raise ConfigurationError("api_key", "must be a string")
        if not isinstance(self.api_model_name, str) or not self.api_model_name.strip():
            raise ConfigurationError("api_model_name", "the model to benchmark is required")
        if self.dataset_name is not None and (not isinstance(self.dataset_name, str) or not self.dataset_name):
            raise ConfigurationError("dataset_name", "must be 'sonnets' or the path of a .txt or .jsonl file")
        if isinstance(self.traffic_scenario, str):
            self.traffic_scenario = [self.traffic_scenario]
        if self.traffic_scenario is None or self.traffic_scenario == []:
            own_file = self.dataset_name not in (None, "sonnets")
            default = "E(100)" if self.task == "text-to-embeddings" else "D(100,100)"
            self.traffic_scenario = [DATASET if own_file else default]
        if not isinstance(self.traffic_scenario, list):
            raise ConfigurationError("traffic_scenario", "must be a list of scenario strings")
        self.traffic_scenario = [parse_scenario(s).text for s in self.traffic_scenario]
        if isinstance(self.num_users, int) and not isinstance(self.num_users, bool):
            self.num_users = [self.num_users]
        if not isinstance(self.num_users, list) or not self.num_users:
            raise ConfigurationError("num_users", "must be a non-empty list of positive integers")
        for n in self.num_users:
            if not isinstance(n, int) or isinstance(n, bool) or n < 1 or n > 10_000:
                raise ConfigurationError("num_users", f"each value must be an integer in [1, 10000], got {n!r}")
        self._positive("max_time_per_run", self.max_time_per_run, allow_none=False)
        if self.max_requests_per_run is not None and (
            not isinstance(self.max_requests_per_run, int)
            or isinstance(self.max_requests_per_run, bool)
            or self.max_requests_per_run < 1
        ):
            raise ConfigurationError(
                "max_requests_per_run", f"must be a positive integer, got {self.max_requests_per_run!r}"
            )
        self._positive("spawn_rate", self.spawn_rate)
        self._positive("request_rate", self.request_rate)
        self._positive("request_timeout", self.request_timeout, allow_none=False)
        if self.output_dir is not None:
            if not isinstance(self.output_dir, str | Path) or not str(self.output_dir):
                raise ConfigurationError("output_dir", "must be a folder path")
            self.output_dir = str(self.output_dir)
        for name in ("additional_sampling_params", "server_info", "goodput"):
            if not isinstance(getattr(self, name), dict):
                raise ConfigurationError(name, "must be a mapping")
        for key, value in self.goodput.items():
            if key not in SLOS:
                raise ConfigurationError("goodput", f"unknown SLO {key!r}; use {', '.join(sorted(SLOS))}")
            self._positive("goodput", value, allow_none=False)
        if "stream" in self.additional_sampling_params:
            raise ConfigurationError("additional_sampling_params", "'stream' is set by the benchmark")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ConfigurationError("seed", "must be an integer")
        if self.experiment_name is not None and (
            not isinstance(self.experiment_name, str) or not self.experiment_name or "/" in self.experiment_name
        ):
            raise ConfigurationError("experiment_name", "must be a plain folder name")

    def _choice(self, name: str, allowed: tuple[str, ...]) -> None:
        if getattr(self, name) not in allowed:
            raise ConfigurationError(name, f"must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")

    @staticmethod
    def _positive(name: str, value: Any, allow_none: bool = True) -> None:
        if value is None and allow_none:
            return
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
            raise ConfigurationError(name, f"must be a positive number, got {value!r}")

    # ------------------------------------------------------------------ conversions
    @property
    def scenarios(self) -> list[Scenario]:
        """The parsed traffic scenarios."""
        return [parse_scenario(s) for s in self.traffic_scenario or []]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchmarkConfig:
        """Build a config from a mapping (e.g. JSON); unknown keys are refused."""
        if not isinstance(data, dict):
            raise ConfigurationError("config", "must be a mapping")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigurationError(unknown[0], "unknown setting")
        return cls(**data)

    def to_dict(self, redact_key: bool = False) -> dict[str, Any]:
        """The settings as a JSON-safe dict (``redact_key`` hides the API key)."""
        data = asdict(self)
        if redact_key and data["api_key"]:
            data["api_key"] = data["api_key"][:6] + "…"
        return data
