"""How the operations layer shows records: typed, capped and with secrets redacted.

Redis holds strings; these functions turn an event, delivery or attempt record into
the JSON the API and the dashboard show, never failing on a malformed field (a record
written by an older version, a hand-edited key) and never showing a configured secret.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from relay.config.models import TargetConfig
from relay.config.rates import Rate, parse_rates
from relay.redact import redact

TEXT_PREVIEW = 500  # characters of an event's text in a listing
RESPONSE_CAP = 2048  # characters of a target's answer shown per attempt

# The target kinds' own default rate limits (``default_rate_limits`` of the adapters in
# ``workers.targets``), so the web process can show a target's rate windows without
# loading target code; tests/api/test_targets.py checks this table against the adapters.
KIND_DEFAULT_RATES: dict[str, tuple[str, ...]] = {
    "dingtalk_robot": ("20/min",),
    "dingtalk_app": ("20/min",),
    "wecom_bot": ("20/min",),
    "feishu_bot": ("100/min", "5/s"),
    "slack": ("1/s",),
    "telegram": ("20/min", "1/s"),
    "webhook": (),
    "file": (),
    "email": (),
    "apprise": (),
}


class Redactor:
    """Replaces every configured secret (and URL passwords, token-like query values)."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = tuple(sorted(secrets, key=len, reverse=True))

    def text(self, value: str | None) -> str | None:
        return redact(value, self.secrets)

    def deep(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.text(str(k)): self.deep(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.deep(v) for v in value]
        return value


def number(value: Any) -> float | None:
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return result if result == result and abs(result) != float("inf") else None


def integer(value: Any) -> int | None:
    result = number(value)
    return int(result) if result is not None else None


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


def delivery_view(d: dict[str, str], redactor: Redactor) -> dict[str, Any]:
    """A delivery record (without the event copy a dead letter keeps)."""
    times = ("created_at", "updated_at", "next_at", "delivered_at", "dead_at", "replayed_at")
    return {
        "id": d.get("id", ""),
        "event_id": d.get("event_id", ""),
        "source": d.get("source", ""),
        "target": d.get("target", ""),
        "route": integer(d.get("route")),
        "queue": d.get("queue", ""),
        "status": d.get("status", "unknown"),
        "attempts": integer(d.get("attempts")) or 0,
        "replays": integer(d.get("replays")) or 0,
        **{name: number(d.get(name)) for name in times},
        "waiting": d.get("waiting") or None,
        "last_error": _text(d.get("last_error"), redactor),
        "dead_reason": _text(d.get("dead_reason"), redactor),
    }


def attempt_view(
    attempt: dict[str, Any], d: dict[str, str], kind: str | None, redactor: Redactor
) -> dict[str, Any]:
    """One attempt: outcome, HTTP status, duration, what was sent (a summary) and a
    capped excerpt of the answer."""
    request: dict[str, Any] = {
        "target": d.get("target", ""),
        "kind": kind,
        "idempotency_key": d.get("id", ""),
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
    }


def target_rates(config: TargetConfig) -> tuple[list[Rate], str]:
    """The rates the workers enforce for a target, and where they come from:
    ``config`` (its ``rate_limit``), ``kind`` (the kind's default) or ``unknown`` (a
    kind from a plugin, whose default the web process does not load)."""
    if config.rate_limit is not None:
        return list(config.rate_limit), "config"
    if config.kind in KIND_DEFAULT_RATES:
        return parse_rates(KIND_DEFAULT_RATES[config.kind]), "kind"
    return [], "unknown"
