"""The web dashboard (served at ``/``) and its Socket.IO channel.

:func:`init_dashboard` is called by the app factory: it registers the page and asset
blueprint and attaches the Flask-SocketIO server, which it shares with plugins as
``kernel.services[SOCKETIO]`` (the ``socketio_bridge`` plugin emits bus events through it).
"""

from __future__ import annotations

from flask import Flask

from ..kernel.kernel import Kernel


def init_dashboard(app: Flask, kernel: Kernel) -> None:
    """Serve the dashboard and attach Socket.IO to ``app``."""
    from .socket import init_socketio
    from .views import bp

    app.register_blueprint(bp)
    init_socketio(app, kernel)
