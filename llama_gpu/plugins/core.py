"""The core plugin: the kernel's own event types, role checks and kernel metrics."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from ..kernel.hookspecs import hookimpl
from ..kernel.kernel import Kernel
from ..kernel.types import Identity, PluginInfo

#: Event types the kernel itself publishes.
CORE_EVENT_TYPES: dict[str, str] = {
    "kernel_state": "The kernel changed state (started, draining, stopped).",
    "plugin_loaded": "A plugin was loaded at runtime.",
    "plugin_unloaded": "A plugin was unloaded at runtime.",
    "plugin_configured": "A plugin's configuration changed.",
    "plugin_error": "A plugin raised; the request it was serving failed.",
    "plugin_disabled": "A plugin was disabled after repeated failures.",
    "inference_started": "A request was admitted and its model resolved.",
    "inference_completed": "A request finished successfully.",
    "inference_failed": "A request was refused, failed or was cancelled.",
    "model_status": "A model's load state changed.",
}


class CorePlugin:
    """Declares the kernel's event types, decides permissions by role, reports kernel metrics."""

    PLUGIN_INFO = PluginInfo(
        name="Core",
        category="core",
        description="The kernel's event types, role-based permission checks and kernel metrics.",
        essential=True,
    )

    @hookimpl
    def register_event_types(self, register: Callable[[str, str], None]) -> None:
        """Declare the kernel's own event types."""
        for name, description in CORE_EVENT_TYPES.items():
            register(name, description)

    @hookimpl(trylast=True)
    def check_permission(self, identity: Identity | None, permission: str) -> bool | None:
        """Default rule: an identity may do what its roles allow (admin implies all)."""
        if identity is None:
            return None
        return identity.has(permission)

    @hookimpl
    def collect_metrics(self, kernel: Kernel) -> Mapping[str, float]:
        """Requests, tokens and uptime of the kernel."""
        return {
            "uptime_seconds": kernel.uptime,
            "requests_running": float(kernel.inflight),
            "requests_total": float(kernel.stats["requests"]),
            "requests_failed_total": float(kernel.stats["failed"]),
            "tokens_generated_total": float(kernel.stats["tokens"]),
            "models_loaded": float(len(kernel.registry.loaded())),
        }
