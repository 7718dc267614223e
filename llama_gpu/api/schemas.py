"""marshmallow schemas of request bodies: every field typed and ranged."""

from __future__ import annotations

from marshmallow import Schema, fields, validate


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
