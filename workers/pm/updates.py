"""Two-way sync: a change made in the tool is told in the thread the task came from.

A project-management source (``jira``, ``github``, ...) turns the tool's webhook into
a ``task.*`` event. At fan-out, each project-management target of that tool is asked
whether the relay created the task (its task link by key or id, and the same URL);
if so, and the change is not the relay's own (the source saw its marker or account,
or the target counted the action in ``Echoes`` before making it), one delivery to the
target's ``updates`` target tells it as a reply in the task's thread. Changes of one
task that arrive before that delivery runs (it waits ``coalesce`` seconds, parked
without spending an attempt) join it, so a burst of edits is one message.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

import structlog

from relay.events import GroupEvent, TaskChange
from relay.state import keys
from relay.state.lifecycle import DeliveryRecord
from relay.state.tasks import Bursts, Echoes, TaskLinks
from workers.context import WorkerContext
from workers.pm.flow import PmTarget
from workers.routing import delivery_id as make_delivery_id

log = structlog.get_logger("relay.delivery")

UPDATES_ROUTE = -2  # the route index of update deliveries: no route of the config made them
BURST_MARGIN = 3600.0  # an open burst outlives its window by this much if its delivery waits
ACTIONS = {
    "task.created": "created",
    "task.updated": "updated",
    "task.closed": "closed",
    "task.reopened": "reopened",
    "task.commented": "commented",
    "task.assigned": "assigned",
}
MAX_COMMENTS = 3  # comments told per message; more are counted

DEFAULT_TEMPLATE = """\
{% set zh = language == "zh" %}\
{% for u in updates %}{% if not loop.first %}{{ "\n" }}{% endif %}\
{% set who = u.actor or ("有人" if zh else "someone") %}\
{% if u.action == "closed" %}\
{{ u.key }} {{ "已由 " ~ who ~ " 关闭" if zh else "closed by " ~ who }}\
{% elif u.action == "reopened" %}\
{{ u.key }} {{ "已由 " ~ who ~ " 重新打开" if zh else "reopened by " ~ who }}\
{% elif u.action == "assigned" %}\
{% set to = u.assignees | join(", ") or ("无人" if zh else "nobody") %}\
{{ u.key }} {{ "已由 " ~ who ~ " 指派给 " ~ to if zh else "assigned to " ~ to ~ " by " ~ who }}\
{% elif u.action == "commented" %}\
{{ who }} {{ "评论了 " ~ u.key if zh else "commented on " ~ u.key }}\
{% if u.comment %}{{ "：" if zh else ": " }}{{ u.comment }}{% endif %}\
{% else %}\
{{ u.key }} {{ "已由 " ~ who ~ " 更新" if zh else "updated by " ~ who }}\
{% if u.fields %} ({{ u.fields | join(", ") }}){% endif %}\
{% endif %}\
{% if u.status and u.action in ("closed", "reopened", "updated") %} [{{ u.status }}]{% endif %}\
{% endfor %}{% if task.url %}{{ "\n" }}{{ task.url }}{% endif %}"""


def plan(ctx: WorkerContext, event: GroupEvent, now: float) -> list[tuple[dict[str, str], str]]:
    """The update deliveries a ``task.*`` event starts: at most one per target of its
    tool that created the task (none for an echo or a change that joined a burst)."""
    change = event.task
    action = ACTIONS.get(event.type)
    if change is None or action is None or ctx.store.redis is None:
        return []
    redis = ctx.store.redis
    retention = ctx.settings.retention
    links = TaskLinks(redis, retention=retention, link_retention=ctx.settings.task_link_retention)
    batch: list[tuple[dict[str, str], str]] = []
    for target_id, target in ctx.targets.items():
        if not isinstance(target, PmTarget) or target.kind != change.tool:
            continue
        origin = _origin(links, target_id, change)
        if origin is None:
            continue
        task_key = str(origin.get("task_key") or change.key)
        bound = log.bind(event_id=event.id, target=target_id, task=task_key, action=action)
        links.link(
            target_id=target_id,
            task=_task(change, task_key),
            event_id=event.id,
            source_id=event.source,
            group_id=None,
            message_id=None,
            created=False,
        )
        updates = target.options.updates
        echo_window = updates.echo_window if updates else 600.0
        echoes = Echoes(redis, ttl=echo_window)
        counted = any(echoes.consume(target_id, task_key, a) for a in _echo_actions(action, change))
        if change.by_relay or counted or action == "created":
            bound.info("task_update.echo", marked=change.by_relay, counted=counted)
            continue
        notify = target.options.updates_target()
        if updates is None or notify is None or action not in updates.on:
            bound.info("task_update.not_told", updates_target=notify)
            continue
        notify_target = ctx.targets.get(notify)
        if notify_target is None:
            bound.warning("task_update.unknown_target", updates_target=notify)
            continue
        delivery_id = make_delivery_id(event.id, UPDATES_ROUTE, f"{target_id}>{notify}")
        told = _told(change, action, task_key, event)
        leader = Bursts(redis, retention=retention).join(
            target_id,
            task_key,
            delivery_id,
            event.id,
            json.dumps(told),
            ttl=updates.coalesce + BURST_MARGIN,
        )
        if leader != delivery_id:
            bound.info("task_update.joined", delivery_id=leader)
            pipe = redis.pipeline(transaction=True)
            pipe.sadd(keys.event_deliveries(event.id), leader)
            pipe.expire(keys.event_deliveries(event.id), int(retention))
            pipe.execute()
            continue
        variables = {
            "thread": _thread(ctx, origin),
            "language": origin.get("language") or "en",
            "burst": {"target": target_id, "key": task_key, "until": now + updates.coalesce},
        }
        queue = keys.deliver_queue(notify_target.family)
        record = DeliveryRecord.new(
            id=delivery_id,
            event_id=event.id,
            source=event.source,
            target=notify,
            route=UPDATES_ROUTE,
            queue=queue,
            now=now,
            vars=json.dumps({"vars": variables, "template": updates.template or DEFAULT_TEMPLATE}),
        )
        batch.append((record.to_fields(), queue))
    return batch


def waiting(variables: Mapping[str, Any], now: float | None = None) -> float:
    """Seconds a gathering delivery still waits for more changes (0 when due)."""
    burst = variables.get("burst")
    if not isinstance(burst, Mapping):
        return 0.0
    until = burst.get("until")
    if not isinstance(until, int | float):
        return 0.0
    return max(0.0, float(until) - (time.time() if now is None else now))


def gathered(ctx: WorkerContext, delivery_id: str, variables: Mapping[str, Any]) -> dict[str, Any]:
    """What a gathering delivery tells, for its template: ``updates`` (the changes,
    summarised) and ``task`` (the latest view of the task). It closes the burst, so
    changes arriving from now on start the next message."""
    burst = variables.get("burst")
    if not isinstance(burst, Mapping) or ctx.store.redis is None:
        return {}
    changes = Bursts(ctx.store.redis, retention=ctx.settings.retention).close(
        str(burst.get("target")), str(burst.get("key")), delivery_id
    )
    told = [c for c in changes if isinstance(c, dict)]
    task = dict(told[-1]) if told else {"key": burst.get("key")}
    return {"updates": summarise(told), "task": task}


def summarise(changes: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One line per kind of change: the last close or reopen, the last assignment,
    every field touched, the first comments (and how many more)."""
    lines: dict[str, dict[str, Any]] = {}
    comments: list[dict[str, Any]] = []
    for change in changes:
        action = str(change.get("action"))
        if action == "commented":
            comments.append(dict(change))
            continue
        if action in ("closed", "reopened"):
            lines.pop("closed", None)
            lines.pop("reopened", None)
        if action == "updated" and "updated" in lines:
            fields = lines["updated"]["fields"] + list(change.get("fields") or [])
            lines["updated"] = {**change, "fields": list(dict.fromkeys(fields))}
            continue
        lines[action] = dict(change)
    told = sorted(lines.values(), key=lambda c: (str(c.get("at", "")), str(c.get("event_id"))))
    told += comments[:MAX_COMMENTS]
    if len(comments) > MAX_COMMENTS:
        more = len(comments) - MAX_COMMENTS
        last = comments[-1]
        told.append({**last, "action": "updated", "fields": [f"{more} more comments"]})
    return told


def _echo_actions(action: str, change: TaskChange) -> list[str]:
    """The relay's own actions this change could be the report of. Some tools tell a
    status or member change only as an update (Feishu's Task v2 events say *that* the
    status changed, not to what; DingTalk's to-do events not even that, and a comment
    there is a change of the description), so such an update may be any of the
    relay's own changes."""
    actions = [action]
    if action == "updated" and not change.changes:  # the tool does not say what changed
        return [action, "closed", "reopened", "assigned", "commented"]
    if action == "updated":
        if "status" in change.changes:
            actions += ["closed", "reopened"]
        if {"assignee", "assignees", "members", "collaborators"} & set(change.changes):
            actions.append("assigned")
    return actions


def _origin(links: TaskLinks, target_id: str, change: TaskChange) -> dict[str, Any] | None:
    """The task's chat message, if this target created it (by key, then by id; a URL
    that differs means another task of the same key on another site or repository)."""
    for name in dict.fromkeys(n for n in (change.key, change.id) if n):
        origin = links.origin(target_id, name)
        if origin is None:
            continue
        recorded = origin.get("task_url")
        if change.url and recorded and _same_url(change.url, str(recorded)) is False:
            continue
        return origin
    return None


def _same_url(a: str, b: str) -> bool:
    return a.rstrip("/").lower() == b.rstrip("/").lower()


def _thread(ctx: WorkerContext, origin: Mapping[str, Any]) -> dict[str, Any]:
    """How a reply reaches the task's chat message (``workers.targets.base.Thread``)."""
    source = ctx.config.sources.get(str(origin.get("source") or ""))
    return {
        "source_kind": source.kind if source else origin.get("source_kind"),
        "group": origin.get("group"),
        "message_id": origin.get("message_id"),
        "root": origin.get("root"),
        "reply": origin.get("reply"),
    }


def _task(change: TaskChange, task_key: str) -> dict[str, Any]:
    return {
        "key": task_key,
        "id": change.id or task_key,
        "url": change.url,
        "title": change.title,
        "status": change.status,
    }


def _told(change: TaskChange, action: str, task_key: str, event: GroupEvent) -> dict[str, Any]:
    """One change as the update template sees it: names, not ids, where known."""

    def name(party: Any) -> str:
        return str(party.name or party.id)

    return {
        "action": action,
        "key": task_key,
        "url": change.url,
        "title": change.title,
        "status": change.status,
        "actor": name(change.actor) if change.actor else None,
        "assignees": [name(p) for p in change.assignees],
        "comment": (change.comment or "").strip()[:1000] or None,
        "fields": list(change.changes),
        "at": event.occurred_at.isoformat(),
        "event_id": event.id,
    }
