"""Keep the design honest: documented hooks, a test per hook, a kernel without Flask or SQL."""

from __future__ import annotations

import ast
import inspect
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from llama_gpu.kernel import hookspecs
from llama_gpu.kernel.errors import LlamaGPUError, all_error_classes
from llama_gpu.kernel.plugin_host import HOOKS as DISPATCH
from llama_gpu.kernel.plugin_host import Dispatch

HOOKS = {
    name: func for name, func in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(func, "llama_gpu_spec")
}
#: The dispatch kinds, and each hook's, from the plugin host's one table.
KINDS = tuple(kind.value for kind in Dispatch)
TESTS = Path(__file__).resolve().parent


def test_the_plugin_host_table_names_every_hook_once() -> None:
    assert sorted(DISPATCH) == sorted(HOOKS)


def test_the_expected_hooks_exist() -> None:
    expected = {
        "configure",
        "startup",
        "shutdown",
        "register_backends",
        "register_event_types",
        "register_commands",
        "register_routes",
        "prepare_request",
        "process_chunk",
        "process_response",
        "authenticate",
        "check_permission",
        "on_event",
        "collect_metrics",
    }
    assert expected <= set(HOOKS)


@pytest.mark.parametrize("name", sorted(HOOKS))
def test_every_hook_is_typed_and_documented(name: str) -> None:
    func = HOOKS[name]
    doc = inspect.getdoc(func) or ""
    signature = inspect.signature(func)
    hints = typing.get_type_hints(func, globalns=vars(hookspecs) | _typing_names())
    assert "return" in hints, f"{name} has no return annotation"
    for param in signature.parameters:
        assert param in hints, f"{name}({param}) is not typed"
        assert f":param {param}:" in doc, f"{name} does not document {param}"
    assert ":return:" in doc
    aggregation = [line for line in doc.splitlines() if line.startswith("Aggregation:")]
    assert aggregation, f"{name} does not state its aggregation rule"
    kind = re.match(r"Aggregation: ([a-z-]+)", aggregation[0]).group(1)  # type: ignore[union-attr]
    assert kind in KINDS, f"{name}: unknown aggregation {kind!r}"
    assert DISPATCH[name].kind == kind, f"{name}: the plugin host dispatches it as {DISPATCH[name].kind}"
    opts = func.llama_gpu_spec  # type: ignore[attr-defined]
    assert (kind == "firstresult") == bool(opts.get("firstresult")), f"{name}: aggregation and spec disagree"
    if kind == "collector":
        assert list(signature.parameters) == ["register"], f"{name}: collectors take one register callback"


def _typing_names() -> dict[str, object]:
    from llama_gpu.kernel import backend, kernel, types

    return {**vars(types), **vars(backend), "Kernel": kernel.Kernel}


def test_every_hook_has_a_test_of_its_own() -> None:
    names: set[str] = set()
    for path in TESTS.glob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_hook_"):
                names.add(node.name.removeprefix("test_hook_"))
    missing = sorted(set(HOOKS) - names)
    assert not missing, f"hooks without a test_hook_<name> test: {missing}"


def test_the_kernel_imports_no_flask_no_http_no_sql() -> None:
    code = (
        "import sys, llama_gpu.kernel, llama_gpu.kernel.kernel, llama_gpu.plugins.core;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'flask', 'werkzeug', 'sqlalchemy', 'alembic', 'marshmallow', 'http', 'requests', 'flask_socketio'});"
        "print(','.join(bad)); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"the kernel imported {result.stdout.strip()} {result.stderr}"
    sources = (TESTS.parent / "llama_gpu" / "kernel").rglob("*.py")
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import | ast.ImportFrom):
                modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                for module in modules:
                    assert module.split(".")[0] not in {"flask", "werkzeug", "sqlalchemy", "marshmallow"}, path


def test_error_codes_and_statuses_match_the_contract() -> None:
    table = {cls.code: cls.status for cls in all_error_classes()}
    seed = {
        "INVALID_INPUT": 400,
        "AUTHENTICATION_FAILED": 401,
        "PERMISSION_DENIED": 403,
        "MODEL_NOT_FOUND": 404,
        "PLUGIN_NOT_FOUND": 404,
        "RATE_LIMIT_EXCEEDED": 429,
        "MODEL_LOAD_FAILED": 500,
        "INFERENCE_FAILED": 500,
        "PLUGIN_LOAD_FAILED": 500,
        "INSUFFICIENT_MEMORY": 503,
        "BACKEND_UNAVAILABLE": 503,
        "MODEL_NOT_LOADED": 409,
        "SERVER_OVERLOADED": 503,
    }
    for code, status in seed.items():
        assert table.get(code) == status, code
    codes = [cls.code for cls in all_error_classes()]
    assert len(codes) == len(set(codes)), "every error class has a code of its own"
    assert all(issubclass(cls, LlamaGPUError) and cls.__doc__ for cls in all_error_classes())


def test_public_api_is_complete() -> None:
    import llama_gpu

    for name in llama_gpu.__all__:
        assert hasattr(llama_gpu, name), name
    import llama_gpu.errors

    assert llama_gpu.errors.InvalidInput is __import__("llama_gpu.kernel.errors").kernel.errors.InvalidInput
