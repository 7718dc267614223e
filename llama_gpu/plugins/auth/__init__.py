"""Authentication and authorisation: API keys, logins, roles, rate limits, and their routes.

This package's names are its public surface for the rest of the server (the CLI's first-start
bootstrap); everything else in it is the plugins' own. They are imported on first use, so
importing the package stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llama_gpu.kernel.services import ServiceKey

if TYPE_CHECKING:
    from .accounts import Accounts

__all__ = ["ACCOUNTS", "accounts_for", "bootstrap_admin"]

#: Users, API keys and sessions, shared by the ``api_keys`` plugin.
ACCOUNTS: ServiceKey[Accounts] = ServiceKey("accounts", plugin="api_keys")


def __getattr__(name: str) -> Any:
    if name in ("accounts_for", "bootstrap_admin"):
        from . import keys

        return getattr(keys, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
