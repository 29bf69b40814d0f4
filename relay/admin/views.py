"""How the operations layer shows records: typed, capped and with secrets redacted.

Redis holds strings; these functions turn an event, delivery or attempt record into
the JSON the API and the dashboard show, never failing on a malformed field (a record
written by an older version, a hand-edited key) and never showing a configured secret.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from relay.config.models import RouteMode
from relay.redact import hide_reply_urls, hide_url, redact
from relay.state.lifecycle import PUBLIC_FIELDS, DeliveryRecord, Kind, integer, number

TEXT_PREVIEW = 500  # characters of an event's text in a listing
RESPONSE_CAP = 2048  # characters of a target's answer shown per attempt


# The target kinds' own default rate limits (``default_rate_limits`` of the adapters in
# ``workers.targets``), so the web process can show a target's rate windows without
# loading target code; tests/api/test_targets.py checks this table against the adapters.
class Redactor:
    """Replaces every configured secret (and URL passwords, token-like query values).

    Reply URLs (an event's ``reply``, DingTalk's ``sessionWebhook``, Slack's
    ``response_url``) let their holder post into the group as the bot, so they are cut to
    their host unless ``reveal_replies`` (an admin's view); workers read the stored event.
    """

    def __init__(self, secrets: Iterable[str], *, reveal_replies: bool = False) -> None:
        self.secrets = tuple(sorted(secrets, key=len, reverse=True))
        self.reveal_replies = reveal_replies

    def text(self, value: str | None) -> str | None:
        return redact(value, self.secrets, reply_urls=not self.reveal_replies)

    def event(self, event: dict[str, Any]) -> dict[str, Any]:
        """A whole event (its ``reply`` and ``raw`` included) as this reader may see it."""
        if not self.reveal_replies:
            event = hide_reply_urls(event)
            reply = event.get("reply")
            if isinstance(reply, dict) and isinstance(reply.get("url"), str):
                event["reply"] = {**reply, "url": hide_url(reply["url"])}
        return dict(self.deep(event))

    def deep(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.text(str(k)): self.deep(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.deep(v) for v in value]
        return value


def _text(value: Any, redactor: Redactor, cap: int | None = None) -> str | None:
    if value is None or value == "":
        return None
    shown = redactor.text(str(value)) or ""
    return shown[:cap] + "…" if cap is not None and len(shown) > cap else shown


def _party(value: Any, redactor: Redactor) -> dict[str, Any] | None:
    if not isinstance(value, dict) or not isinstance(value.get("id"), str):
        return None
    name = value.get("name")
    return {"id": redactor.text(value["id"]), "name": _text(name, redactor)}


def event_summary(
    event_id: str, event: dict[str, Any], record: dict[str, str], redactor: Redactor
) -> dict[str, Any]:
    """One line of the event listing."""
    files = event.get("files")
    return {
        "id": event_id,
        "source": str(event.get("source") or ""),
        "type": str(event.get("type") or ""),
        "status": record.get("status") or "unknown",
        "received_at": number(record.get("received_at")),
        "occurred_at": _text(event.get("occurred_at"), redactor),
        "group": _party(event.get("group"), redactor),
        "sender": _party(event.get("sender"), redactor),
        "text": _text(event.get("text"), redactor, TEXT_PREVIEW),
        "files": len(files) if isinstance(files, list) else 0,
    }


def _shown(kind: Kind, value: Any, redactor: Redactor) -> Any:
    """One public field of a delivery as the API shows it (``relay.api.models.Delivery``
    has the same types): names and counts are never null, text is redacted."""
    if kind is Kind.NAME:
        return value or ""
    if kind is Kind.COUNT:
        return value or 0
    if kind is Kind.STATUS:
        return str(value) if value is not None else "unknown"
    if kind is Kind.TEXT:
        return _text(value, redactor)
    if kind is Kind.REASON:
        return value or None
    if kind is Kind.MODE:
        return str(value) if value is not None else RouteMode.LIVE.value
    return value  # INDEX, TIME: a number or null


def delivery_view(d: DeliveryRecord, redactor: Redactor) -> dict[str, Any]:
    """A delivery record's public fields (not the event copy a dead letter keeps)."""
    return {name: _shown(kind, getattr(d, name), redactor) for name, kind, _ in PUBLIC_FIELDS}


def captured_view(d: DeliveryRecord, redactor: Redactor) -> list[dict[str, Any]] | None:
    """What a shadow delivery's last attempt would have sent (redacted when captured,
    and again here); ``None`` for a delivery that sends for real."""
    if d.mode is not RouteMode.SHADOW:
        return None
    try:
        found = json.loads(d.captured) if d.captured else []
    except ValueError:
        found = []
    requests = []
    for r in found if isinstance(found, list) else []:
        if not isinstance(r, dict):
            continue
        headers = r.get("headers")
        requests.append(
            {
                "method": str(r.get("method") or ""),
                "url": _text(r.get("url"), redactor) or "",
                "headers": redactor.deep(headers) if isinstance(headers, dict) else {},
                "body": _text(r.get("body"), redactor),
                "size": integer(r.get("size")) or 0,
                "truncated": r.get("truncated") is True,
            }
        )
    return requests


def attempt_view(
    attempt: dict[str, Any], d: DeliveryRecord, kind: str | None, redactor: Redactor
) -> dict[str, Any]:
    """One attempt: outcome, HTTP status, duration, what was sent (a summary) and a
    capped excerpt of the answer."""
    request: dict[str, Any] = {
        "target": d.target or "",
        "kind": kind,
        "idempotency_key": d.id or "",
    }
    if isinstance(attempt.get("request"), dict):
        request.update(redactor.deep(attempt["request"]))
    return {
        "n": integer(attempt.get("n")) or 0,
        "started_at": number(attempt.get("started_at")),
        "duration_ms": number(attempt.get("duration_ms")),
        "outcome": str(attempt.get("outcome") or "unknown"),
        "status": integer(attempt.get("status")),
        "retry_after": number(attempt.get("retry_after")),
        "error": _text(attempt.get("error"), redactor),
        "response": _text(attempt.get("response"), redactor, RESPONSE_CAP),
        "request": request,
        "order_break": order_break_view(attempt.get("order_break")),
    }


def order_break_view(value: Any) -> dict[str, Any] | None:
    """An ordered delivery that went ahead of an earlier one of its group: why, and which
    one it passed (``docs/ordering.md``)."""
    if not isinstance(value, dict) or not isinstance(value.get("reason"), str):
        return None
    skipped = value.get("skipped")
    return {
        "reason": value["reason"],
        "skipped": skipped if isinstance(skipped, str) else None,
        "held_s": number(value.get("held_s")),
    }
