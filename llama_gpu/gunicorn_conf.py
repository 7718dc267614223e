"""gunicorn configuration of one LLaMA GPU instance (``llama-gpu serve --production`` runs it).

    gunicorn -c python:llama_gpu.gunicorn_conf llama_gpu.api.wsgi:app

It ships inside the package, so a wheel serves ``--production`` as the source tree does
(``docker/gunicorn.conf.py`` imports it).

Settings come from the same ``LLAMA_GPU_*`` variables as ``llama-gpu serve``; anything here
can still be overridden with ``GUNICORN_CMD_ARGS`` (e.g. ``--threads 128``).

Worker model: ONE worker process per instance, ``gthread`` with many threads, WebSocket
through ``simple-websocket``. Why:

- Socket.IO keeps its sessions in the memory of the process that accepted them: the
  long-polling requests of one client must all reach that process (sticky sessions). nginx
  can pin a client to an *instance* (``ip_hash`` over host:port), but not to one of several
  worker processes behind one port, so each instance is exactly one process. Scale out with
  more instances (a port, a container, a machine each), not more workers.
- The model engines are per process (each worker would load its own copy of every model),
  so one process per instance is also what the memory wants.
- Flask-SocketIO runs in ``threading`` mode here; gunicorn's ``gthread`` worker is the
  threaded worker it supports, and ``simple-websocket`` gives it the WebSocket transport.
  Each open stream or WebSocket holds a thread, hence many threads. (An eventlet/gevent worker
  would need the whole app monkey-patched, which llama.cpp's and torch's native threads do not
  survive.)
- Several instances reach each other's Socket.IO clients through the Redis message queue
  (``LLAMA_GPU_REDIS_URL``) and share rate-limit counters there, and state in PostgreSQL.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from gunicorn.glogging import Logger

from llama_gpu.kernel.config import Settings  # light: no Flask, no SQL; fails early on a bad LLAMA_GPU_* value

_settings = Settings.from_env()

# ---------------------------------------------------------------- server socket
bind = [f"{_settings.host}:{_settings.port}"]  # `serve --production --host/--port` passes --bind
backlog = 2048

# ---------------------------------------------------------------- workers (see the docstring)
workers = 1
worker_class = "gthread"
# Every SSE stream and Socket.IO request holds a thread: the app caps them at LLAMA_GPU_MAX_STREAMS
# (default 48, per identity and per address less), and 16 threads more stay free for short requests
# (/health, /ready, other callers), so that idle streams cannot starve them.
threads = (_settings.max_streams or 48) + 16
# Clients at once, idle keep-alive connections included (each active one takes a thread).
worker_connections = 1000
# Never in the master: the kernel's threads must be started in the process that serves.
preload_app = False

# ---------------------------------------------------------------- timeouts
# The gthread worker reports to the master from its own loop, not from the request threads,
# so `timeout` only catches a hung worker: streams may run far longer than it.
timeout = 120
# A stop (SIGTERM) lets running requests finish for LLAMA_GPU_DRAIN_TIMEOUT seconds (set it
# to the longest generation you allow, e.g. max_tokens / tokens per second), then a margin
# for writing the request log and unloading models; the master kills the worker after it.
# Container and service managers must wait longer still (compose: stop_grace_period).
graceful_timeout = int(_settings.drain_timeout) + 15
# Above nginx's upstream keepalive_timeout (60 s), so that nginx closes idle connections first.
keepalive = 75

# The control socket (gunicorn >= 25.1) defaults to one path per user: two instances on one
# machine would fight over it. Management goes through signals (TERM, HUP) instead.
control_socket_disable = True

# ---------------------------------------------------------------- logging: JSON lines on stderr/stdout


class _JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (and the exception)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def client_address(environ: dict[str, Any], hops: int | None = None) -> str | None:
    """The client's address as the app sees it: as werkzeug's ProxyFix, ``LLAMA_GPU_TRUSTED_PROXIES`` hops.

    Each trusted proxy appends the address it saw to X-Forwarded-For, so the client is the
    ``hops``-th entry from the END; entries before it are whatever the client sent (its first
    entry is forgeable). Without trusted proxies, or with fewer entries: the peer address.
    """
    hops = _settings.trusted_proxies if hops is None else hops
    orig = environ.get("werkzeug.proxy_fix.orig") or {}
    peer = orig.get("REMOTE_ADDR") or environ.get("REMOTE_ADDR")
    if hops > 0:
        values = [v.strip() for v in environ.get("HTTP_X_FORWARDED_FOR", "").split(",") if v.strip()]
        if len(values) >= hops:
            return values[-hops]
    return peer


class JsonLogger(Logger):
    """gunicorn's logger with JSON error lines and one JSON object per access."""

    def setup(self, cfg: Any) -> None:
        """Set up gunicorn's handlers, then give them the JSON formatter."""
        super().setup(cfg)
        for handler in self.error_log.handlers:
            handler.setFormatter(_JsonFormatter())
        for handler in self.access_log.handlers:  # access() writes whole JSON objects
            handler.setFormatter(logging.Formatter("%(message)s"))

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: dt.timedelta) -> None:
        """Log one request as JSON (``remote``: the client as the trusted proxies vouch for it)."""
        if not self.cfg.accesslog:
            return
        headers = dict(resp.headers) if isinstance(resp.headers, list) else {}
        entry = {
            "time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
            "remote": client_address(environ),
            "method": environ.get("REQUEST_METHOD"),
            "path": environ.get("PATH_INFO"),
            "status": getattr(resp, "status_code", None),
            "bytes": getattr(resp, "sent", None),
            "duration_s": round(request_time.total_seconds(), 6),
            "request_id": headers.get("X-Request-ID"),
            "user_agent": environ.get("HTTP_USER_AGENT"),
        }
        self.access_log.info(json.dumps(entry, ensure_ascii=False))


logger_class = JsonLogger
accesslog = "-"
errorlog = "-"
loglevel = _settings.log_level.lower()

# ---------------------------------------------------------------- hooks


def on_starting(server: Any) -> None:
    """Prometheus multi-process mode: start from an empty PROMETHEUS_MULTIPROC_DIR."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:
        path = Path(folder)
        if path.is_dir():
            for stale in path.glob("*.db"):  # files of processes of an earlier run would be counted
                stale.unlink()
        else:
            path.mkdir(parents=True, exist_ok=True)
        server.log.info("prometheus multiprocess folder %s", path)


def post_fork(server: Any, worker: Any) -> None:
    """In the worker: the app's own log records as JSON lines on stderr too."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]  # create_app's basicConfig then leaves it as it is
    root.setLevel(_settings.log_level.upper())


def post_worker_init(worker: Any) -> None:
    """SIGTERM also starts the app's graceful stop (sockets closed, kernel draining) at once."""
    from llama_gpu.api.wsgi import begin_shutdown

    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum: int, frame: Any) -> None:
        # On threads of their own: a signal handler interrupts the worker's main loop, and closing
        # the sockets or taking a lock from there can wait on that very loop.
        app = getattr(worker, "wsgi", None)
        threading.Thread(target=begin_shutdown, args=(app,), name="llama-gpu-stop", daemon=True).start()
        threading.Thread(target=_stop_listening, args=(worker,), name="llama-gpu-unlisten", daemon=True).start()
        if callable(previous):
            previous(signum, frame)  # gunicorn's own: stop accepting, finish open connections

    signal.signal(signal.SIGTERM, on_term)
    signal.siginterrupt(signal.SIGTERM, False)


def _stop_listening(worker: Any) -> None:
    """Refuse new connections at once, so that nginx sends them to another instance.

    The master closes its copy of the listening socket on SIGTERM, but the worker keeps its own
    open until its last connection is done: meanwhile the kernel still completes handshakes
    into the backlog, and those clients wait there for the whole graceful period. Shutting the
    socket down (not closing it: the worker still owns the descriptor) ends the listening
    state: queued and new connections are refused, and nginx tries the next instance. Done
    once the worker's loop has stopped accepting, so that it never sees the socket fail.
    """
    deadline = time.monotonic() + 3.0
    while getattr(worker, "_accepting", False) and time.monotonic() < deadline:
        time.sleep(0.02)
    for listener in getattr(worker, "sockets", ()):
        with contextlib.suppress(AttributeError, OSError):  # closed already, or not a socket
            listener.sock.shutdown(socket.SHUT_RDWR)


def worker_exit(server: Any, worker: Any) -> None:
    """The worker leaves: drain and stop the app's kernel (the request log's last rows are written).

    This wait is what lets running streams finish: gthread's own graceful wait counts
    connections, and was seen ending at once after WebSocket connections had closed (gunicorn
    27.0.1), while requests were still running on its threads. Those threads are not daemons,
    so the process also waits for them to write their last bytes before it exits.
    """
    from llama_gpu.api.wsgi import finish_shutdown

    started = time.monotonic()
    drained = finish_shutdown(getattr(worker, "wsgi", None))
    worker.log.info("kernel stopped in %.1f s (drained: %s)", time.monotonic() - started, drained)


def child_exit(server: Any, worker: Any) -> None:
    """In the master: a dead worker's live gauges leave the Prometheus multi-process figures."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
