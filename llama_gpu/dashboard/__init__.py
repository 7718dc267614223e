"""The web dashboard's Socket.IO channel.

:func:`init_dashboard` is called by the app factory: it attaches the Flask-SocketIO
server, which it shares with plugins as ``kernel.services["socketio"]`` (the
``socketio_bridge`` plugin emits bus events through it).
"""

from __future__ import annotations

from flask import Flask

from ..kernel.kernel import Kernel


def init_dashboard(app: Flask, kernel: Kernel) -> None:
    """Attach Socket.IO to ``app``."""
    from .socket import init_socketio

    init_socketio(app, kernel)
