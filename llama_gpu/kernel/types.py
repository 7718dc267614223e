"""The plain data objects that travel through hooks.

They are mutable on purpose where a hook is an in-place pipeline: a ``prepare_request``
filter edits the :class:`InferenceRequest`, a ``process_chunk`` filter the
:class:`Chunk`, a ``process_response`` filter the :class:`InferenceResponse`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
import uuid
from typing import Any


def utc_iso(moment: float | dt.datetime | None = None, timespec: str = "milliseconds") -> str:
    """``moment`` (epoch seconds or a datetime, naive meaning UTC; default now) as ISO-8601 UTC ending in ``Z``."""
    if moment is None:
        moment = dt.datetime.now(dt.UTC)
    elif isinstance(moment, int | float):
        moment = dt.datetime.fromtimestamp(moment, dt.UTC)
    elif moment.tzinfo is None:  # SQLite gives naive datetimes back: they were stored in UTC
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


def new_id(prefix: str) -> str:
    """A fresh identifier such as ``req_3f2a…``."""
    return f"{prefix}_{uuid.uuid4().hex}"


@dataclasses.dataclass
class InferenceRequest:
    """One generation request, as the filters and the backend see it."""

    prompt: str
    model: str = "default"
    max_tokens: int = 100
    #: 0 means greedy decoding.
    temperature: float = 1.0
    top_p: float = 1.0
    #: 0 disables top-k.
    top_k: int = 0
    min_p: float = 0.0
    repeat_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    stop: list[str] = dataclasses.field(default_factory=list)
    seed: int | None = None
    stream: bool = False
    #: Chat messages (``[{"role", "content"}]``); when set, the model's chat template
    #: renders them into ``prompt`` before generation.
    messages: list[dict[str, Any]] | None = None
    #: ``None``: no log-probabilities; ``N``: the chosen token's and the top ``N`` alternatives'.
    logprobs: int | None = None
    #: ``json_object`` constrains the output to JSON (where the backend supports it).
    response_format: str | None = None
    #: Seconds the model stays loaded after this request (overrides LLAMA_GPU_KEEP_ALIVE).
    keep_alive: float | None = None
    id: str = dataclasses.field(default_factory=lambda: new_id("req"))
    #: The authenticated caller, when there is one.
    identity: Identity | None = None
    #: Which API received it (``native``, ``openai``…), for logs and metrics.
    endpoint: str = "native"
    #: Free room for plugins to pass information down the pipeline.
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    created_at: float = dataclasses.field(default_factory=time.time)
    #: Requests that join the engine at the same step (the choices of one OpenAI request, so that a seed
    #: repeats: a batch of another size computes slightly other logits) share a ``group`` and know its size.
    group: str | None = None
    group_size: int = 1


@dataclasses.dataclass
class Chunk:
    """One streamed piece of output (usually one token)."""

    text: str
    index: int
    token_id: int | None = None
    logprob: float | None = None
    top_logprobs: dict[str, float] | None = None
    #: Set by a filter to drop this chunk from the stream.
    dropped: bool = False


@dataclasses.dataclass
class InferenceResponse:
    """The finished result of a request."""

    request_id: str
    model: str
    backend: str
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    #: ``stop`` (natural end or stop sequence), ``length`` (max_tokens) or ``cancelled``.
    finish_reason: str = "stop"
    #: Seconds from admission (time in the queue included) to the end of generation.
    inference_time: float = 0.0
    #: Seconds to the first chunk.
    time_to_first_token: float | None = None
    #: Seconds the request waited in the engine's queue before its sequence started.
    queue_time: float | None = None
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Credentials:
    """What a caller presented: an API key, a bearer token, or nothing."""

    api_key: str | None = None
    bearer_token: str | None = None
    remote_addr: str | None = None


@dataclasses.dataclass(frozen=True)
class Identity:
    """An authenticated caller."""

    id: str
    #: ``read``, ``write`` and/or ``admin``.
    roles: frozenset[str] = frozenset()
    kind: str = "api_key"
    name: str | None = None
    #: Rate-limit tier: ``standard`` or ``premium``.
    tier: str = "standard"
    #: Whose rate limits this identity counts against (``user:3``, or ``api_key:7`` for the root
    #: key of a lineage with no user); ``None``: its own (``<kind>:<id>``).
    owner: str | None = None

    def has(self, role: str) -> bool:
        """Whether the identity holds ``role`` (``admin`` implies every role)."""
        return role in self.roles or "admin" in self.roles


@dataclasses.dataclass(frozen=True)
class RateLimitStatus:
    """Where a caller stands against one limit (sent as ``X-RateLimit-*`` headers)."""

    limit: int
    remaining: int
    #: When the window resets (seconds since the epoch).
    reset: float
    allowed: bool = True

    @property
    def retry_after(self) -> int:
        """Seconds until the caller may try again (at least 1)."""
        import math

        return max(1, math.ceil(self.reset - time.time()))


@dataclasses.dataclass(frozen=True)
class Event:
    """One message on the event bus."""

    type: str
    data: dict[str, Any]
    timestamp: float = dataclasses.field(default_factory=time.time)
    id: str = dataclasses.field(default_factory=lambda: new_id("evt"))


@dataclasses.dataclass(frozen=True)
class PluginInfo:
    """What a plugin says about itself (set as ``PLUGIN_INFO`` on the module or class).

    Anything left out is taken from the installed distribution's metadata.
    """

    name: str | None = None
    version: str | None = None
    category: str = "general"
    author: str | None = None
    description: str | None = None
    #: Essential plugins cannot be unloaded or disabled.
    essential: bool = False
    #: Position in pipeline hooks: lower runs earlier.
    priority: int = 50
    #: The plugin's settings before an operator changes them.
    default_settings: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: A security plugin (an input-limit filter, say): its failures refuse the request and it is
    #: never disabled after repeated ones. Plugins with an access hook (``authenticate``,
    #: ``check_permission``, ``rate_limit``) are treated so whatever they declare.
    fail_closed: bool = False
    #: The plugin's settings as a marshmallow ``Schema`` class: filled from ``default_settings``, the
    #: ``LLAMA_GPU_<PLUGIN>_<KEY>`` variables (and a field's ``metadata={"alias": <Settings field>}``),
    #: then the API, and validated once (see :mod:`llama_gpu.kernel.plugin_settings`).
    settings_schema: Any = None
