"""Monitoring plugins: system and GPU figures, stored samples, logs, alerts, Prometheus, the Socket.IO bridge.

This package's names are its public surface for the rest of the server (the dashboard's
Socket.IO namespace reads the channels the bridge emits to); everything else in it is the
plugins' own. They are imported on first use, so importing the package stays light.
"""

from __future__ import annotations

from typing import Any

__all__ = ["CHANNELS", "CHANNEL_ROLES", "OWNER_CHANNELS", "owner_room"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import socketio_bridge

        return getattr(socketio_bridge, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
