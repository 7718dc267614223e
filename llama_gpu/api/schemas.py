"""marshmallow schemas of request bodies: every field typed and ranged."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates


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


class InferSchema(Schema):
    """Body of ``POST /api/v1/infer``."""

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


class BatchGenerateItemSchema(Schema):
    """One item of ``requests`` in ``POST /api/v1/batch/generate``."""

    prompt = fields.String(required=True)
    max_tokens = fields.Integer(strict=True, load_default=100, validate=validate.Range(1, 1_000_000))


class BatchGenerateSchema(Schema):
    """Body of ``POST /api/v1/batch/generate``."""

    requests = fields.List(fields.Nested(BatchGenerateItemSchema), required=True, validate=_check_batch_size)
    model = fields.String(load_default="default", validate=validate.Length(1, 200))
    temperature = StrictFloat(load_default=1.0, validate=validate.Range(0.0, 2.0))


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
