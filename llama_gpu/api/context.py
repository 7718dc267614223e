"""Per-request helpers for blueprints: the kernel, the request id, the caller, the JSON body."""

from __future__ import annotations

import re
from typing import Any, cast

from flask import current_app, g, request
from marshmallow import Schema, ValidationError

from ..kernel.errors import (
    AuthenticationFailed,
    InvalidInput,
    RateLimitExceeded,
    UnsupportedMediaType,
)
from ..kernel.kernel import Kernel
from ..kernel.streams import StreamLease, StreamLimiter
from ..kernel.types import Credentials, Identity, new_id
from .routing import RouteSpec, current_route

EXTENSION = "llama_gpu"
#: ``app.extensions`` key of the app's :class:`StreamLimiter`.
STREAMS = "llama_gpu.streams"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def get_kernel() -> Kernel:
    """The kernel of the current app."""
    return cast(Kernel, current_app.extensions[EXTENSION])


def assign_request_id() -> None:
    """Take a well-formed ``X-Request-ID`` from the client, else make one."""
    given = request.headers.get("X-Request-ID", "")
    g.request_id = given if _REQUEST_ID.match(given) else new_id("req")


def credentials() -> Credentials:
    """What the caller presented: ``Authorization: Bearer`` or ``X-API-Key``."""
    auth = request.headers.get("Authorization", "")
    bearer = auth[7:].strip() if auth[:7].lower() == "bearer " else None
    return Credentials(
        api_key=request.headers.get("X-API-Key") or None, bearer_token=bearer or None, remote_addr=request.remote_addr
    )


def current_identity() -> Identity | None:
    """The authenticated caller of this request (asked once per request)."""
    if "identity" not in g:
        g.identity = get_kernel().authenticate(credentials())
    return cast("Identity | None", g.identity)


def require(permission: str, resource: str | None = None) -> Identity | None:
    """Authenticate, count the call against its rate limit, check ``permission``; raise 401/403/429 otherwise."""
    try:
        identity = current_identity()
    except AuthenticationFailed:
        enforce_rate_limit(None)  # bad credentials count against the client address too
        raise
    enforce_rate_limit(identity)
    get_kernel().require(identity, permission, resource)
    return identity


def enforce(spec: RouteSpec) -> None:
    """What a declared route asks before its view runs: its rate limit, and its permission unless open."""
    if spec.permission is None:
        enforce_rate_limit(None)  # open routes count per client address (when they name a group)
    elif not spec.opened(get_kernel()):
        require(spec.permission, spec.resource)


def rate_limit_group() -> str | None:
    """The rate-limit group this request counts in, from its route's declaration (``None``: not counted).

    A streamable route counts as ``stream`` when its JSON body asks for ``"stream": true``;
    an undeclared route counts as ``system``.
    """
    spec = current_route()
    if spec is None:
        return "system"
    if spec.streamable and request.is_json:
        body = request.get_json(silent=True)
        if isinstance(body, dict) and body.get("stream") is True:
            return "stream"
    return spec.rate_limit


def request_cost() -> int:
    """How many sequences this request asks for (what it counts for in its rate limit); 1 when unknown."""
    spec = current_route()
    body = request.get_json(silent=True) if request.is_json else None
    if spec is None or spec.cost is None or not isinstance(body, dict):
        return 1
    return max(1, min(spec.cost(body), MAX_COST))


def count_of(value: Any) -> int:
    """How many items ``value`` holds when it is a list; 1 otherwise (a cost helper)."""
    return len(value) if isinstance(value, list) else 1


def number_of(value: Any) -> int:
    """``value`` when it is a positive int; 1 otherwise (a cost helper)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 1


#: The most one call counts for (bodies asking for more are refused anyway).
MAX_COST = 1024


def enforce_rate_limit(identity: Identity | None) -> None:
    """Count this request once against its group's limit (status in ``g.rate_limit``); 429 when over it."""
    if "rate_limit_group" in g:
        return
    g.rate_limit_group = group = rate_limit_group()
    if group is None:
        return
    status = get_kernel().rate_limit(identity, group, request.remote_addr or "unknown", cost=request_cost())
    if status is not None:
        g.rate_limit = status
        if not status.allowed:
            error = RateLimitExceeded(
                f"rate limit exceeded: {status.limit} {group} requests per hour; retry in {status.retry_after}s",
                details={"limit": status.limit, "group": group},
            )
            error.retry_after = status.retry_after
            raise error
    if group == "stream" and identity is not None:
        g.stream_lease = acquire_stream(identity)


def acquire_stream(identity: Identity | None) -> StreamLease:
    """Hold a stream slot for this request (429 over the per-identity, per-address or total cap).

    The lease is in ``g.stream_lease``: the SSE response releases it when it ends, and the
    request's teardown releases it at the latest (a refusal before any stream began).
    """
    limiter = cast(StreamLimiter, current_app.extensions[STREAMS])
    name = f"{identity.kind}:{identity.id}" if identity is not None else None
    return limiter.acquire(name, request.remote_addr or "unknown")


def release_stream(_exc: BaseException | None = None) -> None:
    """Release this request's stream slot, if it holds one (idempotent)."""
    lease = g.pop("stream_lease", None)
    if lease is not None:
        lease.release()


def json_body(schema: Schema | None = None, *, optional: bool | None = None) -> dict[str, Any]:
    """Parse and validate the JSON body with ``schema`` (default: the route's declared ``body``); 4xx on bad input.

    ``optional`` (default: the declaration's ``not body_required``) lets an empty body stand for ``{}``.
    """
    if schema is None or optional is None:
        spec = current_route()
        if schema is None:
            if spec is None or spec.body is None:
                raise TypeError("json_body() without a schema needs a route that declares its body")
            schema = spec.body()
        if optional is None:
            optional = spec is not None and not spec.body_required
    raw = request.get_data(cache=True)
    if not raw.strip():
        if optional:
            return cast(dict[str, Any], schema.load({}))
        raise InvalidInput("request body is empty; send a JSON object")
    if not request.is_json:
        raise UnsupportedMediaType(
            "request body must be JSON (Content-Type: application/json)",
            details={"content_type": request.content_type},
        )
    data = request.get_json(silent=True)
    if data is None:
        raise InvalidInput("request body is not valid JSON")
    if not isinstance(data, dict):
        raise InvalidInput("request body must be a JSON object", details={"type": type(data).__name__})
    try:
        return cast(dict[str, Any], schema.load(data))
    except ValidationError as exc:
        raise InvalidInput("request validation failed", details={"errors": exc.messages}) from None


def query_args(schema: Schema | None = None, **details: Any) -> dict[str, Any]:
    """Parse and validate the query string with ``schema`` (default: the route's declared ``query``).

    Each parameter may be given once; INVALID_INPUT with the errors (and ``details``) otherwise.
    """
    if schema is None:
        spec = current_route()
        if spec is None or spec.query is None:
            raise TypeError("query_args() without a schema needs a route that declares its query")
        schema = spec.query()
    repeated = sorted(name for name, values in request.args.lists() if len(values) > 1)
    if repeated:
        raise InvalidInput("query parameters may be given once each", details={"repeated": repeated})
    try:
        return cast(dict[str, Any], schema.load(request.args.to_dict()))
    except ValidationError as exc:
        raise InvalidInput("query validation failed", details={"errors": exc.messages, **details}) from None


def page_query() -> tuple[int, int]:
    """``limit`` (1 to 100, default 50) and ``offset`` of a list endpoint's query; INVALID_INPUT otherwise."""
    from .schemas import MAX_PAGE, PageQuerySchema

    query = query_args(PageQuerySchema(), limit=MAX_PAGE)
    return int(query["limit"]), int(query["offset"])
