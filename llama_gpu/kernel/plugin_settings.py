"""One settings model for plugins: a schema on the plugin info, filled from the environment, then the API.

A plugin declares ``PluginInfo(settings_schema=MySchema)`` (a marshmallow ``Schema`` class; the
kernel only calls its ``load``, so it imports no marshmallow). Its settings are, lowest first:

1. the schema's ``load_default`` values and ``PluginInfo.default_settings``;
2. a field's ``metadata={"alias": "<Settings field>"}``: the value of that kernel
   :class:`~.config.Settings` field, so today's variable (``LLAMA_GPU_RATE_LIMIT_OVERRIDES``) keeps working;
3. ``LLAMA_GPU_<PLUGIN>_<KEY>`` (``LLAMA_GPU_RATE_LIMITS_OVERRIDES``);
4. what an operator configured (``PUT /api/v1/plugins/{id}/config``).

The whole is validated once by the schema; a refusal is ``INVALID_INPUT`` with the field errors,
and nothing changes. A plugin without a schema gets its default and configured settings as before.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Protocol

from .config import ENV_PREFIX, Settings
from .errors import InvalidInput
from .manager import PluginRecord

__all__ = ["SettingsSchema", "env_name", "resolve_settings", "sources_of"]


class SettingsSchema(Protocol):
    """What the kernel uses of a marshmallow schema."""

    fields: Mapping[str, Any]

    def load(self, data: Mapping[str, Any]) -> Any:
        """Validated, deserialised settings; raises ``ValidationError`` (with ``messages``) otherwise."""


def env_name(plugin_id: str, key: str) -> str:
    """``LLAMA_GPU_<PLUGIN>_<KEY>``, upper case, ``-`` as ``_``."""
    return f"{ENV_PREFIX}{plugin_id}_{key}".upper().replace("-", "_")


def _schema(record: PluginRecord) -> SettingsSchema | None:
    schema = getattr(record.info, "settings_schema", None) if record.info is not None else None
    return schema() if isinstance(schema, type) else schema


def _keys(schema: SettingsSchema) -> list[tuple[str, str | None]]:
    """(key as configured, alias Settings field) per field of ``schema``."""
    return [
        (field.data_key or name, (field.metadata or {}).get("alias"))
        for name, field in schema.fields.items()
        if not field.dump_only
    ]


def sources_of(
    record: PluginRecord, settings: Settings, env: Mapping[str, str] | None = None
) -> dict[str, dict[str, Any]]:
    """Where each setting of ``record`` comes from: ``{key: {"value", "source", "env", "alias"}}``."""
    env = os.environ if env is None else env
    schema = _schema(record)
    raw = resolve_settings(record, settings, env, validate=False)
    found: dict[str, dict[str, Any]] = {}
    for key, alias in _keys(schema) if schema is not None else [(k, None) for k in raw]:
        variable = env_name(record.id, key) if schema is not None else None
        if key in record.config.settings:
            source = "configured"
        elif variable is not None and variable in env:
            source = variable
        elif alias and f"{ENV_PREFIX}{alias.upper()}" in env:
            source = f"{ENV_PREFIX}{alias.upper()}"
        else:
            source = "default"
        old = f"{ENV_PREFIX}{alias.upper()}" if alias else None
        found[key] = {"value": raw.get(key), "source": source, "env": variable, "alias": old}
    return found


def resolve_settings(
    record: PluginRecord,
    settings: Settings,
    env: Mapping[str, str] | None = None,
    configured: Mapping[str, Any] | None = None,
    *,
    validate: bool = True,
) -> dict[str, Any]:
    """The effective settings of ``record`` (``configured``: instead of its configured ones), validated."""
    env = os.environ if env is None else env
    configured = record.config.settings if configured is None else configured
    raw: dict[str, Any] = dict(record.info.default_settings) if record.info is not None else {}
    schema = _schema(record)
    if schema is None:
        return {**raw, **configured}
    for key, alias in _keys(schema):
        if alias is not None:
            raw[key] = getattr(settings, alias)
        variable = env_name(record.id, key)
        if variable in env:
            raw[key] = env[variable]
    raw.update(configured)
    if not validate:
        return raw
    try:
        return dict(schema.load(raw))
    except Exception as exc:
        messages = getattr(exc, "messages", None)
        if messages is None:
            raise
        raise InvalidInput(
            f"invalid settings for plugin {record.id!r}: {messages}",
            details={"plugin_id": record.id, "fields": messages},
        ) from exc
