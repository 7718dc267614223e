"""marshmallow schemas of request bodies: every field typed and ranged."""

from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, validate, validates


class PluginConfigSchema(Schema):
    """``config`` of a plugin load or configuration request."""

    enabled = fields.Boolean(truthy={True}, falsy={False})
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
    temperature = fields.Float(load_default=1.0, allow_nan=False, validate=validate.Range(0.1, 2.0))
    top_p = fields.Float(load_default=1.0, allow_nan=False, validate=validate.Range(0.0, 1.0, min_inclusive=False))
    stream = fields.Boolean(truthy={True}, falsy={False}, load_default=False)


class ModelLoadSchema(Schema):
    """Body of ``POST /api/v1/models/{id}/load`` (optional)."""

    backend = fields.String(validate=validate.Length(1, 50))
    quantization = fields.String(validate=validate.Length(1, 20))
    max_memory = fields.Raw()
    prefer_gpu = fields.Boolean(truthy={True}, falsy={False}, load_default=True)
    n_ctx = fields.Integer(strict=True, validate=validate.Range(16, 1_048_576))

    @validates("max_memory")
    def _max_memory(self, value: object, **_: object) -> None:
        if isinstance(value, bool) or not isinstance(value, (str, int)) or (isinstance(value, int) and value <= 0):
            raise ValidationError("max_memory must be a positive byte count or a string like '80%' or '8GB'")
