"""Monitoring plugins: system and GPU figures, stored samples, logs, alerts, Prometheus, the Socket.IO bridge.

This package's names are its public surface for the rest of the server (the dashboard's
Socket.IO namespace reads the channels the bridge emits to); everything else in it is the
plugins' own. They are imported on first use, so importing the package stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llama_gpu.kernel.services import ServiceKey

if TYPE_CHECKING:
    from flask_socketio import SocketIO

    from .monitor import Monitoring
    from .prometheus import Metrics

__all__ = ["CHANNELS", "CHANNEL_ROLES", "MONITORING", "OWNER_CHANNELS", "PROMETHEUS", "SOCKETIO", "owner_room"]

#: The ``monitoring`` plugin itself: system status, GPU figures, samples, logs, alerts.
MONITORING: ServiceKey[Monitoring] = ServiceKey("monitoring", plugin="monitoring")
#: The Prometheus metrics of the kernel, shared by the ``prometheus`` plugin.
PROMETHEUS: ServiceKey[Metrics] = ServiceKey("prometheus", plugin="prometheus")
#: The Socket.IO server the web dashboard attaches (or a worker's write-only one); the bridge emits through it.
SOCKETIO: ServiceKey[SocketIO] = ServiceKey("socketio", plugin="dashboard")


def __getattr__(name: str) -> Any:
    if name in ("CHANNELS", "CHANNEL_ROLES", "OWNER_CHANNELS", "owner_room"):
        from . import socketio_bridge

        return getattr(socketio_bridge, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
