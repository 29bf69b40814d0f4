"""Login with an API key, logout, the key of each request, and guarded state changes.

A session stores the key's id, never the key; each request checks that the session is
still live in Redis and its key still active, so logging out or revoking the key ends
it at once. Every state change goes through ``action``: a valid CSRF token (else 400),
then the scope (``read`` < ``replay`` < ``admin``; else 403), both refusals audited. A
failed login comes from nobody known, so those are aggregated per address and minute
(``audit_refusal``); a logged-in key's refusals name the key and are written each.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

from flask import (
    abort,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.sessions import SessionMixin
from flask.typing import ResponseReturnValue
from werkzeug.wrappers import Response

from relay.admin.ops import Actor, Ops
from relay.dashboard import csrf
from relay.dashboard import session as sessions
from relay.dashboard.blueprint import dashboard
from relay.state.apikeys import ApiKey, ApiKeys, UnknownKey, allows
from relay.state.audit import AuditLog

F = TypeVar("F", bound=Callable[..., ResponseReturnValue])
_CLAIMED_ID = re.compile(r"^rk_([0-9a-f]{12})_[A-Za-z0-9_-]{43}$")
MAX_TOKEN = 200


def ops() -> Ops:
    found = g.get("_dashboard_ops")
    if found is None:
        found = g._dashboard_ops = Ops(sessions.runtime())
    return cast(Ops, found)


def key() -> ApiKey:
    """The logged-in key of this request (every non-public view has one)."""
    return cast(ApiKey, g.dashboard_key)


def actor() -> Actor:
    return Actor(key().id, request.remote_addr)


def audit(action: str, *, actor: str, outcome: str, target: str = "", detail: str = "") -> None:
    AuditLog(sessions.runtime().redis).record(
        action,
        actor=actor,
        target=target,
        outcome=outcome,
        remote_addr=request.remote_addr,
        detail=detail,
    )


def audit_refusal(
    action: str, *, actor: str, outcome: str, target: str = "", detail: str = ""
) -> None:
    """A refusal of someone not logged in: aggregated per address and minute, so a flood
    of them (a script guessing keys at the login form) cannot rotate the audit log."""
    AuditLog(sessions.runtime().redis).record_failure(
        action,
        actor=actor,
        target=target,
        outcome=outcome,
        remote_addr=request.remote_addr,
        detail=detail,
    )


def can(needed: str) -> bool:
    """Whether the logged-in key's scope allows ``needed`` (templates hide buttons)."""
    found = g.get("dashboard_key")
    return found is not None and allows(found.scope, needed)


def current_key(state: SessionMixin) -> ApiKey | None:
    """The active key of a live session, else None (and the session is forgotten)."""
    sid, key_id = state.get("sid"), state.get("key")
    if not isinstance(sid, str) or not isinstance(key_id, str):
        return None
    found: ApiKey | None = None
    if sessions.key_of(sid) == key_id:
        try:
            found = ApiKeys(sessions.runtime().redis).get(key_id)
        except UnknownKey:
            found = None
    if found is None or not found.active:
        sessions.end(sid)
        state.clear()
        return None
    return found


@dashboard.before_request
def _require_login() -> ResponseReturnValue | None:
    if request.endpoint == "dashboard.static":
        return None
    sessions.secret_key(sessions.runtime())  # a RedisError here answers 503
    if current_app.session_interface.is_null_session(session):
        abort(503, "Redis was unreachable when this request began; try again.")
    if request.endpoint == "dashboard.login":
        return None
    found = current_key(session)
    if found is None:
        if request.method in ("GET", "HEAD"):
            return redirect(url_for("dashboard.login", next=request.full_path.rstrip("?")))
        abort(401, "Your session has ended; log in again.")
    g.dashboard_key = found
    return None


@dashboard.context_processor
def _who() -> dict[str, Any]:
    return {"current_key": g.get("dashboard_key"), "can": can}


def action(name: str, needed: str) -> Callable[[F], F]:
    """Guard a POST view: CSRF token, then scope; refusals are audited and change nothing."""

    def decorate(view: F) -> F:
        @wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> ResponseReturnValue:
            who = key()
            where = f"{request.method} {request.path}"
            if not csrf.valid():
                audit("csrf.failed", actor=who.id, outcome="denied", target=where, detail=name)
                abort(400, "The form's CSRF token is missing, wrong or expired; reload the page.")
            if not allows(who.scope, needed):
                why = f"dashboard {name}: needs {needed}, has {who.scope}"
                audit("auth.denied", actor=who.id, outcome="denied", target=where, detail=why)
                abort(403, f"This needs a key with the {needed} scope; yours has {who.scope}.")
            return view(*args, **kwargs)

        return cast(F, guarded)

    return decorate


def safe_next(value: str | None) -> str:
    """Where to go after login: a dashboard path of this site, else the overview."""
    home = url_for("dashboard.overview")
    if not value:
        return home
    parts = urlsplit(value)
    prefix = request.script_root + sessions.PREFIX
    if parts.scheme or parts.netloc or "\\" in value or not parts.path.startswith(prefix):
        return home
    return value


@dashboard.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    target = safe_next(request.values.get("next"))
    if request.method == "GET":
        if current_key(session) is not None:
            return redirect(target)
        return render_template("dashboard/login.html", next=target)
    if not csrf.valid():
        why = "dashboard: missing or bad CSRF token"
        audit_refusal("login", actor="-", outcome="failed", detail=why)
        error = "The form expired; please try again."
        return render_template("dashboard/login.html", next=target, error=error), 400
    token = request.form.get("key", "").strip()
    found = ApiKeys(sessions.runtime().redis).verify(token) if len(token) <= MAX_TOKEN else None
    if found is None:
        claimed = _CLAIMED_ID.match(token)
        audit_refusal(
            "login",
            actor=claimed.group(1) if claimed else "-",
            outcome="failed",
            detail="dashboard: " + ("unknown, revoked or wrong key" if claimed else "not a key"),
        )
        error = "That key is unknown, revoked or wrong."
        return render_template("dashboard/login.html", next=target, error=error), 401
    session.clear()  # a new session id at login: a planted one is worthless
    sid = sessions.new_id()
    sessions.start(sid, found.id)
    session["sid"], session["key"] = sid, found.id
    audit("login", actor=found.id, outcome="ok", detail=f"dashboard, scope {found.scope}")
    return redirect(target)


@dashboard.post("/logout")
def logout() -> Response:
    who = key()
    if not csrf.valid():
        audit("csrf.failed", actor=who.id, outcome="denied", target="POST logout", detail="logout")
        abort(400, "The form's CSRF token is missing, wrong or expired; reload the page.")
    sessions.end(str(session.get("sid")))
    session.clear()
    audit("logout", actor=who.id, outcome="ok", detail="dashboard")
    flash("You are logged out.", "ok")
    return redirect(url_for("dashboard.login"))
