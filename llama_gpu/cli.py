"""The ``llama-gpu`` command.

Sub-commands: ``serve``, ``worker``, ``plugins``, ``version``; later issues add ``models``, ``db``,
``users``, ``keys``, ``bench``. Plugins add their own through ``register_commands``.
Every flag mirrors a ``LLAMA_GPU_*`` variable.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import click

from . import __version__
from .bench.cli import bench
from .convert.cli import convert
from .kernel.config import ENV_PREFIX, Settings
from .kernel.errors import LlamaGPUError
from .kernel.kernel import Kernel
from .kernel.private import private_dir


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
@click.option(
    "--unsafe-open-bind",
    is_flag=True,
    default=None,
    help="With LLAMA_GPU_AUTH=off, listen on a non-loopback --host anyway (every caller is an admin).",
)
@click.option(
    "--production",
    is_flag=True,
    help="Serve under gunicorn with the packaged llama_gpu/gunicorn_conf.py (one gthread worker) instead of Werkzeug.",
)
@click.option(
    "--gunicorn-config",
    envvar="LLAMA_GPU_GUNICORN_CONFIG",
    type=click.Path(dir_okay=False),
    default=None,
    help="gunicorn config for --production [llama_gpu/gunicorn_conf.py, shipped in the package].",
)
def serve(
    host: str | None,
    port: int | None,
    default_model: str | None,
    parallel: int | None,
    max_queue: int | None,
    queue_timeout: float | None,
    unsafe_open_bind: bool | None,
    production: bool,
    gunicorn_config: str | None,
) -> None:
    """Start the server with its Socket.IO channel (Werkzeug; ``--production``: gunicorn)."""
    from .app import configure_logging, create_app, stop_on_exit

    settings = Settings.from_env(
        host=host,
        port=port,
        default_model=default_model,
        parallel=parallel,
        max_queue=max_queue,
        queue_timeout=queue_timeout,
        unsafe_open_bind=unsafe_open_bind or None,
    )
    argv = _gunicorn_argv(settings, gunicorn_config) if production else None  # checked before any change
    _bootstrap(settings)
    if argv is not None:
        _exec_gunicorn(settings, argv)
    configure_logging(settings.log_level)
    app = create_app(settings)
    stop_on_exit(app)
    # SIGTERM (what process managers send) exits through atexit, so the kernel drains first.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    click.echo(f"LLaMA GPU {__version__} serving on http://{settings.host}:{settings.port}", err=True)
    # Through the Socket.IO server, so that the dashboard's WebSocket works (Werkzeug, threaded).
    socketio = app.extensions["socketio"]
    socketio.run(app, host=settings.host, port=settings.port, use_reloader=False, allow_unsafe_werkzeug=True)


def _bootstrap(settings: Settings) -> bool:
    """The first start: create the admin user and key, print them once; whether it did."""
    private_dir(settings.data_dir)
    if settings.auth != "required":
        return False
    from .plugins.auth import bootstrap_admin

    first = bootstrap_admin(settings)
    if first is None:
        return False
    user, password, key = first  # printed once, on the first start; never logged
    click.echo(
        f"First start: created the admin user {user!r} with password {password}\n"
        f"and an admin API key (shown only now; keep it):\n\n    {key}\n",
    )
    return True


@main.command("bootstrap-admin")
@click.option(
    "--secret-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the admin's password and key to this new file (mode 0600) instead of printing them.",
)
def bootstrap_admin_command(secret_file: Path | None) -> None:
    """Create the admin user and an admin key if there is no user yet (printed once), else nothing.

    What ``serve`` does at its first start; run it once before starting several instances
    on one database (compose's ``migrate`` service), so that they do not race to create it.
    With ``--secret-file`` the secrets go to a new file only the current user may read (never
    to stdout, where a container's log would keep them); an existing file is refused.
    """
    settings = Settings.from_env()
    if secret_file is None:
        if not _bootstrap(settings):
            click.echo("bootstrap-admin: users exist already (or LLAMA_GPU_AUTH=off): nothing to do", err=True)
        return
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    try:  # created before the admin is, so that a secret is never made that cannot be kept
        fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        from .plugins.auth import accounts_for

        if settings.auth != "required" or accounts_for(settings).count_users():  # a rerun (compose up again)
            click.echo("bootstrap-admin: users exist already (or LLAMA_GPU_AUTH=off): nothing to do", err=True)
            return
        raise click.UsageError(f"{secret_file} exists already: remove it or pass another --secret-file") from None
    except OSError as exc:
        raise click.UsageError(f"cannot create {secret_file}: {exc.strerror}") from None
    first = None
    try:
        if settings.auth == "required":
            from .plugins.auth import bootstrap_admin

            first = bootstrap_admin(settings)
        if first is not None:
            user, password, key = first
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                fd = -1
                out.write(f"user: {user}\npassword: {password}\napi_key: {key}\n")
                out.flush()
                os.fsync(out.fileno())
    finally:
        if fd >= 0:
            os.close(fd)
        if first is None:
            secret_file.unlink(missing_ok=True)
    if first is None:
        click.echo("bootstrap-admin: users exist already (or LLAMA_GPU_AUTH=off): nothing to do", err=True)
    else:
        click.echo(f"bootstrap-admin: created the admin user {first[0]!r}; its password and key are in {secret_file}")


#: The gunicorn config shipped in the package (``docker/gunicorn.conf.py`` imports it).
GUNICORN_CONFIG = Path(__file__).resolve().parent / "gunicorn_conf.py"
#: What gunicorn serves: the app factory's module, built in the worker (never in the master).
WSGI_APP = "llama_gpu.api.wsgi:app"


def _gunicorn_argv(settings: Settings, config: str | None) -> list[str]:
    """The gunicorn command line of ``serve --production`` (UsageError without gunicorn or its config)."""
    path = Path(config) if config else GUNICORN_CONFIG
    if not path.is_file():
        raise click.UsageError(f"gunicorn config {str(path)!r} not found: pass --gunicorn-config PATH")
    if importlib.util.find_spec("gunicorn") is None:
        raise click.UsageError("--production needs gunicorn: pip install gunicorn")
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    return [sys.executable, "-m", "gunicorn", "--config", str(path), "--bind", f"{host}:{settings.port}", WSGI_APP]


def _exec_gunicorn(settings: Settings, argv: list[str]) -> None:
    """Replace this process with gunicorn (so that SIGTERM reaches its master directly)."""
    # The worker builds its app from the environment: hand it the flags' values too.
    for name in ("host", "port", "default_model", "parallel", "max_queue", "queue_timeout"):
        os.environ[f"{ENV_PREFIX}{name.upper()}"] = str(getattr(settings, name))
    click.echo(f"LLaMA GPU {__version__}: gunicorn on http://{argv[6]} ({argv[4]})", err=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)


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


@plugins.command("config")
@click.argument("plugin_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def plugins_config(plugin_id: str, as_json: bool) -> None:
    """Show a plugin's effective settings and where each comes from (default, variable, configured)."""
    described = _kernel().plugin_settings(plugin_id)
    if as_json:
        click.echo(json.dumps(described, indent=2, default=str))
        return
    table = [("KEY", "VALUE", "SOURCE", "VARIABLE")] + [
        (
            key,
            json.dumps(row["value"], default=str),
            row["source"],
            " or ".join(filter(None, (row["env"], row["alias"]))),
        )
        for key, row in described.items()
    ]
    widths = [max(len(row[i]) for row in table) for i in range(3)]
    for row in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[3])


@main.command()
@click.option(
    "--queue",
    envvar="LLAMA_GPU_JOBS_QUEUE",
    default=None,
    help="The RQ queue to serve [llama-gpu-jobs]; the servers must use the same.",
)
@click.option("--burst", is_flag=True, help="Stop once the queue is empty.")
@click.option("--name", default=None, help="The worker's name in RQ [llama-gpu-<host>-<random>].")
def worker(queue: str | None, burst: bool, name: str | None) -> None:
    """Run queued benchmark and conversion jobs (needs LLAMA_GPU_REDIS_URL and the servers' database)."""
    from .jobs.executors import DEFAULT_QUEUE
    from .jobs.worker import run_worker

    # a worker serves no model of its own: benchmarks reach the servers over HTTP
    settings = Settings.from_env(preload=False)
    click.echo(f"LLaMA GPU {__version__} worker on queue {queue or DEFAULT_QUEUE}", err=True)
    run_worker(settings, queue or DEFAULT_QUEUE, burst=burst, name=name)


@main.command()
def version() -> None:
    """Print the version."""
    click.echo(__version__)


main.add_command(bench)
main.add_command(convert)
