"""Typed services: plugins share objects under :class:`ServiceKey` s; a missing one names its plugin."""

from __future__ import annotations

import pytest

from llama_gpu import Kernel, ServiceKey, Services, hookimpl
from llama_gpu.db import DATABASE, Database
from llama_gpu.errors import ServiceUnavailable
from llama_gpu.plugins.auth import ACCOUNTS
from llama_gpu.plugins.monitoring import MONITORING, PROMETHEUS, SOCKETIO


class Greeter:
    """A service a test plugin shares."""

    def hello(self) -> str:
        return "hello"


GREETER: ServiceKey[Greeter] = ServiceKey("greeter", plugin="greeting")


class GreetingPlugin:
    """Shares a :class:`Greeter` at start-up and stops sharing it at shutdown."""

    def __init__(self) -> None:
        self.greeter = Greeter()

    @hookimpl
    def startup(self, kernel: Kernel) -> None:
        kernel.services[GREETER] = self.greeter

    @hookimpl
    def shutdown(self, kernel: Kernel) -> None:
        kernel.services.discard(GREETER, self.greeter)


def test_a_plugin_shares_a_typed_service_and_unloading_it_names_the_missing_plugin(kernel: Kernel) -> None:
    assert kernel.services.get(GREETER) is None
    with pytest.raises(ServiceUnavailable) as missing:
        kernel.service(GREETER)
    assert "greeting" in missing.value.message and missing.value.details == {
        "plugin_id": "greeting",
        "service": "greeter",
    }
    assert missing.value.code == "SERVICE_UNAVAILABLE" and missing.value.status == 503

    kernel.register_plugin("greeting", GreetingPlugin())
    assert kernel.service(GREETER).hello() == "hello"
    assert GREETER in kernel.services and kernel.services.get(GREETER) is kernel.service(GREETER)

    kernel.unload_plugin("greeting")
    assert GREETER not in kernel.services
    with pytest.raises(ServiceUnavailable, match="the greeting plugin is not loaded"):
        kernel.service(GREETER)


def test_the_built_ins_share_their_objects_under_their_exported_keys(kernel: Kernel) -> None:
    assert isinstance(kernel.service(DATABASE), Database)
    assert kernel.service(ACCOUNTS).db is kernel.service(DATABASE)
    assert kernel.service(MONITORING) is not None and kernel.service(PROMETHEUS) is not None
    assert SOCKETIO not in kernel.services  # no web app attached
    with pytest.raises(ServiceUnavailable, match="dashboard"):
        kernel.service(SOCKETIO)
    kernel.unload_plugin("monitoring")
    with pytest.raises(ServiceUnavailable, match="the monitoring plugin is not loaded"):
        kernel.service(MONITORING)


def test_a_legacy_name_reads_the_same_object_as_its_key(kernel: Kernel) -> None:
    assert kernel.services["db"] is kernel.service(DATABASE)
    assert kernel.services.get("accounts") is kernel.service(ACCOUNTS)
    with pytest.raises(ServiceUnavailable, match="nothing"):
        kernel.services["nothing"]


def test_services_refuse_what_is_not_a_key_or_none() -> None:
    services = Services()
    with pytest.raises(TypeError):
        services[42]  # type: ignore[index]
    with pytest.raises(ValueError, match="None"):
        services[GREETER] = None  # type: ignore[assignment]
    first, second = Greeter(), Greeter()
    assert services.setdefault(GREETER, first) is first and services.setdefault(GREETER, second) is first
    services.discard(GREETER, second)  # not the shared one: kept
    assert services[GREETER] is first and list(services) == [GREETER] and services.values() == [first]
    assert services.pop(GREETER) is first and len(services) == 0
    with pytest.raises(TypeError, match="name"):
        ServiceKey("")
