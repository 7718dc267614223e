"""marshmallow schemas of response bodies, declared on the routes (``response=``) for the OpenAPI document.

The document's conformance test (schemathesis) checks every answer of the API against them,
so they stay what the blueprints send.
"""

from __future__ import annotations

from marshmallow import Schema, fields


class UsageSchema(Schema):
    """Tokens of a request."""

    prompt_tokens = fields.Integer(required=True)
    completion_tokens = fields.Integer(required=True)
    total_tokens = fields.Integer(required=True)


class InferResultSchema(Schema):
    """``result`` of ``POST /api/v1/infer``."""

    generated_text = fields.String(required=True)
    tokens_generated = fields.Integer(required=True)
    inference_time = fields.Float(required=True)
    model_used = fields.String(required=True)
    backend = fields.String(required=True)


class InferMetadataSchema(Schema):
    """``metadata`` of ``POST /api/v1/infer``."""

    request_id = fields.String(required=True)
    timestamp = fields.String(required=True)
    processing_time = fields.Float(required=True)


class InferResponseSchema(Schema):
    """The answer of ``POST /api/v1/infer`` (without ``stream``)."""

    success = fields.Boolean(required=True)
    result = fields.Nested(InferResultSchema, required=True)
    metadata = fields.Nested(InferMetadataSchema, required=True)


class BatchInferResultSchema(Schema):
    """One item of ``results`` of ``POST /api/v1/batch_infer``, in input order."""

    id = fields.String(required=True)
    generated_text = fields.String(required=True)
    tokens_generated = fields.Integer(required=True)
    inference_time = fields.Float(required=True)


class BatchInferMetadataSchema(Schema):
    """``metadata`` of ``POST /api/v1/batch_infer``."""

    batch_id = fields.String(required=True)
    total_processing_time = fields.Float(required=True)
    items_processed = fields.Integer(required=True)
    backend = fields.String(required=True)


class BatchInferResponseSchema(Schema):
    """The answer of ``POST /api/v1/batch_infer``."""

    success = fields.Boolean(required=True)
    results = fields.List(fields.Nested(BatchInferResultSchema), required=True)
    metadata = fields.Nested(BatchInferMetadataSchema, required=True)


class GenerateResponseSchema(Schema):
    """The answer of ``POST /api/v1/generate`` (without ``stream``)."""

    text = fields.String(required=True)
    usage = fields.Nested(UsageSchema, required=True)
    latency = fields.Float(required=True)


class GeneratedSchema(Schema):
    """One item of ``results`` of ``POST /api/v1/batch/generate``."""

    text = fields.String(required=True)
    usage = fields.Nested(UsageSchema, required=True)


class BatchGenerateResponseSchema(Schema):
    """The answer of ``POST /api/v1/batch/generate``, in request order."""

    results = fields.List(fields.Nested(GeneratedSchema), required=True)


class CancelResponseSchema(Schema):
    """The answer of ``DELETE /api/v1/requests/{id}``."""

    success = fields.Boolean(required=True)
    request_id = fields.String(required=True)
    cancelled = fields.Integer(required=True)


class HealthSchema(Schema):
    """The answer of ``GET /health``."""

    status = fields.String(required=True)
    version = fields.String(required=True)
    timestamp = fields.String(required=True)
    uptime = fields.Float(required=True)
    models_loaded = fields.Integer(required=True)
    active_connections = fields.Integer(required=True)
    memory_usage = fields.Dict(keys=fields.String(), values=fields.Float(), required=True)


class ReadySchema(Schema):
    """The answer of ``GET /ready``: ``ready`` with the default model, or ``not_ready`` with the reason (503)."""

    status = fields.String(required=True)
    default_model = fields.String()
    reason = fields.String()


class PluginsResponseSchema(Schema):
    """The answer of ``GET /api/v1/plugins``."""

    success = fields.Boolean(required=True)
    plugins = fields.List(fields.Dict(), required=True)
    total_plugins = fields.Integer(required=True)
    loaded_plugins = fields.Integer(required=True)
