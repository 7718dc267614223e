"""The Flask app factory: the core API's blueprints, the plugins' routes and the dashboard on one kernel.

Importing this module does nothing global: no logging set-up, no app, no kernel. The
entry points (``llama-gpu serve``, the WSGI module) call :func:`configure_logging` themselves.
``api/`` and ``dashboard/`` are siblings that meet only here.
"""

from __future__ import annotations

import atexit
import logging
import math
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response, g
from werkzeug.middleware.proxy_fix import ProxyFix

from .api.context import EXTENSION, STREAMS, assign_request_id, get_kernel, release_stream
from .api.errors import register_error_handlers
from .api.jsonlimits import LimitedJSONProvider
from .api.local_only import LocalOnly
from .kernel.config import Settings
from .kernel.kernel import Kernel, KernelState
from .kernel.streams import StreamLimiter

API_VERSION = "1.0"


def create_app(config: Settings | Mapping[str, Any] | None = None, kernel: Kernel | None = None) -> Flask:
    """Build the app around a started kernel (created from ``config`` when not given).

    ``config`` is :class:`Settings` or a mapping of setting names to values applied
    over the ``LLAMA_GPU_*`` environment. The kernel is kept in
    ``app.extensions["llama_gpu"]``; stop it with ``app.extensions["llama_gpu"].stop()``.
    """
    if kernel is None:
        settings = config if isinstance(config, Settings) else Settings.from_env(**dict(config or {}))
        kernel = Kernel(settings)
    if kernel.state is KernelState.CREATED:
        kernel.start()

    app = Flask("llama_gpu.api")
    app.json = LimitedJSONProvider(app)
    app.config["MAX_CONTENT_LENGTH"] = kernel.settings.max_body_size
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions[EXTENSION] = kernel
    settings = kernel.settings
    app.extensions[STREAMS] = StreamLimiter(
        settings.max_streams_per_identity, settings.max_streams_per_address, settings.max_streams
    )
    app.teardown_request(release_stream)

    from .api import health, infer, models, openai, openapi, plugins
    from .dashboard import init_dashboard

    blueprints = (
        health.bp,
        plugins.bp,
        models.bp,
        infer.bp,
        infer.aliases_bp,
        openai.bp,
        openapi.bp,
    )  # the plugins' routes (auth, monitoring, jobs, third-party) come from register_routes
    for blueprint in (*blueprints, *kernel.routes()):
        app.register_blueprint(blueprint)
    register_error_handlers(app)
    init_dashboard(app, kernel)
    app.before_request(assign_request_id)

    @app.after_request
    def _headers(response: Response) -> Response:
        response.headers["X-Request-ID"] = g.get("request_id", "")
        response.headers["X-API-Version"] = API_VERSION
        limit = g.get("rate_limit")
        if limit is not None:
            response.headers["X-RateLimit-Limit"] = str(limit.limit)
            response.headers["X-RateLimit-Remaining"] = str(limit.remaining)
            response.headers["X-RateLimit-Reset"] = str(math.ceil(limit.reset))
        return response

    open_server = kernel.settings.auth == "off"
    if open_server or kernel.settings.trusted_hosts:
        # auth off: every caller is an admin, so only this machine's pages may call; with trusted
        # hosts, other Host headers get 400 (DNS rebinding, poisoned absolute URLs)
        guard = LocalOnly(app.wsgi_app, kernel.settings.trusted_hosts, open_server)
        app.wsgi_app = guard  # type: ignore[method-assign]

    hops = kernel.settings.trusted_proxies
    if hops > 0:  # the client address comes from X-Forwarded-For, as far as the trusted proxies vouch for it
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)  # type: ignore[method-assign]

    return app


def configure_logging(level: str) -> None:
    """Log to stderr at ``level`` (``LLAMA_GPU_LOG_LEVEL``); for entry points, never at import."""
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def stop_on_exit(app: Flask) -> None:
    """Drain and stop the app's kernel when the process exits."""
    with app.app_context():
        kernel = get_kernel()
    atexit.register(kernel.stop)
