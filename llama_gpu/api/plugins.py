"""Plugin management: list, load, unload, configure (admin)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from .context import get_kernel, json_body
from .responses import PluginsResponseSchema
from .routing import json_object, route
from .schemas import PluginConfigureSchema, PluginLoadSchema

bp = Blueprint("plugins", __name__, url_prefix="/api/v1/plugins")


@route(
    bp,
    "",
    permission="read",
    resource="plugins",
    rate_limit="plugins",
    summary="List plugins",
    response=PluginsResponseSchema,
)
def list_plugins() -> Response:
    """Every installed plugin with its status."""
    plugins = get_kernel().describe_plugins()
    return jsonify(
        {
            "success": True,
            "plugins": plugins,
            "total_plugins": len(plugins),
            "loaded_plugins": sum(p["status"] == "loaded" for p in plugins),
        }
    )


@route(
    bp,
    "/<plugin_id>/load",
    methods=("POST",),
    permission="admin",
    resource="plugins",
    rate_limit="plugins",
    summary="Load an installed plugin",
    body=PluginLoadSchema,
    body_required=False,
    response=json_object("success", "message", "plugin"),
)
def load_plugin(plugin_id: str) -> Response:
    """Load an installed, allowed plugin with an optional config."""
    body = json_body()
    record = get_kernel().load_plugin(plugin_id, body["config"])
    return jsonify(
        {
            "success": True,
            "message": "Plugin loaded successfully" if record.loaded else "Plugin configured but disabled",
            "plugin": {
                "id": record.id,
                "status": record.status,
                "load_time": round(record.load_time or 0.0, 6),
                "config": {"enabled": record.config.enabled, "priority": record.priority},
            },
        }
    )


@route(
    bp,
    "/<plugin_id>/unload",
    methods=("DELETE",),
    permission="admin",
    resource="plugins",
    rate_limit="plugins",
    summary="Unload a plugin",
    response=json_object("success", "message", "plugin_id"),
)
def unload_plugin(plugin_id: str) -> Response:
    """Unload a plugin; essential ones refuse."""
    record = get_kernel().unload_plugin(plugin_id)
    return jsonify({"success": True, "message": "Plugin unloaded successfully", "plugin_id": record.id})


@route(
    bp,
    "/<plugin_id>/config",
    methods=("PUT",),
    permission="admin",
    resource="plugins",
    rate_limit="plugins",
    summary="Configure a plugin",
    body=PluginConfigureSchema,
    response=json_object("success", "config"),
)
def configure_plugin(plugin_id: str) -> Response:
    """Change enabled, priority or settings; refused settings change nothing."""
    body = json_body()
    record = get_kernel().configure_plugin(plugin_id, body["config"])
    return jsonify({"success": True, "message": "Plugin configuration updated", "config": record.config_dict()})
