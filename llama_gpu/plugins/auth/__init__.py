"""Authentication and authorisation: API keys, logins, roles, rate limits, and their routes.

This package's names are its public surface for the rest of the server (the CLI's first-start
bootstrap); everything else in it is the plugins' own. They are imported on first use, so
importing the package stays light.
"""

from __future__ import annotations

from typing import Any

__all__ = ["accounts_for", "bootstrap_admin"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import keys

        return getattr(keys, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
