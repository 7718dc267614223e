"""Open access: with ``LLAMA_GPU_AUTH=off``, a caller no plugin recognised is an anonymous admin.

For a single user on 127.0.0.1. It is ``trylast``: a key or a login token presented is
still checked first (and a bad one refused). With ``LLAMA_GPU_AUTH=required`` (the
default) it answers nobody, so unauthenticated calls get AUTHENTICATION_FAILED.
"""

from __future__ import annotations

from ...kernel.hookspecs import hookimpl
from ...kernel.kernel import Kernel
from ...kernel.types import Credentials, Identity, PluginInfo

PLUGIN_INFO = PluginInfo(
    name="Open access",
    category="auth",
    description="With LLAMA_GPU_AUTH=off, treats unauthenticated callers as an anonymous admin (local use).",
    essential=True,
)

ANONYMOUS = Identity(id="anonymous", roles=frozenset({"read", "write", "admin"}), kind="anonymous")


@hookimpl(trylast=True)
def authenticate(credentials: Credentials, kernel: Kernel) -> Identity | None:
    """Answer for every caller that no other plugin recognised, when auth is off."""
    return ANONYMOUS if kernel.settings.auth == "off" else None
