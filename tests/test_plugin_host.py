"""The plugin host: one table of hook → dispatch kind, and wrappers supported or refused by it."""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

import pluggy
import pytest

from llama_gpu import Credentials, Identity, InferenceRequest, InferenceResponse, Kernel, hookimpl
from llama_gpu.errors import AuthenticationFailed, PluginFailed, PluginLoadFailed
from llama_gpu.kernel import hookspecs
from llama_gpu.kernel.manager import STATUS_LOADED
from llama_gpu.kernel.plugin_host import COLLECTORS, FAIL_CLOSED_HOOKS, HOOKS, Dispatch, hook_table, hooks_of_kind

from .conftest import Recorder


def test_every_hookspec_has_exactly_one_dispatch_kind() -> None:
    specs = {name for name in dir(hookspecs) if hasattr(getattr(hookspecs, name), "llama_gpu_spec")}
    assert set(HOOKS) == specs
    assert sorted(name for kind in Dispatch for name in hooks_of_kind(kind)) == sorted(specs)
    for name, rule in HOOKS.items():
        spec = getattr(hookspecs, name).llama_gpu_spec
        assert (rule.kind is Dispatch.FIRSTRESULT) == bool(spec.get("firstresult")), name
    assert COLLECTORS[0] == "register_event_types"  # plugins' event types exist before anything else
    assert {"authenticate", "check_permission", "rate_limit"} == FAIL_CLOSED_HOOKS


def test_a_hook_is_dispatched_only_as_its_kind(kernel: Kernel) -> None:
    with pytest.raises(ValueError, match="prepare_request is a pipeline hook"):
        kernel.call_all("prepare_request", request=InferenceRequest(prompt="x"), kernel=kernel)
    with pytest.raises(ValueError, match="authenticate is a firstresult hook"):
        kernel.run_pipeline("authenticate", credentials=Credentials(), kernel=kernel)


class Timing:
    """A third-party timing plugin: new-style wrappers around a pipeline and a firstresult hook."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []

    @hookimpl(wrapper=True)
    def process_response(self, request: InferenceRequest, response: InferenceResponse) -> Generator[None, None, None]:
        self.seen.append(("before", response.text))
        result = yield
        self.seen.append(("after", response.text))
        return result

    @hookimpl(wrapper=True)
    def authenticate(self, credentials: Credentials) -> Generator[None, Identity | None, Identity | None]:
        identity = yield
        self.seen.append(("identity", identity))
        return identity


class Upper:
    @hookimpl
    def process_response(self, response: InferenceResponse) -> None:
        response.text = response.text.upper()


def test_a_wrapper_wraps_the_whole_pipeline_and_a_firstresult_call(kernel: Kernel) -> None:
    timing = Timing()
    kernel.register_plugin("upper", Upper())
    kernel.register_plugin("timing", timing)
    response = kernel.complete(InferenceRequest(model="echo", prompt="one two"))
    assert response.text == response.text.upper() and response.text
    before, after = timing.seen[0], timing.seen[-1]
    assert before[0] == "before" and before[1] != response.text  # ran before the filter …
    assert after == ("after", response.text)  # … and after it

    identity = kernel.authenticate(Credentials(api_key="whatever"))
    assert isinstance(identity, Identity) and identity.id == "anonymous"  # the caller's identity, never a generator
    assert timing.seen[-1] == ("identity", identity)
    assert "authenticate" in kernel.plugins.hooks_of(kernel.plugins.get("timing"))


class OldStyle:
    """An old-style ``hookwrapper=True`` that replaces the answer of check_permission."""

    @hookimpl(hookwrapper=True)
    def check_permission(self, permission: str) -> Generator[None, pluggy.Result[Any], None]:
        outcome = yield
        if permission == "forbidden":
            outcome.force_result(False)


def test_an_old_style_hookwrapper_sees_and_may_replace_the_outcome(kernel: Kernel) -> None:
    assert kernel.check_permission(Identity(id="x", roles=frozenset({"admin"})), "forbidden") is True
    kernel.register_plugin("old", OldStyle())
    assert kernel.check_permission(Identity(id="x", roles=frozenset({"admin"})), "forbidden") is False
    assert kernel.check_permission(Identity(id="x", roles=frozenset({"admin"})), "read") is True


class BrokenWrapper:
    def __init__(self) -> None:
        self.calls = 0

    @hookimpl(wrapper=True)
    def authenticate(self, credentials: Credentials) -> Generator[None, Identity | None, Identity | None]:
        self.calls += 1
        yield
        raise RuntimeError("timer broke")


def test_a_failing_wrapper_on_an_access_hook_refuses_the_request_and_is_never_disabled(
    kernel: Kernel, recorder: Recorder
) -> None:
    broken = BrokenWrapper()
    kernel.register_plugin("broken", broken)
    threshold = kernel.settings.plugin_failure_threshold
    for _ in range(threshold + 2):
        with pytest.raises(PluginFailed, match="broken") as failed:
            kernel.authenticate(Credentials(api_key="k"))
        assert failed.value.details == {"plugin_id": "broken", "hook": "authenticate"}
    record = kernel.plugins.get("broken")
    assert record.status == STATUS_LOADED and broken.calls == threshold + 2
    assert recorder.wait_for("plugin_error", plugin_id="broken", hook="authenticate")


class PassThrough:
    """A wrapper that lets the inner error through untouched."""

    @hookimpl(wrapper=True)
    def authenticate(self, credentials: Credentials) -> Generator[None, Identity | None, Identity | None]:
        return (yield)


class Refuses:
    @hookimpl
    def authenticate(self, credentials: Credentials) -> Identity | None:
        raise AuthenticationFailed("no")


def test_an_error_of_the_wrapped_call_reaches_the_caller_as_it_was(kernel: Kernel) -> None:
    kernel.register_plugin("refuses", Refuses())
    kernel.register_plugin("pass", PassThrough())
    with pytest.raises(AuthenticationFailed, match="no"):
        kernel.authenticate(Credentials(api_key="k"))
    assert kernel.plugins.get("pass").failures == 0


class WrapsASubscriber:
    @hookimpl(wrapper=True)
    def on_event(self, event: Any) -> Generator[None, None, None]:
        yield


class WrapsACollector:
    @hookimpl(hookwrapper=True)
    def register_routes(self, register: Any) -> Generator[None, None, None]:
        yield


@pytest.mark.parametrize(
    ("plugin", "hook", "kind"),
    [(WrapsASubscriber, "on_event", "subscriber"), (WrapsACollector, "register_routes", "collector")],
)
def test_a_wrapper_where_none_can_run_is_refused_at_registration(
    kernel: Kernel, plugin: type, hook: str, kind: str
) -> None:
    with pytest.raises(PluginLoadFailed) as refused:
        kernel.register_plugin("wrapping", plugin())
    message = refused.value.message
    assert "'wrapping'" in message and repr(hook) in message and kind in message
    assert refused.value.details == {"plugin_id": "wrapping", "hook": hook}
    assert "wrapping" not in kernel.plugins.records and not kernel.plugins.pm.has_plugin("wrapping")


def test_the_docs_hook_table_is_the_hosts_table() -> None:
    text = (Path(__file__).resolve().parent.parent / "docs" / "hooks.md").read_text()
    start = text.index("<!-- hook table: generated from llama_gpu.kernel.plugin_host.HOOKS -->\n")
    table = text[text.index("\n", start) + 1 : text.index("<!-- end of hook table -->")]
    assert table == hook_table()
    for name in HOOKS:
        assert f"| `{name}` | {HOOKS[name].kind.value} |" in table
