"""The ``api_keys`` plugin's HTTP surface, registered through ``register_routes``: logins and API keys.

``/api/v1/auth/login|logout``, ``/v1/auth/keys``, ``/v1/auth/user``, ``/api/v1/auth/keys``.
Thin: the logic is the plugin's :class:`~llama_gpu.plugins.auth.accounts.Accounts`
(``kernel.services[ACCOUNTS]``). A caller creates keys with at most its own permissions,
and lists and revokes only the keys of its lineage: a user those it owns (its own and those
made from them), a key those made from it (an admin: any). Revoking a key revokes the keys
made from it. Failed logins are throttled per user name and per client address. No
response carries a hash; a key's secret appears once, in the response that creates it.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import Blueprint, Response, jsonify, request

from ...api.context import credentials, current_identity, get_kernel, json_body, page_query
from ...api.routing import json_object, route
from ...api.schemas import KeyCreateSchema, LoginSchema, PageQuerySchema
from ...kernel.errors import (
    AuthenticationFailed,
    InvalidInput,
    PermissionDenied,
    RateLimitExceeded,
)
from ...kernel.types import Identity
from . import ACCOUNTS
from .accounts import Accounts, parse_duration, roles_of, top_role

bp = Blueprint("auth", __name__, url_prefix="/api/v1/auth")
openai_bp = Blueprint("auth_v1", __name__, url_prefix="/v1/auth")


def _accounts() -> Accounts:
    return get_kernel().service(ACCOUNTS)


@route(
    bp,
    "/login",
    methods=("POST",),
    permission=None,
    rate_limit="auth",
    summary="Log in: a user name and password for a login token (JWT)",
    body=LoginSchema,
    response=json_object("success", "token", "expires_in", "user"),
)
def login() -> Response:
    """Exchange a user name and password for a login token (counted per client address, group ``auth``)."""
    body = json_body()
    accounts = _accounts()
    throttle = (f"user:{body['username']}", f"addr:{request.remote_addr}")
    wait = accounts.login_throttled(throttle)
    if wait:
        error = RateLimitExceeded("too many failed logins; try again later", details={"retry_after": wait})
        error.retry_after = wait
        raise error
    user = accounts.check_password(body["username"], body["password"])
    if user is None:
        accounts.login_failed(throttle)
        accounts.audit(None, "login.failed", f"username:{body['username'][:64]}", remote_addr=request.remote_addr)
        raise AuthenticationFailed("wrong user name or password")
    accounts.audit(f"user:{user.id}", "login", f"user:{user.id}", remote_addr=request.remote_addr)
    permissions = sorted(roles_of(user.role))
    return jsonify(
        {
            "success": True,
            "token": accounts.issue_token(user),
            "expires_in": accounts.token_seconds,
            "user": {"id": user.id, "username": user.username, "role": user.role, "permissions": permissions},
        }
    )


@route(
    bp,
    "/logout",
    methods=("POST",),
    permission="read",
    resource="auth",
    rate_limit="auth",
    summary="Log out: revoke the login token of this call",
    response=json_object("success", "message"),
)
def logout() -> Response:
    """Revoke the login token this call carries (server-side: it is refused from now on)."""
    identity = _caller()
    token = credentials().bearer_token
    if identity.kind != "user" or not token:
        raise InvalidInput(
            "logout revokes the login token the call is made with; revoke an API key with DELETE "
            "/api/v1/auth/keys/{id}",
            details={"kind": identity.kind},
        )
    _accounts().revoke_token(token, remote=request.remote_addr)
    return jsonify({"success": True, "message": "logged out: this token is revoked"})


@route(
    openai_bp,
    "/keys",
    methods=("POST",),
    permission="read",
    resource="auth",
    rate_limit="auth",
    summary="Create an API key (shown once) with at most the caller's permissions",
    body=KeyCreateSchema,
    response=json_object("success", "key_id", "api_key", "expires", "permissions"),
)
def create_key() -> Response:
    """Create an API key with at most the caller's permissions; its secret is shown only here."""
    identity = _caller()
    body = json_body()
    wanted = set(body.get("permissions") or identity.roles)
    beyond = sorted(wanted - set(identity.roles))
    if beyond:
        raise PermissionDenied(
            "a key cannot have permissions its creator lacks",
            details={"permissions": beyond, "allowed": sorted(identity.roles)},
        )
    owner: dict[str, Any] = {}
    if identity.kind == "user":
        owner["user_id"] = int(identity.id)
    elif identity.kind == "api_key":
        owner["parent_key_id"] = int(identity.id)
    key, secret = _accounts().create_key(
        body["name"],
        top_role(sorted(wanted)),
        permissions=sorted(wanted),
        expires_in=parse_duration(body["expires_in"]),
        tier=identity.tier,
        actor=f"{identity.kind}:{identity.id}",
        **owner,
    )
    return jsonify(
        {
            "success": True,
            "key_id": key.id,
            "api_key": secret,
            "prefix": key.prefix,
            "expires": _iso(key.expires_at),
            "permissions": key.permissions,
        }
    )


@route(
    openai_bp,
    "/user",
    permission="read",
    resource="auth",
    rate_limit="auth",
    summary="Who the caller is",
    response=json_object("success", "user"),
)
def current_user() -> Response:
    """Who the caller is."""
    identity = _caller()
    return jsonify(
        {
            "success": True,
            "user": {
                "id": identity.id,
                "kind": identity.kind,
                "name": identity.name,
                "role": max(identity.roles, key=("read", "write", "admin").index) if identity.roles else None,
                "permissions": sorted(identity.roles),
                "tier": identity.tier,
            },
        }
    )


@route(
    bp,
    "/keys",
    permission="read",
    resource="auth",
    rate_limit="auth",
    summary="The caller's API keys (all, for an admin)",
    query=PageQuerySchema,
    response=json_object("success", "keys", "total"),
)
def list_keys() -> Response:
    """A page of the caller's keys (every key, for an admin; ``limit`` ≤ 100, ``offset``); never secrets or hashes."""
    identity = _caller()
    limit, offset = page_query()
    rows = _accounts().list_keys(identity, limit=limit + 1, offset=offset)
    keys = [_describe(k) for k in rows[:limit]]
    more = len(rows) > limit
    return jsonify({"success": True, "keys": keys, "total": len(keys), "next_offset": offset + limit if more else None})


@route(
    bp,
    "/keys/<int:key_id>",
    methods=("DELETE",),
    permission="read",
    resource="auth",
    rate_limit="auth",
    summary="Revoke an API key",
    response=json_object("success", "key"),
)
def revoke_key(key_id: int) -> Response:
    """Revoke one of the caller's keys (any key, for an admin)."""
    identity = _caller()
    key = _accounts().revoke_key(key_id, identity, remote=request.remote_addr)
    return jsonify({"success": True, "key": _describe(key)})


def _caller() -> Identity:
    """The authenticated caller (the route declared ``read``); a login token or a key, never anonymous."""
    identity = current_identity()
    if identity is None or identity.kind == "anonymous":
        raise AuthenticationFailed("an API key or a login token is required")
    return identity


def _describe(key: Any) -> dict[str, Any]:
    return {
        "id": key.id,
        "name": key.name,
        "prefix": key.prefix,
        "role": key.role,
        "permissions": key.permissions,
        "tier": key.tier,
        "created_at": _iso(key.created_at),
        "expires_at": _iso(key.expires_at),
        "revoked_at": _iso(key.revoked_at),
        "last_used_at": _iso(key.last_used_at),
    }


def _iso(when: dt.datetime | None) -> str | None:
    if when is None:
        return None
    return (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).isoformat()
