"""The dead-letter queue: filter, select, replay one or many, purge with confirmation.

Replay is one click (it sends again under the same delivery id, which targets use to
drop duplicates); replaying every match and purging anything first show what would be
touched (a dry-run count, or the selected ids) and act only on a second, confirmed POST.
After a replay the listing follows what it sent again (``relay.dashboard.replays``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import abort, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from relay.admin.query import DeadLetterFilter
from relay.dashboard import replays
from relay.dashboard.auth import action, actor, ops, safe_next
from relay.dashboard.blueprint import dashboard
from relay.dashboard.pages import PAGE_SIZE, Params

FILTERS = ("source", "target", "since", "until", "q")
MAX_SELECTED = 500  # ids in one form post
OPS = {"replay": "replay", "purge": "admin"}  # the scope each needs, as in the API


def _filter(p: Params) -> DeadLetterFilter:
    return DeadLetterFilter(
        source=p.text("source"),
        target=p.text("target"),
        since=p.time("since"),
        until=p.time("until"),
        q=p.text("q"),
    )


def _back() -> str:
    return safe_next(request.form.get("next") or url_for("dashboard.dead_letters"))


def _listing(p: Params) -> str:
    """The dead-letter listing with the filters of ``p``."""
    values: dict[str, Any] = dict(p.values(*FILTERS))
    return url_for("dashboard.dead_letters", **values)


def _selected() -> list[str]:
    ids = list(dict.fromkeys(i.strip() for i in request.form.getlist("id") if i.strip()))
    if len(ids) > MAX_SELECTED:
        abort(400, f"Select at most {MAX_SELECTED} dead letters at once.")
    return ids


def _plural(n: int) -> str:
    return f"{n} dead letter{'' if n == 1 else 's'}"


@dashboard.get("/dead-letters")
def dead_letters() -> ResponseReturnValue:
    p = Params()
    f = _filter(p)
    cursor = p.cursor()
    page = None if p.problems else ops().dead_letters(f, limit=PAGE_SIZE, cursor=cursor)
    batch = replays.load(request.args.get(replays.PARAM))
    followed = replays.follow(batch) if batch is not None else None
    rt = ops().runtime
    html = render_template(
        "dashboard/dead_letters.html",
        page=page,
        followed=followed,
        refresh=replays.REFRESH_SECONDS if followed and not followed["settled"] else None,
        unfollow=replays.link(request.full_path, None).rstrip("?"),
        form=p.values(*FILTERS),
        problems=p.problems,
        paged=cursor is not None,
        sources=sorted(rt.config.sources),
        targets=sorted(rt.config.targets),
        here=request.full_path.rstrip("?"),
    )
    return html, 400 if p.problems else 200


@dashboard.get("/dead-letters/bulk/<op>")
def bulk_confirm(op: str) -> ResponseReturnValue:
    """What replaying or purging every match would touch: a dry-run count to confirm."""
    if op not in OPS:
        abort(404)
    p = Params()
    f = _filter(p)
    if p.problems:
        abort(400, "; ".join(p.problems))
    if op == "replay":
        count = ops().replay_matching(f, actor(), dry_run=True)["count"]
    else:
        count = ops().purge_matching(f, actor(), dry_run=True)["count"]
    return render_template(
        "dashboard/confirm.html",
        op=op,
        scope=OPS[op],
        count=count,
        described=f.describe(),
        form=p.values(*FILTERS),
        ids=[],
        back=_listing(p),
    )


@dashboard.post("/dead-letters/replay")
@action("replay", OPS["replay"])
def replay() -> ResponseReturnValue:
    if request.form.get("all") == "1":
        p = Params(request.form)
        f = _filter(p)
        if p.problems:
            abort(400, "; ".join(p.problems))
        count, replayed = ops().replay_matching_ids(f, actor())
    else:
        ids = _selected()
        if not ids:
            flash("Select at least one dead letter to replay.", "error")
            return redirect(_back())
        replayed = [i for i in ids if ops().replay(i, actor())]
        count = len(ids)
    done = len(replayed)
    flash(f"replayed {done} of {count}; {count - done} were no longer dead", "ok")
    back = _back()
    if replayed and urlsplit(back).path == url_for("dashboard.dead_letters"):
        back = replays.link(back, replays.record(count, replayed))
    return redirect(back)


@dashboard.post("/dead-letters/purge")
@action("purge", OPS["purge"])
def purge() -> ResponseReturnValue:
    every = request.form.get("all") == "1"
    p = Params(request.form)
    f = _filter(p)
    if p.problems:
        abort(400, "; ".join(p.problems))
    ids = [] if every else _selected()
    if not every and not ids:
        flash("Select at least one dead letter to purge.", "error")
        return redirect(_back())
    if request.form.get("confirm") != "1":
        count = ops().purge_matching(f, actor(), dry_run=True)["count"] if every else len(ids)
        return render_template(
            "dashboard/confirm.html",
            op="purge",
            scope=OPS["purge"],
            count=count,
            described=f.describe() if every else None,
            form=p.values(*FILTERS),
            ids=ids,
            back=_back(),
        )
    if every:
        result = ops().purge_matching(f, actor(), dry_run=False)
        count, done = result["count"], result.get("purged", 0)
    else:
        count, done = len(ids), sum(ops().purge(i, actor()) for i in ids)
    flash(f"purged {done} of {count}; {count - done} were no longer dead", "ok")
    return redirect(_listing(p) if every else _back())
