"""The WSGI entry point for gunicorn (``llama_gpu.api.wsgi:app``) and the helpers its config calls.

``llama_gpu/gunicorn_conf.py`` (what ``llama-gpu serve --production`` runs) imports this module
in each worker process, never in the master (no ``preload_app``): the kernel starts threads
(model engines, the event bus, the request-log writer) that must live in the process that
serves. Settings come from the ``LLAMA_GPU_*`` environment, as for ``llama-gpu serve``.

Shutdown of a worker (SIGTERM from the gunicorn master, e.g. ``docker stop``, ``systemctl
stop``): :func:`begin_shutdown` runs from the worker's signal handler. It closes the
Socket.IO connections of this process (their clients reconnect through nginx to another
instance; an open WebSocket would otherwise hold the worker for its whole graceful timeout)
and starts draining the kernel on a thread: new requests get 503 ``SERVICE_UNAVAILABLE`` at
once (nginx passes them to the next instance), running ones finish within
``LLAMA_GPU_DRAIN_TIMEOUT``. :func:`finish_shutdown` (gunicorn's ``worker_exit``) waits for
that drain, so that the request log is written before the process goes.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any

from flask import Flask

from ..kernel.kernel import Kernel, KernelState
from .context import EXTENSION

log = logging.getLogger(__name__)

_drains: dict[int, tuple[threading.Thread, float]] = {}
_drains_lock = threading.Lock()


def kernel_of(app: Any) -> Kernel | None:
    """The kernel behind a WSGI app built by :func:`~llama_gpu.app.create_app` (``None`` for another app)."""
    extensions = getattr(app, "extensions", None)
    kernel = extensions.get(EXTENSION) if isinstance(extensions, dict) else None
    return kernel if isinstance(kernel, Kernel) else None


def close_sockets(app: Any) -> int:
    """Close every Socket.IO connection of this process; returns how many there were.

    Closed at the Engine.IO level (the transport goes away), which Socket.IO clients answer
    by reconnecting, unlike a Socket.IO ``disconnect`` from the server, after which they stay away.
    """
    socketio = getattr(app, "extensions", {}).get("socketio")
    server = getattr(getattr(socketio, "server", None), "eio", None)
    if server is None:
        return 0
    clients = list(server.sockets.values())
    for client in clients:
        with contextlib.suppress(Exception):  # a socket half gone already must not stop the shutdown
            # wait=False: not blocking on the client's send queue (a slow or gone client would hold us).
            client.close(wait=False, reason=server.reason.SERVER_DISCONNECT)
    return len(clients)


def begin_shutdown(app: Any) -> None:
    """Start the graceful stop of this process's app: sockets closed, the kernel draining (idempotent)."""
    kernel = kernel_of(app)
    if kernel is None:
        return
    with _drains_lock:
        if id(kernel) in _drains or kernel.state is not KernelState.STARTED:
            return
        timeout = kernel.settings.drain_timeout
        thread = threading.Thread(target=kernel.stop, args=(timeout,), name="llama-gpu-drain", daemon=True)
        _drains[id(kernel)] = (thread, time.monotonic() + timeout)
    log.info("shutting down: draining %d running request(s) for %.0f s at most", kernel.inflight, timeout)
    thread.start()
    log.info("shutting down: closed %d Socket.IO connection(s)", close_sockets(app))


def finish_shutdown(app: Any, margin: float = 10.0) -> bool:
    """Drain and stop the app's kernel, at most ``LLAMA_GPU_DRAIN_TIMEOUT`` after the stop began.

    Returns True when every running request finished. ``margin`` bounds the plugins' own
    shutdown (the request log's last write, unloading models) after the drain.
    """
    kernel = kernel_of(app)
    if kernel is None:
        return True
    begin_shutdown(app)
    with _drains_lock:
        entry = _drains.get(id(kernel))
    if entry is not None:
        thread, deadline = entry
        thread.join(max(0.0, deadline - time.monotonic()) + margin)
    drained = kernel.inflight == 0
    if kernel.state is not KernelState.STOPPED:
        kernel.stop(timeout=0)  # the drain thread is still on it: returns at once
    return drained


def _build() -> Flask:
    from ..app import configure_logging, create_app
    from ..kernel.config import Settings

    settings = Settings.from_env()
    configure_logging(settings.log_level)
    return create_app(settings)


#: The app gunicorn serves (built when a worker imports this module).
app = _build()
