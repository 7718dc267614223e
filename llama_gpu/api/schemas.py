"""marshmallow schemas of request bodies: every field typed and ranged; inference bodies build the kernel request.

``InferSchema().to_request(body, id=…, identity=…)`` (``to_requests`` for a batch) turns a
loaded body into the :class:`~llama_gpu.kernel.types.InferenceRequest` the kernel serves, so
blueprints only parse, call the kernel and serialise.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates

from ..kernel.types import Identity, InferenceRequest


class StrictBoolean(fields.Boolean):
    """A JSON ``true``/``false`` only: ``truthy={True}`` alone lets ``1`` and ``0`` through (``1 == True``)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


class StrictFloat(fields.Float):
    """A JSON number only (no ``"0.5"`` string, no boolean), finite."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(allow_nan=False, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> float | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.make_error("invalid", input=value)
        return super()._deserialize(value, attr, data, **kwargs)


class PluginConfigSchema(Schema):
    """``config`` of a plugin load or configuration request."""

    enabled = StrictBoolean()
    priority = fields.Integer(strict=True, validate=validate.Range(-1000, 1000))
    settings = fields.Dict(keys=fields.String(validate=validate.Length(1, 100)))


class PluginLoadSchema(Schema):
    """Body of ``POST /api/v1/plugins/{id}/load`` (optional)."""

    config = fields.Nested(PluginConfigSchema, load_default=dict)


class PluginConfigureSchema(Schema):
    """Body of ``PUT /api/v1/plugins/{id}/config``."""

    config = fields.Nested(PluginConfigSchema, required=True)


def native_request(
    body: dict[str, Any], field: str, prompt: str, max_tokens: int, *, id: str, identity: Identity | None, **extra: Any
) -> InferenceRequest:
    """The kernel request of a native body; ``field`` names the prompt's field (in errors)."""
    return InferenceRequest(
        prompt=prompt,
        model=body["model"],
        max_tokens=max_tokens,
        temperature=body["temperature"],
        id=id,
        identity=identity,
        endpoint="native",
        metadata={"input_field": field},
        **extra,
    )


class InferSchema(Schema):
    """Body of ``POST /api/v1/infer``."""

    def to_request(self, body: dict[str, Any], *, id: str, identity: Identity | None) -> InferenceRequest:
        """The kernel request of a loaded body."""
        return native_request(
            body,
            "text",
            body["text"],
            body["max_tokens"],
            id=id,
            identity=identity,
            top_p=body["top_p"],
            stream=self.streams(body),
        )

    def streams(self, body: dict[str, Any]) -> bool:
        """Whether the answer is a stream of events."""
        return bool(body["stream"])

    text = fields.String(required=True)
    model = fields.String(load_default="default", validate=validate.Length(1, 200))
    max_tokens = fields.Integer(strict=True, load_default=100, validate=validate.Range(1, 1_000_000))
    temperature = StrictFloat(load_default=1.0, validate=validate.Range(0.1, 2.0))
    top_p = StrictFloat(load_default=1.0, validate=validate.Range(0.0, 1.0, min_inclusive=False))
    stream = StrictBoolean(load_default=False)


class ModelLoadSchema(Schema):
    """Body of ``POST /api/v1/models/{id}/load`` (optional)."""

    backend = fields.String(validate=validate.Length(1, 50))
    quantization = fields.String(validate=validate.Length(1, 20))
    max_memory = fields.Raw()
    prefer_gpu = StrictBoolean(load_default=True)
    n_ctx = fields.Integer(strict=True, validate=validate.Range(16, 1_048_576))

    @validates("max_memory")
    def _max_memory(self, value: object, **_: object) -> None:
        if isinstance(value, bool) or not isinstance(value, (str, int)) or (isinstance(value, int) and value <= 0):
            raise ValidationError("max_memory must be a positive byte count or a string like '80%' or '8GB'")


#: Most items one batch request may carry (``inputs`` of batch_infer, ``requests`` of batch/generate).
MAX_BATCH_ITEMS = 64


def _check_batch_size(items: list[object]) -> None:
    """Refuse an empty batch or one over :data:`MAX_BATCH_ITEMS` (read at call time)."""
    if not 1 <= len(items) <= MAX_BATCH_ITEMS:
        raise ValidationError(f"must hold between 1 and {MAX_BATCH_ITEMS} items, got {len(items)}")


class StreamInferSchema(InferSchema):
    """Body of ``POST /api/v1/stream_infer`` (always streams; ``stream`` is accepted and ignored)."""

    temperature = StrictFloat(load_default=1.0, validate=validate.Range(0.1, 2.0))
    top_p = StrictFloat(load_default=1.0, validate=validate.Range(0.0, 1.0, min_inclusive=False))
    stream = StrictBoolean(load_default=True)

    def streams(self, body: dict[str, Any]) -> bool:
        """Always."""
        return True


class BatchInferItemSchema(Schema):
    """One item of ``inputs`` in ``POST /api/v1/batch_infer``."""

    id = fields.String(required=True, validate=validate.Length(1, 128))
    text = fields.String(required=True)
    max_tokens = fields.Integer(strict=True, load_default=100, validate=validate.Range(1, 1_000_000))


class BatchInferSchema(Schema):
    """Body of ``POST /api/v1/batch_infer``: ids are unique within the batch."""

    inputs = fields.List(fields.Nested(BatchInferItemSchema), required=True, validate=_check_batch_size)
    model = fields.String(load_default="default", validate=validate.Length(1, 200))
    temperature = StrictFloat(load_default=1.0, validate=validate.Range(0.1, 2.0))

    def to_requests(self, body: dict[str, Any], *, id: str, identity: Identity | None) -> list[InferenceRequest]:
        """One kernel request per item (ids ``<id>.<n>``), in input order."""
        return [
            native_request(body, "text", item["text"], item["max_tokens"], id=f"{id}.{n}", identity=identity)
            for n, item in enumerate(body["inputs"])
        ]

    @validates("inputs")
    def _unique_ids(self, value: list[dict[str, object]], **_: object) -> None:
        # marshmallow also runs this on the valid part of a list whose other items failed
        counts = Counter(str(item["id"]) for item in value if isinstance(item, dict) and "id" in item)
        duplicates = sorted(id_ for id_, n in counts.items() if n > 1)
        if duplicates:
            raise ValidationError(f"ids must be unique within the batch; repeated: {', '.join(duplicates)}")


class GenerateSchema(Schema):
    """Body of ``POST /api/v1/generate`` and ``/api/v1/generate/stream`` (temperature 0 is greedy)."""

    prompt = fields.String(required=True)
    model = fields.String(load_default="default", validate=validate.Length(1, 200))
    max_tokens = fields.Integer(strict=True, load_default=100, validate=validate.Range(1, 1_000_000))
    temperature = StrictFloat(load_default=1.0, validate=validate.Range(0.0, 2.0))
    stream = StrictBoolean(load_default=False)

    def to_request(self, body: dict[str, Any], *, id: str, identity: Identity | None, stream: bool) -> InferenceRequest:
        """The kernel request of a loaded body (``stream``: whether the answer is a stream)."""
        return native_request(
            body, "prompt", body["prompt"], body["max_tokens"], id=id, identity=identity, stream=stream
        )


class BatchGenerateItemSchema(Schema):
    """One item of ``requests`` in ``POST /api/v1/batch/generate``."""

    prompt = fields.String(required=True)
    max_tokens = fields.Integer(strict=True, load_default=100, validate=validate.Range(1, 1_000_000))


class BatchGenerateSchema(Schema):
    """Body of ``POST /api/v1/batch/generate``."""

    requests = fields.List(fields.Nested(BatchGenerateItemSchema), required=True, validate=_check_batch_size)
    model = fields.String(load_default="default", validate=validate.Length(1, 200))
    temperature = StrictFloat(load_default=1.0, validate=validate.Range(0.0, 2.0))

    def to_requests(self, body: dict[str, Any], *, id: str, identity: Identity | None) -> list[InferenceRequest]:
        """One kernel request per item (ids ``<id>.<n>``), in order."""
        return [
            native_request(body, "prompt", item["prompt"], item["max_tokens"], id=f"{id}.{n}", identity=identity)
            for n, item in enumerate(body["requests"])
        ]


class LoginSchema(Schema):
    """Body of ``POST /api/v1/auth/login``."""

    username = fields.String(required=True, validate=validate.Length(1, 64))
    password = fields.String(required=True, validate=validate.Length(1, 1024))


class DurationField(fields.Field):
    """Seconds as an integer, or a duration string such as ``"12h"`` or ``"30d"``."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int | str:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ValidationError("seconds (integer) or a duration like '30d'")
        return value


class KeyCreateSchema(Schema):
    """Body of ``POST /v1/auth/keys``: a key with at most the caller's own permissions."""

    name = fields.String(required=True, validate=validate.Length(1, 128))
    permissions = fields.List(
        fields.String(validate=validate.OneOf(["read", "write", "admin"])), validate=validate.Length(1, 3)
    )
    expires_in = DurationField(load_default=None, allow_none=True)


class MetricsQuerySchema(Schema):
    """Query of ``GET /api/v1/system/metrics``."""

    timeframe = fields.String(load_default="1h", validate=validate.OneOf(["1h", "6h", "24h", "7d"]))
    granularity = fields.String(load_default="1m", validate=validate.OneOf(["1m", "5m", "15m", "1h"]))


class LogsQuerySchema(Schema):
    """Query of ``GET /api/v1/system/logs``."""

    level = fields.String(
        load_default="INFO", validate=validate.OneOf(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"])
    )
    limit = fields.Integer(load_default=100, validate=validate.Range(1, 5000))
    since = fields.AwareDateTime(load_default=None, format="iso", default_timezone=dt.UTC)
    component = fields.String(load_default=None, validate=validate.Length(1, 128))


#: Most rows one page of a list endpoint carries.
MAX_PAGE = 100


class PageQuerySchema(Schema):
    """``limit`` (at most :data:`MAX_PAGE`) and ``offset`` of a list endpoint (other parameters are ignored)."""

    class Meta:
        """Other parameters of the query belong to the endpoint, not the page."""

        unknown = EXCLUDE

    limit = fields.Integer(load_default=50, validate=validate.Range(1, MAX_PAGE))
    offset = fields.Integer(load_default=0, validate=validate.Range(0, 10_000_000))


class BenchmarkConfigSchema(Schema):
    """``config`` of ``POST /api/v1/benchmarks``: the :class:`~llama_gpu.bench.BenchmarkConfig` fields a caller may set.

    ``dataset_name`` is the shipped ``sonnets`` only (give your own prompts as ``prompts``), and
    there is no ``output_dir``: results are stored in the database. ``api_base`` (another
    server) needs the admin role; without it the benchmark targets this server's ``/v1``.
    """

    api_backend = fields.String(validate=validate.OneOf(["openai"]))
    api_base = fields.Url(schemes={"http", "https"}, require_tld=False, validate=validate.Length(1, 255))
    api_key = fields.String(validate=validate.Length(1, 1024))
    api_model_name = fields.String(validate=validate.Length(1, 255))
    task = fields.String(validate=validate.OneOf(["text-to-text", "text-to-embeddings"]))
    dataset_name = fields.String(allow_none=True, validate=validate.OneOf(["sonnets"]))
    traffic_scenario = fields.List(fields.String(validate=validate.Length(1, 64)), validate=validate.Length(1, 16))
    num_users = fields.List(
        fields.Integer(strict=True, validate=validate.Range(1, 256)), validate=validate.Length(1, 16)
    )
    max_time_per_run = StrictFloat(validate=validate.Range(0.0, 3600.0, min_inclusive=False))
    max_requests_per_run = fields.Integer(strict=True, allow_none=True, validate=validate.Range(1, 100_000))
    spawn_rate = StrictFloat(allow_none=True, validate=validate.Range(0.0, 10_000.0, min_inclusive=False))
    request_rate = StrictFloat(allow_none=True, validate=validate.Range(0.0, 10_000.0, min_inclusive=False))
    additional_sampling_params = fields.Dict(keys=fields.String(validate=validate.Length(1, 64)))
    server_info = fields.Dict(keys=fields.String(validate=validate.Length(1, 64)))
    goodput = fields.Dict(
        keys=fields.String(validate=validate.OneOf(["ttft", "tpot", "e2el", "e2e_latency", "itl"])),
        values=StrictFloat(validate=validate.Range(0.0, 3_600_000.0, min_inclusive=False)),
    )
    seed = fields.Integer(strict=True, validate=validate.Range(0, 2**31 - 1))
    endpoint = fields.String(validate=validate.OneOf(["chat", "completions"]))
    request_timeout = StrictFloat(validate=validate.Range(0.0, 3600.0, min_inclusive=False))


class BenchmarkCreateSchema(Schema):
    """Body of ``POST /api/v1/benchmarks``: ``{config}`` or ``{name, models, prompts, metrics, config}``."""

    name = fields.String(validate=validate.Length(1, 255))
    config = fields.Nested(BenchmarkConfigSchema, load_default=dict)
    models = fields.List(fields.String(validate=validate.Length(1, 255)), validate=validate.Length(1, 8))
    prompts = fields.List(fields.String(validate=validate.Length(1, 20_000)), validate=validate.Length(1, 1000))
    metrics = fields.List(fields.String(validate=validate.Length(1, 64)), validate=validate.Length(1, 64))


class BenchmarkListQuerySchema(Schema):
    """Query of ``GET /api/v1/benchmarks``: a page of at most :data:`MAX_PAGE` rows from ``offset``."""

    limit = fields.Integer(load_default=50, validate=validate.Range(1, MAX_PAGE))
    offset = fields.Integer(load_default=0, validate=validate.Range(0, 10_000_000))
    status = fields.String(
        load_default=None, validate=validate.OneOf(["queued", "running", "completed", "failed", "cancelled"])
    )


#: Most prompts one evaluation may carry, and the longest prompt or reference text (characters).
MAX_EVAL_PROMPTS = 64
MAX_EVAL_TEXT = 20_000


class EvalPromptField(fields.Field):
    """One prompt of an evaluation: a string, or ``{"text": str, "reference": str}`` (reference optional)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> dict[str, str | None]:
        if isinstance(value, str):
            value = {"text": value}
        if not isinstance(value, dict):
            raise ValidationError("a prompt is a string or an object {text, reference}")
        unknown = sorted(set(value) - {"text", "reference"})
        if unknown:
            raise ValidationError(f"unknown prompt fields: {', '.join(map(str, unknown))}")
        text, reference = value.get("text"), value.get("reference")
        if not isinstance(text, str) or not 1 <= len(text) <= MAX_EVAL_TEXT:
            raise ValidationError(f"text must be a string of 1 to {MAX_EVAL_TEXT} characters")
        if reference is not None and (not isinstance(reference, str) or not 1 <= len(reference) <= MAX_EVAL_TEXT):
            raise ValidationError(f"reference must be a string of 1 to {MAX_EVAL_TEXT} characters")
        return {"text": text, "reference": reference}


class EvaluateConfigSchema(Schema):
    """``config`` of an evaluation: sampling of every prompt (temperature 0 is greedy)."""

    seed = fields.Integer(strict=True, load_default=None, allow_none=True, validate=validate.Range(0, 2**31 - 1))
    max_tokens = fields.Integer(strict=True, load_default=32, validate=validate.Range(1, 512))
    temperature = StrictFloat(load_default=0.0, validate=validate.Range(0.0, 2.0))
    top_p = StrictFloat(load_default=1.0, validate=validate.Range(0.0, 1.0, min_inclusive=False))


class EvaluateSchema(Schema):
    """Body of ``POST /api/v1/models/{id}/evaluate``."""

    prompts = fields.List(EvalPromptField(), required=True, validate=validate.Length(1, MAX_EVAL_PROMPTS))
    config = fields.Nested(EvaluateConfigSchema, load_default=dict)
    metrics = fields.List(fields.String(validate=validate.Length(1, 128)), load_default=None, allow_none=True)


class MetricsHistoryQuerySchema(Schema):
    """Query of ``GET /api/v1/metrics/history``: dates are ISO 8601 (UTC when no offset is given)."""

    start_date = fields.AwareDateTime(load_default=None, format="iso", default_timezone=dt.UTC)
    end_date = fields.AwareDateTime(load_default=None, format="iso", default_timezone=dt.UTC)
    model = fields.String(load_default=None, validate=validate.Length(1, 255))
    metric = fields.String(load_default=None, validate=validate.Length(1, 128))
    #: Runs per page (each gives its points), newest first from ``offset``.
    limit = fields.Integer(load_default=MAX_PAGE, validate=validate.Range(1, MAX_PAGE))
    offset = fields.Integer(load_default=0, validate=validate.Range(0, 10_000_000))
