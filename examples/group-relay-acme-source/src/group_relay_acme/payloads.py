"""Acme Chat webhook bodies → ``GroupEvent``.

Pure functions over decoded JSON, kept apart from the signature checks so each can be
tested alone. A field of the wrong type counts as absent (an odd body becomes a thinner
event, never a crash); a field that is present but breaks the ``GroupEvent`` model
(an empty room id, a name too long) is a 422 naming the field.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from relay.errors import BadRequest, Unprocessable
from relay.events import GroupEvent

# Acme's event types → the relay's; anything else becomes a ``custom`` event.
EVENT_TYPES = {
    "message.posted": "message.created",
    "room.member_added": "member.joined",
    "room.member_removed": "member.left",
    "room.renamed": "group.updated",
}
MAX_EVENT_ID = 256  # the dedupe key is stored in a Redis key name: keep it bounded
_MAX_TIME = 253402300799  # 9999-12-31T23:59:59Z


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _party(value: Any) -> dict[str, Any] | None:
    """``{"id", "name"}`` as Acme sends rooms and users; ``None`` without an id. Left to
    ``GroupEvent`` to validate, so a bad value is reported with its place."""
    data = _obj(value)
    ident = data.get("id")
    if not isinstance(ident, str):
        return None
    return {"id": ident, "name": _str(data.get("name"))}


def event_id(body: dict[str, Any]) -> str:
    """Acme's own id of the event: the same on every retry of it, so it is the dedupe key."""
    value = body.get("id")
    if not isinstance(value, str) or not value:
        raise BadRequest("an Acme event has a non-empty string 'id'", code="missing_event_id")
    if len(value) > MAX_EVENT_ID:
        raise BadRequest(f"'id' is longer than {MAX_EVENT_ID} characters", code="invalid_event_id")
    return value


def _occurred(value: Any) -> datetime | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _MAX_TIME:
        return datetime.fromtimestamp(value, UTC)
    return None


def to_event(source_id: str, body: dict[str, Any], *, bot_user_id: str | None) -> GroupEvent:
    """One Acme event as a ``GroupEvent``; the whole body is kept in ``raw``."""
    kind = EVENT_TYPES.get(str(body.get("type")), "custom")
    message = _obj(body.get("message"))
    mentions = [p for p in map(_party, _list(message.get("mentions"))) if p is not None]
    fields: dict[str, Any] = {
        "source": source_id,
        "type": kind,
        "group": _party(body.get("room")),
        "sender": _party(body.get("user")),
        "text": _str(message.get("text")),
        "mentions": mentions,
        "mentions_bot": bot_user_id is not None and any(p["id"] == bot_user_id for p in mentions),
        "message_id": _str(message.get("id")),
        "in_reply_to": _str(message.get("thread_id")),
        "raw": body,
    }
    if (when := _occurred(body.get("created_at"))) is not None:
        fields["occurred_at"] = when
    try:
        return GroupEvent(**fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise Unprocessable(f"{where}: {first['msg']}") from None


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []
