"""marshmallow schemas of the OpenAI-compatible API (``/v1``).

Unknown fields are ignored, as the OpenAI API does for fields a server does not
implement, so clients that send newer options keep working; every known field is typed
and ranged.
"""

from __future__ import annotations

from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates

from ..kernel.types import Identity, InferenceRequest
from .schemas import StrictBoolean, StrictFloat

#: ``max_tokens`` of a chat (the API's and the dashboard's) and of a text completion when none is given.
CHAT_DEFAULT_MAX_TOKENS = 512
COMPLETION_DEFAULT_MAX_TOKENS = 16
MAX_N = 16
MAX_STOPS = 4
#: Longest stop string, in characters.
MAX_STOP_LENGTH = 256
#: Most sequences one request may ask for (prompts x ``best_of``, or ``n``).
MAX_REQUEST_SEQUENCES = 64
#: Most log-probability entries one request may ask for (sequences x ``max_tokens`` x (top + 1)).
MAX_LOGPROB_ENTRIES = 262_144


class _Lenient(Schema):
    class Meta:
        unknown = EXCLUDE


class StopField(fields.Field):
    """``stop``: a string or a list of up to four strings of at most :data:`MAX_STOP_LENGTH` characters."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list[str]:
        if value is None:
            return []
        stops = [value] if isinstance(value, str) else value
        if not (isinstance(stops, list) and len(stops) <= MAX_STOPS and all(isinstance(v, str) for v in stops)):
            raise ValidationError(f"stop must be a string or a list of at most {MAX_STOPS} strings")
        if any(len(v) > MAX_STOP_LENGTH for v in stops):
            raise ValidationError(f"each stop string may have at most {MAX_STOP_LENGTH} characters")
        return list(stops)


class MessageSchema(_Lenient):
    """One chat message."""

    role = fields.String(required=True, validate=validate.OneOf(["system", "user", "assistant", "tool", "developer"]))
    content = fields.String(required=True, allow_none=False)
    name = fields.String()


class StreamOptionsSchema(_Lenient):
    """``stream_options``."""

    include_usage = StrictBoolean(load_default=False)


class ResponseFormatSchema(_Lenient):
    """``response_format``."""

    type = fields.String(required=True, validate=validate.OneOf(["text", "json_object"]))


def openai_request(
    body: dict[str, Any],
    *,
    id: str,
    identity: Identity | None,
    prompt: str = "",
    messages: list[dict[str, Any]] | None = None,
    max_tokens: int,
    logprobs: int | None,
    index: int = 0,
) -> InferenceRequest:
    """The kernel request of one choice (``index``) of an OpenAI body (``seed`` + ``index``, id ``<id>-<index>``)."""
    seed = body.get("seed")
    fmt = (body.get("response_format") or {}).get("type")
    return InferenceRequest(
        prompt=prompt,
        messages=messages,
        model=body["model"],
        max_tokens=max_tokens,
        temperature=body["temperature"],
        top_p=body["top_p"],
        stop=body["stop"],
        presence_penalty=body["presence_penalty"],
        frequency_penalty=body["frequency_penalty"],
        seed=None if seed is None else seed + index,
        logprobs=logprobs,
        response_format=fmt if fmt == "json_object" else None,
        id=f"{id}-{index}" if index else id,
        identity=identity,
        endpoint="openai",
        metadata={"input_field": "messages" if messages is not None else "prompt"},
    )


def _messages(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"role": m["role"], "content": m["content"]} for m in items]


class _Sampling(_Lenient):
    model = fields.String(required=True, validate=validate.Length(1, 200))
    max_tokens = fields.Integer(strict=True, allow_none=True, validate=validate.Range(1, 1_000_000))
    temperature = StrictFloat(load_default=1.0, validate=validate.Range(0.0, 2.0))
    top_p = StrictFloat(load_default=1.0, validate=validate.Range(0.0, 1.0, min_inclusive=False))
    n = fields.Integer(strict=True, load_default=1, validate=validate.Range(1, MAX_N))
    stream = StrictBoolean(load_default=False)
    stream_options = fields.Nested(StreamOptionsSchema, allow_none=True)
    stop = StopField(load_default=list)
    presence_penalty = StrictFloat(load_default=0.0, validate=validate.Range(-2.0, 2.0))
    frequency_penalty = StrictFloat(load_default=0.0, validate=validate.Range(-2.0, 2.0))
    seed = fields.Integer(strict=True, allow_none=True, validate=validate.Range(-(2**63), 2**63 - 1))
    user = fields.String(validate=validate.Length(max=256))


class ChatCompletionSchema(_Sampling):
    """Body of ``POST /v1/chat/completions``."""

    messages = fields.List(fields.Nested(MessageSchema), required=True, validate=validate.Length(min=1, max=1000))
    max_completion_tokens = fields.Integer(strict=True, allow_none=True, validate=validate.Range(1, 1_000_000))
    logprobs = StrictBoolean(load_default=False)
    top_logprobs = fields.Integer(strict=True, allow_none=True, validate=validate.Range(0, 20))
    response_format = fields.Nested(ResponseFormatSchema, allow_none=True)

    @staticmethod
    def max_tokens_of(body: dict[str, Any]) -> int:
        """``max_completion_tokens``, else ``max_tokens``, else the chat default."""
        return int(body.get("max_completion_tokens") or body.get("max_tokens") or CHAT_DEFAULT_MAX_TOKENS)

    @staticmethod
    def logprobs_of(body: dict[str, Any]) -> int | None:
        """How many alternatives each token's log-probability comes with; ``None`` when not asked."""
        return (body.get("top_logprobs") or 0) if body["logprobs"] else None

    def to_requests(self, body: dict[str, Any], *, id: str, identity: Identity | None) -> list[InferenceRequest]:
        """One kernel request per choice (``n``)."""
        messages = _messages(body["messages"])
        max_tokens, logprobs = self.max_tokens_of(body), self.logprobs_of(body)
        return [
            openai_request(
                body, id=id, identity=identity, messages=messages, max_tokens=max_tokens, logprobs=logprobs, index=i
            )
            for i in range(body["n"])
        ]


class CompletionSchema(_Sampling):
    """Body of ``POST /v1/completions``."""

    prompt = fields.Raw(required=True)
    best_of = fields.Integer(strict=True, allow_none=True, validate=validate.Range(1, MAX_N))
    logprobs = fields.Integer(strict=True, allow_none=True, validate=validate.Range(0, 5))
    echo = StrictBoolean(load_default=False)
    suffix = fields.String(allow_none=True)

    @validates("prompt")
    def _prompt(self, value: Any, **_: Any) -> None:
        if isinstance(value, str):
            return
        if isinstance(value, list) and 0 < len(value) <= 64 and all(isinstance(v, str) for v in value):
            return
        raise ValidationError("prompt must be a string or a non-empty list of at most 64 strings")


class EmbeddingSchema(_Lenient):
    """Body of ``POST /v1/embeddings``."""

    model = fields.String(required=True, validate=validate.Length(1, 200))
    input = fields.Raw(required=True)
    encoding_format = fields.String(load_default="float", validate=validate.OneOf(["float", "base64"]))
    user = fields.String(validate=validate.Length(max=256))

    @validates("input")
    def _input(self, value: Any, **_: Any) -> None:
        def tokens(v: Any) -> bool:
            return isinstance(v, list) and len(v) > 0 and all(isinstance(t, int) and not isinstance(t, bool) for t in v)

        if isinstance(value, str) or tokens(value):
            return
        listed = isinstance(value, list) and 0 < len(value) <= 2048
        if listed and (all(isinstance(v, str) for v in value) or all(tokens(v) for v in value)):
            return
        raise ValidationError("input must be a string, a list of strings, a token array or a list of token arrays")


class BatchItemSchema(_Lenient):
    """One request of ``POST /v1/batch``."""

    id = fields.String(required=True, validate=validate.Length(1, 128))
    messages = fields.List(fields.Nested(MessageSchema), required=True, validate=validate.Length(min=1, max=1000))


class BatchSchema(_Lenient):
    """Body of ``POST /v1/batch``."""

    model = fields.String(required=True, validate=validate.Length(1, 200))
    requests = fields.List(fields.Nested(BatchItemSchema), required=True, validate=validate.Length(1, 64))
    max_tokens = fields.Integer(strict=True, load_default=256, validate=validate.Range(1, 1_000_000))
    temperature = StrictFloat(load_default=1.0, validate=validate.Range(0.0, 2.0))

    #: What a batch item leaves at the OpenAI defaults.
    DEFAULTS: dict[str, Any] = {"top_p": 1.0, "stop": [], "presence_penalty": 0.0, "frequency_penalty": 0.0}

    def to_requests(self, body: dict[str, Any], *, id: str, identity: Identity | None) -> list[InferenceRequest]:
        """One kernel request per item, in order."""
        merged = {**self.DEFAULTS, **body}
        return [
            openai_request(
                merged,
                id=id,
                identity=identity,
                messages=_messages(item["messages"]),
                max_tokens=body["max_tokens"],
                logprobs=None,
                index=i,
            )
            for i, item in enumerate(body["requests"])
        ]


class ModelLoadV1Schema(_Lenient):
    """Body of ``POST /v1/models/{id}/load`` (optional)."""

    backend = fields.String(validate=validate.Length(1, 50))
    quantization = fields.String(validate=validate.Length(1, 20))
    prefer_gpu = StrictBoolean(load_default=True)


class ConvertSchema(_Lenient):
    """Body of ``POST /v1/convert``: a GGUF model or a safetensors checkpoint of the models directory → GGUF."""

    source_model = fields.String(required=True, validate=validate.Length(1, 255))
    target_format = fields.String(load_default="gguf", validate=validate.OneOf(["gguf"]))
    quantization = fields.String(validate=validate.Length(1, 20))
    optimization = fields.String(allow_none=True, validate=validate.OneOf(["size", "balanced", "quality"]))
    output = fields.String(allow_none=True, validate=validate.Length(1, 255))
