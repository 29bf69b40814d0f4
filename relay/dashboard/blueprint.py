"""The dashboard blueprint: its hooks, error pages, response headers and template helpers.

Routes live in ``auth`` (login, logout), ``pages`` (overview, events, one event, one
delivery), ``deadletters`` (filter, replay, purge) and ``targets`` (targets, audit log);
each registers on ``dashboard`` here.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any, cast

import redis
import structlog
from flask import Blueprint, Flask, Response, render_template, request
from flask.blueprints import BlueprintSetupState
from markupsafe import escape
from werkzeug.exceptions import HTTPException

from relay.dashboard import csrf
from relay.dashboard.session import PREFIX, DashboardSessionInterface, runtime
from relay.redact import MASK

log = structlog.get_logger("relay.dashboard")

dashboard = Blueprint(
    "dashboard",
    __name__,
    url_prefix=PREFIX,
    template_folder="templates",
    static_folder="static",
)

# Scripts, styles and images only from the dashboard itself: no inline script, no CDN.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
MIN_GUARDED_SECRET = 8  # shorter "secrets" (ports, flags) would mangle pages if masked


@dashboard.record_once
def _install(state: BlueprintSetupState) -> None:
    """Sessions for ``/dashboard`` only (see ``relay.dashboard.session``)."""
    cast(Flask, state.app).session_interface = DashboardSessionInterface()


@dashboard.context_processor
def _helpers() -> dict[str, Any]:
    return {"csrf_token": csrf.token, "csrf_field": csrf.FIELD}


@dashboard.after_request
def _headers(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"
    if request.endpoint != "dashboard.static":
        response.headers["Cache-Control"] = "no-store"
    return _mask_secrets(response)


def _mask_secrets(response: Response) -> Response:
    """The last line of defence: every value shown is redacted where it is read
    (``relay.admin.ops``), but should one slip through, the page masks it and says so in
    the log (by path, never the value)."""
    if response.mimetype != "text/html" or response.direct_passthrough or response.is_streamed:
        return response
    rt = runtime()
    guarded = {s for s in rt.config.secrets if len(s) >= MIN_GUARDED_SECRET}
    if rt.settings.secret_key:
        guarded.add(rt.settings.secret_key)
    if not guarded:
        return response
    body = response.get_data(as_text=True)
    masked = body
    for secret in sorted(guarded, key=len, reverse=True):
        for form in {secret, str(escape(secret))}:
            masked = masked.replace(form, MASK)
    if masked != body:
        log.warning("dashboard.secret_masked", path=request.path)
        response.set_data(masked)
    return response


@dashboard.errorhandler(HTTPException)
def _http_error(error: HTTPException) -> tuple[str, int]:
    status = error.code or 500
    page = render_template(
        "dashboard/error.html", status=status, title=error.name, detail=error.description
    )
    return page, status


@dashboard.errorhandler(redis.RedisError)
def _redis_down(error: redis.RedisError) -> tuple[str, int, dict[str, str]]:
    log.warning("dashboard.redis_error", error=type(error).__name__)
    page = render_template(
        "dashboard/error.html",
        status=503,
        title="Redis is unreachable",
        detail="The dashboard reads everything from Redis; try again in a few seconds.",
        bare=True,
    )
    return page, 503, {"Retry-After": "5"}


# template filters ---------------------------------------------------------------------
@dashboard.app_template_filter("dash_time")
def _time(value: Any) -> str:
    """Unix seconds as UTC ``2024-06-10 08:00:00Z`` (``-`` when unknown)."""
    if value in (None, ""):
        return "-"
    try:
        when = datetime.fromtimestamp(float(value), UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return "-"
    return when.strftime("%Y-%m-%d %H:%M:%SZ")


@dashboard.app_template_filter("dash_ago")
def _ago(value: Any) -> str:
    """How long ago (or from now) Unix seconds ``value`` is: ``5s ago``, ``in 2m``."""
    if value in (None, ""):
        return ""
    try:
        delta = time.time() - float(value)
    except (TypeError, ValueError):
        return ""
    span = abs(delta)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if span >= size:
            text = f"{int(span // size)}{unit}"
            break
    else:
        text = f"{int(span)}s"
    return f"{text} ago" if delta >= 0 else f"in {text}"


@dashboard.app_template_filter("dash_ms")
def _ms(value: Any) -> str:
    if value is None:
        return "-"
    number = float(value)
    return f"{number / 1000:.2f} s" if number >= 1000 else f"{number:.0f} ms"


@dashboard.app_template_filter("dash_pct")
def _pct(value: Any) -> str:
    return "-" if value is None else f"{float(value) * 100:.1f}%"


@dashboard.app_template_filter("dash_json")
def _json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)
