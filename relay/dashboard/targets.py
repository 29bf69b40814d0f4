"""Targets (breaker, throttle and rate-limit state; pause, resume, reset) and the audit log."""

from __future__ import annotations

import re

from flask import abort, flash, redirect, render_template, url_for
from flask.typing import ResponseReturnValue

from relay.dashboard.auth import action, actor, audit, can, key, ops
from relay.dashboard.blueprint import dashboard
from relay.dashboard.pages import PAGE_SIZE, Params

_AUDIT_CURSOR = re.compile(r"^[0-9]{1,20}-[0-9]{1,20}$")
TARGET_SCOPE = "admin"  # pause, resume and reset, as in the API
AUDIT_SCOPE = "admin"  # the audit log shows who did what from where, as in the API


@dashboard.get("/targets")
def targets() -> ResponseReturnValue:
    return render_template("dashboard/targets.html", targets=ops().targets())


def _target_action(name: str, done: str) -> None:
    @action(name, TARGET_SCOPE)
    def view(target_id: str) -> ResponseReturnValue:
        o = ops()
        if name == "reset":
            found = o.reset(target_id, actor())
        else:
            found = o.set_paused(target_id, name == "pause", actor())
        if found is None:
            abort(404, f"No target {target_id!r} is configured.")
        flash(f"{target_id}: {done}", "ok")
        return redirect(url_for("dashboard.targets"))

    view.__name__ = f"target_{name}"
    dashboard.add_url_rule(f"/targets/<target_id>/{name}", view_func=view, methods=["POST"])


_target_action("pause", "paused; its deliveries wait, nothing is lost")
_target_action("resume", "resumed")
_target_action("reset", "breaker closed, failure counts and throttle cleared")


@dashboard.get("/audit")
def audit_log() -> ResponseReturnValue:
    if not can(AUDIT_SCOPE):
        who = key()
        why = f"dashboard audit log: needs {AUDIT_SCOPE}, has {who.scope}"
        audit("auth.denied", actor=who.id, outcome="denied", target="GET /audit", detail=why)
        abort(403, f"The audit log needs a key with the {AUDIT_SCOPE} scope.")
    p = Params()
    action_name, actor_id, cursor = p.text("action"), p.text("actor"), p.text("cursor")
    if cursor is not None and not _AUDIT_CURSOR.match(cursor):
        p.problems.append("cursor: not a position this page gave")
    page = None
    if not p.problems:
        page = ops().audit(limit=PAGE_SIZE, cursor=cursor, action=action_name, actor=actor_id)
    html = render_template(
        "dashboard/audit.html",
        page=page,
        form=p.values("action", "actor"),
        problems=p.problems,
        paged=cursor is not None,
    )
    return html, 400 if p.problems else 200
