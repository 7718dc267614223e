"""The import graph: blueprints, the dashboard, the app factory and the CLI reach plugins only through
their public package surface, and ``api/`` and ``dashboard/`` are siblings that meet only in ``app.py``.

A plugin package's ``__init__`` (``llama_gpu.plugins.auth``, ``llama_gpu.plugins.monitoring``…) is
its public surface: import-light, its names listed in ``__all__``. Its modules (``…auth.keys``,
``…monitoring.samples``) and the single-module plugins (``llama_gpu.plugins.core``) are internals.
Every import counts, those inside functions too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "llama_gpu"

#: Where plugin internals may not be imported: the core blueprints, the jobs' blueprints, the
#: dashboard, the app factory and the CLI.
CONSUMERS = ("api", "jobs/routes", "dashboard", "app.py", "cli.py")
#: What the dashboard may use of ``api/``: schemas and the route declarations, never a blueprint.
#: Modules of ``api/`` that build the whole app: the WSGI entry point, and the package's lazy
#: ``create_app`` alias (kept for ``from llama_gpu.api import create_app``). They import ``app``, never the dashboard.
API_ENTRY_POINTS = frozenset({"llama_gpu.api", "llama_gpu.api.wsgi"})
DASHBOARD_MAY_IMPORT = frozenset(
    {"llama_gpu.api.schemas", "llama_gpu.api.openai_schemas", "llama_gpu.api.routing", "llama_gpu.api.context"}
)


def module_name(path: Path) -> str:
    """``llama_gpu/api/infer.py`` → ``llama_gpu.api.infer`` (a package's ``__init__``: the package)."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    """Whether ``name`` is a module or package of ``llama_gpu``."""
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports_of(path: Path) -> Iterator[tuple[int, str]]:
    """(line, module) of every ``llama_gpu`` module that ``path`` imports, relative imports resolved."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names if alias.name.startswith("llama_gpu"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if not target.startswith("llama_gpu"):
                continue
            for alias in node.names:  # ``from package import module`` imports the module
                yield node.lineno, f"{target}.{alias.name}" if is_module(f"{target}.{alias.name}") else target


def is_plugin_internal(name: str) -> bool:
    """Whether ``name`` is inside a plugin: any module under ``llama_gpu.plugins`` but a plugin package."""
    parts = name.split(".")
    if parts[:2] != ["llama_gpu", "plugins"] or len(parts) == 2:
        return False
    return len(parts) > 3 or not (PACKAGE / "plugins" / parts[2] / "__init__.py").is_file()


def problems_of(path: Path) -> list[str]:
    """What ``path`` imports that it should not."""
    where = module_name(path)
    found = []
    for line, target in imports_of(path):
        at = f"{path.relative_to(PACKAGE.parent)}:{line}"
        if is_plugin_internal(target):
            found.append(f"{at} imports the plugin internals {target}")
        app_too = () if where in API_ENTRY_POINTS else ("llama_gpu.app",)
        if where.startswith("llama_gpu.api") and target.startswith(("llama_gpu.dashboard", *app_too)):
            found.append(f"{at}: api/ imports {target} (the app factory joins api and dashboard)")
        if (
            where.startswith("llama_gpu.dashboard")
            and target.startswith("llama_gpu.api")
            and target not in DASHBOARD_MAY_IMPORT
        ):
            found.append(f"{at}: the dashboard imports the blueprint module {target}")
    return found


def consumer_files() -> list[Path]:
    """Every module the rules apply to."""
    files = []
    for entry in CONSUMERS:
        path = PACKAGE / entry
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return files


def test_no_blueprint_dashboard_or_cli_module_imports_plugin_internals() -> None:
    files = consumer_files()
    assert len(files) >= 15 and PACKAGE / "cli.py" in files
    assert [problem for path in files for problem in problems_of(path)] == []


def test_plugin_packages_keep_their_public_surface_light() -> None:
    """A plugin package's ``__init__`` imports none of its modules at import time (they load on first use)."""
    for init in sorted((PACKAGE / "plugins").glob("*/__init__.py")):
        tree = ast.parse(init.read_text())
        eager = [node for node in tree.body if isinstance(node, ast.ImportFrom) and node.level]
        assert eager == [], f"{init.relative_to(PACKAGE.parent)} imports its modules at import time"


@pytest.mark.parametrize(
    ("where", "source", "expected"),
    [
        ("api/sneaky.py", "from ..plugins.auth.keys import accounts_for\n", "imports the plugin internals"),
        ("api/sneaky.py", "from ..plugins.auth import keys\n", "imports the plugin internals"),
        ("api/sneaky.py", "def f():\n    from ..plugins.core import CorePlugin\n", "imports the plugin internals"),
        ("cli_sneaky.py", "import llama_gpu.plugins.monitoring.samples\n", "imports the plugin internals"),
        ("api/sneaky.py", "from ..dashboard import init_dashboard\n", "api/ imports"),
        ("api/sneaky.py", "from ..app import create_app\n", "api/ imports"),
        ("dashboard/sneaky.py", "from ..api.openai import bp\n", "the dashboard imports the blueprint module"),
        ("api/sneaky.py", "from ..plugins.auth import bootstrap_admin\n", None),
        ("dashboard/sneaky.py", "from ..api.schemas import StrictFloat\n", None),
    ],
)
def test_the_rules_catch_what_they_forbid(where: str, source: str, expected: str | None) -> None:
    path = PACKAGE / where
    assert not path.exists()
    try:
        path.write_text(source)
        problems = problems_of(path)
    finally:
        path.unlink()
    assert (problems == []) if expected is None else (len(problems) == 1 and expected in problems[0]), problems
