"""The ``llama-gpu`` command.

Sub-commands: ``serve``, ``plugins``, ``version``; later issues add ``models``, ``db``,
``users``, ``keys``, ``bench``. Plugins add their own through ``register_commands``.
Every flag mirrors a ``LLAMA_GPU_*`` variable.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Any

import click

from . import __version__
from .kernel.config import Settings
from .kernel.errors import LlamaGPUError
from .kernel.kernel import Kernel


def _kernel(**overrides: Any) -> Kernel:
    """A kernel with its plugins registered (not started)."""
    kernel = Kernel(Settings.from_env(**overrides))
    kernel.load_plugins()
    return kernel


class LlamaGPUGroup(click.Group):
    """A group that also offers the commands plugins register, and prints errors cleanly."""

    def _plugin_commands(self) -> dict[str, click.Command]:
        if not hasattr(self, "_from_plugins"):
            try:
                commands = _kernel().commands()
            except LlamaGPUError:
                commands = []  # the failing command itself reports the error
            self._from_plugins = {c.name: c for c in commands if c.name and c.name not in self.commands}
        return self._from_plugins

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Built-in commands, then those of plugins."""
        return sorted(super().list_commands(ctx)) + sorted(self._plugin_commands())

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """A built-in command, else a plugin's."""
        return super().get_command(ctx, cmd_name) or self._plugin_commands().get(cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; a LlamaGPUError becomes a one-line message and exit code 2."""
        try:
            return super().invoke(ctx)
        except LlamaGPUError as exc:
            click.echo(f"error: {exc.code}: {exc.message}", err=True)
            sys.exit(2)


@click.group(cls=LlamaGPUGroup)
@click.version_option(__version__, prog_name="llama-gpu")
def main() -> None:
    """LLaMA GPU: a self-hosted inference server."""


@main.command()
@click.option("--host", envvar="LLAMA_GPU_HOST", default=None, help="Address to listen on [127.0.0.1].")
@click.option("--port", envvar="LLAMA_GPU_PORT", type=int, default=None, help="Port to listen on [5000].")
@click.option("--default-model", envvar="LLAMA_GPU_DEFAULT_MODEL", default=None, help="Model serving 'default'.")
@click.option("--parallel", envvar="LLAMA_GPU_PARALLEL", type=int, default=None, help="Sequences per model [8].")
@click.option(
    "--max-queue", envvar="LLAMA_GPU_MAX_QUEUE", type=int, default=None, help="Waiting requests per model [64]."
)
@click.option(
    "--queue-timeout",
    envvar="LLAMA_GPU_QUEUE_TIMEOUT",
    type=float,
    default=None,
    help="Seconds a request may wait [60].",
)
def serve(
    host: str | None,
    port: int | None,
    default_model: str | None,
    parallel: int | None,
    max_queue: int | None,
    queue_timeout: float | None,
) -> None:
    """Start the server with its Socket.IO channel (development server; production runs under gunicorn)."""
    from .api import create_app, stop_on_exit

    settings = Settings.from_env(
        host=host,
        port=port,
        default_model=default_model,
        parallel=parallel,
        max_queue=max_queue,
        queue_timeout=queue_timeout,
    )
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    if settings.auth == "required":
        from .plugins.auth.keys import bootstrap_admin

        first = bootstrap_admin(settings)
        if first is not None:  # printed once, on the first start; never logged
            user, password, key = first
            click.echo(
                f"First start: created the admin user {user!r} with password {password}\n"
                f"and an admin API key (shown only now; keep it):\n\n    {key}\n",
            )
    app = create_app(settings)
    stop_on_exit(app)
    # SIGTERM (what process managers send) exits through atexit, so the kernel drains first.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    click.echo(f"LLaMA GPU {__version__} serving on http://{settings.host}:{settings.port}", err=True)
    # Through the Socket.IO server, so that the dashboard's WebSocket works (Werkzeug, threaded).
    socketio = app.extensions["socketio"]
    socketio.run(app, host=settings.host, port=settings.port, use_reloader=False, allow_unsafe_werkzeug=True)


@main.group()
def plugins() -> None:
    """Inspect plugins."""


@plugins.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def plugins_list(as_json: bool) -> None:
    """List installed plugins with their versions and status."""
    rows = _kernel().describe_plugins()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    header = ("ID", "VERSION", "STATUS", "CATEGORY", "SOURCE", "HOOKS")
    table = [header] + [
        (r["id"], r["version"], r["status"], r["category"], r["package"] or r["source"], ",".join(r["hooks"]))
        for r in rows
    ]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header) - 1)]
    for row in table:
        click.echo("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[-1])


@main.command()
def version() -> None:
    """Print the version."""
    click.echo(__version__)
