"""JSON bodies of generic senders (Standard Webhooks, HMAC-signed) → ``GroupEvent``.

A body whose ``type`` is a group-event type (``message.created``, ...) is read as a
group event, from its ``data`` object if it has one (the Standard Webhooks payload
shape ``{type, timestamp, data}``) or from the top level; anything else becomes a
``custom`` event. The whole body is always kept in ``raw``.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from relay.config.paths import path_of
from relay.errors import BadRequest, Unprocessable, UnsupportedMediaType
from relay.events import EVENT_TYPES, GroupEvent
from relay.intake.sources.base import InboundRequest

_EVENT_FIELDS = ("group", "sender", "text", "mentions", "files")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Refuse ``{"a": 1, "a": 2}``: parsers disagree on which value wins."""
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"key {key!r} appears twice in one object")
            seen.add(key)
    return result


def read_json(request: InboundRequest) -> Any:
    """The body as JSON: 415 for another media type, 400 for bytes that are not JSON."""
    media = request.content_type
    if media != "application/json" and not media.endswith("+json"):
        raise UnsupportedMediaType(
            f"content type {media or '(none)'!r} is not accepted; send application/json"
        )
    try:
        text = request.body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"body is not UTF-8 (byte {exc.start})", code="invalid_json") from None
    try:
        return json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
    except RecursionError:
        raise BadRequest("body is nested too deeply", code="invalid_json") from None
    except ValueError as exc:
        raise BadRequest(f"body is not valid JSON: {exc}", code="invalid_json") from None


def event_from_json(source_id: str, body: Any) -> GroupEvent:
    """Map a parsed JSON body to a ``GroupEvent``; 422 names the first invalid field."""
    if not isinstance(body, dict) or body.get("type") not in EVENT_TYPES:
        return GroupEvent(source=source_id, type="custom", raw=body)
    data = body["data"] if isinstance(body.get("data"), dict) else body
    fields: dict[str, Any] = {k: data[k] for k in _EVENT_FIELDS if k in data}
    occurred = data.get("occurred_at", body.get("timestamp", body.get("occurred_at")))
    if occurred is not None:
        fields["occurred_at"] = occurred
    try:
        return GroupEvent(source=source_id, type=body["type"], raw=body, **fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = path_of(first["loc"]) or "body"
        raise Unprocessable(f"{where}: {first['msg']}") from None
