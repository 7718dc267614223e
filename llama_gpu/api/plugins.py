"""Plugin management: list, load, unload, configure (admin)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from .context import get_kernel, json_body, require
from .schemas import PluginConfigureSchema, PluginLoadSchema

bp = Blueprint("plugins", __name__, url_prefix="/api/v1/plugins")


@bp.get("")
def list_plugins() -> Response:
    """Every installed plugin with its status."""
    require("read", "plugins")
    plugins = get_kernel().describe_plugins()
    return jsonify(
        {
            "success": True,
            "plugins": plugins,
            "total_plugins": len(plugins),
            "loaded_plugins": sum(p["status"] == "loaded" for p in plugins),
        }
    )


@bp.post("/<plugin_id>/load")
def load_plugin(plugin_id: str) -> Response:
    """Load an installed, allowed plugin with an optional config."""
    require("admin", "plugins")
    body = json_body(PluginLoadSchema(), optional=True)
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


@bp.delete("/<plugin_id>/unload")
def unload_plugin(plugin_id: str) -> Response:
    """Unload a plugin; essential ones refuse."""
    require("admin", "plugins")
    record = get_kernel().unload_plugin(plugin_id)
    return jsonify({"success": True, "message": "Plugin unloaded successfully", "plugin_id": record.id})


@bp.put("/<plugin_id>/config")
def configure_plugin(plugin_id: str) -> Response:
    """Change enabled, priority or settings; refused settings change nothing."""
    require("admin", "plugins")
    body = json_body(PluginConfigureSchema())
    record = get_kernel().configure_plugin(plugin_id, body["config"])
    return jsonify({"success": True, "message": "Plugin configuration updated", "config": record.config_dict()})
