"""Route declarations: each route says, on itself, who may call it and what it takes and answers.

:func:`route` registers a view on a Flask blueprint together with a :class:`RouteSpec`.
The same declaration drives enforcement (authentication, the rate-limit group, the
permission asked of ``check_permission``, the body and query schemas) and the OpenAPI
document (:mod:`llama_gpu.api.openapi` reads it from every rule of the app). Built-in and
third-party plugins declare the routes of their ``register_routes`` blueprints the same way::

    from flask import Blueprint, jsonify
    from llama_gpu.api.routing import route

    bp = Blueprint("shout", __name__)

    @route(bp, "/api/v1/shout", methods=("POST",), permission="write", rate_limit="infer",
           body=ShoutSchema, response=ShoutAnswer, summary="Shout the text back")
    def shout() -> Response:
        body = json_body()  # validated with the declared ``body`` schema
        ...

``permission=None`` declares an open route; anything else is enforced before the view runs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from flask import Blueprint, current_app, g, request
from marshmallow import Schema

from ..kernel.kernel import Kernel

__all__ = ["RouteSpec", "current_route", "json_object", "route", "route_spec"]

View = TypeVar("View", bound=Callable[..., Any])
#: A JSON schema (a dict) or a marshmallow schema class describing a body.
BodySchema = type[Schema] | Mapping[str, Any]


@dataclass(frozen=True)
class RouteSpec:
    """What one route declares about itself; read by enforcement and by the OpenAPI document."""

    rule: str
    methods: tuple[str, ...]
    #: The permission asked of ``check_permission`` (``read``, ``write``, ``admin``…); ``None``: open.
    permission: str | None
    #: The resource passed along with the permission (for plugins that decide per resource).
    resource: str | None = None
    #: The rate-limit group the call counts in; ``None``: not counted.
    rate_limit: str | None = "system"
    #: Counts in the ``stream`` group when the JSON body asks for ``"stream": true``.
    streamable: bool = False
    #: How many units a call counts for, from its JSON body (default 1).
    cost: Callable[[dict[str, Any]], int] | None = None
    #: When it returns true for the app's kernel, the route is open and not counted (a public ``/metrics``).
    open_when: Callable[[Kernel], bool] | None = None
    summary: str = ""
    #: The request body's schema; ``json_body()`` validates with it.
    body: type[Schema] | None = None
    body_required: bool = True
    #: The query string's schema; ``query_args()`` validates with it.
    query: type[Schema] | None = None
    #: The success body: a marshmallow schema class or a JSON schema dict.
    response: BodySchema | None = None
    #: The success status (200, or 202 for queued work).
    status: int = 200
    #: The success content type.
    content: Literal["json", "html", "text"] = "json"
    #: The route may answer with Server-Sent Events.
    streams: bool = False
    #: Other documented answers: status → (description, JSON schema).
    responses: Mapping[int, tuple[str, BodySchema | None]] = field(default_factory=dict)
    #: Listed in the OpenAPI document.
    document: bool = True

    def is_open(self, kernel: Kernel) -> bool:
        """Whether anyone may call the route on ``kernel``'s server."""
        return self.permission is None or self.opened(kernel)

    def opened(self, kernel: Kernel) -> bool:
        """Whether configuration opens this protected route (then it is not rate limited either)."""
        return self.permission is not None and self.open_when is not None and bool(self.open_when(kernel))

    def counted(self, kernel: Kernel) -> bool:
        """Whether calls count against a rate limit."""
        return (self.rate_limit is not None or self.streamable) and not self.opened(kernel)


def route(
    bp: Blueprint,
    rule: str,
    *,
    methods: tuple[str, ...] | list[str] = ("GET",),
    permission: str | None,
    endpoint: str | None = None,
    **declared: Any,
) -> Callable[[View], View]:
    """Register the decorated view on ``bp`` at ``rule``, guarded by its declaration.

    ``permission`` is required (``None`` declares an open route); the other keywords are the
    fields of :class:`RouteSpec`. Before the view runs, the caller is authenticated, counted in
    the route's rate-limit group and asked for ``permission`` through ``check_permission``
    (401, 429, 403 otherwise).
    """
    spec = RouteSpec(rule=rule, methods=tuple(m.upper() for m in methods), permission=permission, **declared)

    def decorate(view: View) -> View:
        @functools.wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            from .context import enforce

            g.route = spec
            enforce(spec)
            return view(*args, **kwargs)

        guarded.route_spec = spec  # type: ignore[attr-defined]
        bp.add_url_rule(rule, endpoint=endpoint, view_func=guarded, methods=list(spec.methods))
        return guarded  # type: ignore[return-value]

    return decorate


def route_spec(view: Callable[..., Any] | None) -> RouteSpec | None:
    """The declaration of a view function, or ``None`` for an undeclared one."""
    return getattr(view, "route_spec", None)


def current_route() -> RouteSpec | None:
    """The declaration of the route serving this request (``None`` outside one, or undeclared)."""
    if "route" in g:
        return g.route  # type: ignore[no-any-return]
    endpoint = request.endpoint
    return route_spec(current_app.view_functions.get(endpoint)) if endpoint else None


def json_object(*required: str) -> dict[str, Any]:
    """The JSON schema of an object with these required properties (a short ``response`` declaration)."""
    return {"type": "object", "required": list(required)}
