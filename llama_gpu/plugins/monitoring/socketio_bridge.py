"""The ``socketio_bridge`` plugin: bus events become Socket.IO events in their channel's room.

The kernel's event bus hands every event to this plugin's own delivery thread; an event of
a mapped type is emitted, under its bus type as the event name, to the room of its channel
on the Socket.IO server the dashboard shares as ``kernel.services[SOCKETIO]`` (nothing is
emitted where there is none, e.g. in a CLI command). The payload is the event's data
without ``caller`` (who made a request is nobody else's business), with ``timestamp`` added
when absent. Only whole-request and periodic events are mapped: never one per token.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from ...jobs import channels as job_channels
from ...kernel.hookspecs import hookimpl
from ...kernel.kernel import Kernel
from ...kernel.types import Event, PluginInfo, utc_iso
from . import SOCKETIO

log = logging.getLogger(__name__)

#: The channel declared by each kind of job (:attr:`llama_gpu.jobs.JobKind.channel`).
JOB_CHANNELS = job_channels()
#: Channels (rooms) and the bus event types each carries (a job channel: its kind's prefix).
CHANNELS: dict[str, tuple[str, ...]] = {
    "system_metrics": ("system_metrics",),
    "gpu_metrics": ("gpu_metrics",),
    "inference_stats": ("inference_stats",),
    "inference_events": ("inference_started", "inference_completed", "inference_failed"),
    "plugin_events": ("plugin_loaded", "plugin_unloaded", "plugin_configured", "plugin_error", "plugin_disabled"),
    "model_events": ("model_status",),
    "alerts": ("alert",),
    **{channel.name: () for channel in JOB_CHANNELS},
}
#: The role (permission) a connection needs to subscribe to a channel; unlisted ones need ``read``.
CHANNEL_ROLES: dict[str, str] = {"plugin_events": "admin", **{c.name: c.role for c in JOB_CHANNELS if c.role != "read"}}
#: Channels whose events reach only their owner (the event's ``caller``) and admins: each event goes
#: to the room ``<channel>:<owner>`` and to ``<channel>:*``, which admins join when they subscribe.
OWNER_CHANNELS: frozenset[str] = frozenset(c.name for c in JOB_CHANNELS if c.per_owner)
#: Dotted event families and their channel (``benchmark.started`` → ``benchmarks``).
PREFIX_CHANNELS: tuple[tuple[str, str], ...] = tuple((c.prefix, c.name) for c in JOB_CHANNELS)
#: Payload fields never sent to subscribers.
PRIVATE_FIELDS: frozenset[str] = frozenset({"caller"})

_BY_TYPE: dict[str, str] = {t: channel for channel, types in CHANNELS.items() for t in types}


def channel_of(event_type: str) -> str | None:
    """The channel that carries ``event_type``, or ``None`` when it is not sent to sockets."""
    channel = _BY_TYPE.get(event_type)
    if channel is not None:
        return channel
    for prefix, name in PREFIX_CHANNELS:
        if event_type.startswith(prefix):
            return name
    return None


def owner_room(channel: str, owner: str) -> str:
    """The room of ``owner``'s events of an owner channel (``*``: the admins' room, every owner's events)."""
    return f"{channel}:{owner}"


def payload_of(event: Event) -> dict[str, Any]:
    """The event's data as subscribers see it: JSON-safe, no private fields, with a timestamp."""
    data = {k: v for k, v in event.data.items() if k not in PRIVATE_FIELDS}
    if "timestamp" not in data:
        data["timestamp"] = utc_iso(event.timestamp)
    return json.loads(json.dumps(data, default=str))  # a value json cannot encode must not fail the emit


class SocketIOBridge:
    """Emits mapped bus events to the Socket.IO room of their channel."""

    PLUGIN_INFO = PluginInfo(
        name="Socket.IO bridge",
        category="monitoring",
        description="Sends system, GPU, inference, plugin, model and alert events to Socket.IO subscribers.",
    )

    def __init__(self) -> None:
        self.kernel: Kernel | None = None
        self.emitted = 0

    @hookimpl
    def startup(self, kernel: Kernel) -> None:
        """Remember the kernel (its Socket.IO server is looked up per event: the app attaches it later)."""
        self.kernel = kernel

    @hookimpl
    def shutdown(self, kernel: Kernel) -> None:
        """Stop emitting."""
        self.kernel = None

    @hookimpl
    def on_event(self, event: Event) -> None:
        """Emit ``event`` to its channel's room, when it has a channel and a server is attached."""
        kernel = self.kernel
        channel = channel_of(event.type)
        if kernel is None or channel is None:
            return
        server = kernel.services.get(SOCKETIO)
        if server is None:
            return
        payload = payload_of(event)
        if channel in OWNER_CHANNELS:
            owner = event.data.get("caller")
            # one emit per room (a connection is in one of them only: its owner's, or the admins')
            for room in [owner_room(channel, "*")] + ([owner_room(channel, str(owner))] if owner else []):
                server.emit(event.type, payload, to=room)
        else:
            server.emit(event.type, payload, to=channel)
        self.emitted += 1

    @hookimpl
    def collect_metrics(self) -> dict[str, float]:
        """How many events were emitted to sockets."""
        return {"events_emitted_total": float(self.emitted)}
