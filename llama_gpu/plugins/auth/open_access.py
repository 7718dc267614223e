"""Open access: until an authentication plugin answers, every caller is an anonymous admin.

This is the foundation's default so that a fresh install on 127.0.0.1 works without
set-up. It is ``trylast``: any authentication plugin that recognises the credentials
answers first. The identity/access issue replaces it with keys and logins.
"""

from __future__ import annotations

from ...kernel.hookspecs import hookimpl
from ...kernel.types import Credentials, Identity, PluginInfo

PLUGIN_INFO = PluginInfo(
    name="Open access",
    category="auth",
    description="Treats unauthenticated callers as an anonymous admin (local single-user default).",
    essential=True,
)

ANONYMOUS = Identity(id="anonymous", roles=frozenset({"read", "write", "admin"}), kind="anonymous")


@hookimpl(trylast=True)
def authenticate(credentials: Credentials) -> Identity | None:
    """Answer for every caller that no other plugin recognised."""
    return ANONYMOUS
