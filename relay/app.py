"""The web application: the intake route in front of Flask's API, dashboard, health and metrics."""

from __future__ import annotations

import json

from flask import Flask, Response, redirect, url_for
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException

from relay.config.models import RelayConfig
from relay.settings import Settings

__all__ = ["create_app"]


def create_app(settings: Settings | None = None, config: RelayConfig | None = None) -> Flask:
    """Build the web app; reads ``RELAY_*`` and the config file only when not given them."""
    from relay.api import api
    from relay.context import WebContext
    from relay.dashboard import dashboard
    from relay.health import health
    from relay.intake.route import IntakeRoute
    from relay.logging import configure_logging
    from relay.metrics import metrics

    settings = settings or Settings()
    configure_logging(settings)
    runtime = WebContext.build(settings, config)
    app = Flask(__name__)
    app.config.update(MAX_CONTENT_LENGTH=settings.max_body, RELAY_SETTINGS=settings)
    app.extensions["relay"] = runtime
    app.register_blueprint(health)
    app.register_blueprint(dashboard)
    app.register_blueprint(api)
    app.register_blueprint(metrics)

    @app.get("/")
    def _landing() -> ResponseReturnValue:
        """A browser pointed at the relay lands on the dashboard, not on a JSON 404."""
        return redirect(url_for("dashboard.overview"))

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> Response:
        code = (error.name or "error").lower().replace(" ", "_")
        status = error.code or 500
        if status == 413:
            code = "payload_too_large"
        body = json.dumps({"error": code, "detail": error.description or error.name})
        response = Response(body, status=status, content_type="application/json")
        for name, value in error.get_headers():  # keep Allow on 405, Retry-After, ...
            if name.lower() != "content-type":
                response.headers[name] = value
        return response

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Response:
        app.logger.exception("unexpected error")
        body = json.dumps({"error": "internal_error", "detail": "the relay failed; see its log"})
        return Response(body, status=500, content_type="application/json")

    app.wsgi_app = IntakeRoute(app.wsgi_app, runtime.intake)  # type: ignore[method-assign]
    return app
