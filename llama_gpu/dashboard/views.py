"""The dashboard's page and assets: a single-page app at ``/``, its files under ``/dashboard/static/``.

Every asset ships in the package (``static/`` and the vendored ``static/vendor/``), so the
dashboard works on machines without internet. The page itself is public (it is the login
form); everything it shows comes from the API and the Socket.IO channel, which check the
caller's token.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, make_response, render_template

from .. import __version__
from ..api.routing import route

bp = Blueprint(
    "dashboard",
    __name__,
    static_folder="static",
    template_folder="templates",
    static_url_path="/dashboard/static",
)

#: Only the server's own scripts, styles and sockets; nothing from elsewhere.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


@route(
    bp,
    "/",
    permission=None,
    rate_limit=None,
    summary="The web dashboard (it logs in and calls this API)",
    content="html",
)
def index() -> Response:
    """The dashboard page (login, then the app; routes are URL fragments)."""
    kernel = current_app.extensions["llama_gpu"]
    auth = "off" if kernel.settings.auth == "off" else "required"  # off: no login form, the API is open
    response = make_response(render_template("dashboard.html", version=__version__, auth=auth))
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "no-store"
    return response
