"""Query and path parameters: one declaration gives the parser and the OpenAPI schema.

Parsing is exactly as strict as the schema each parameter publishes (booleans are
``true``/``false``, integers are digits), so a request the document allows is
accepted and one it forbids is refused with 400, never silently reinterpreted. Unknown
and repeated parameters are refused too: a misspelt filter on a bulk purge must not
widen it to everything.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from relay.admin.query import CURSOR_PATTERN, MAX_TIME, Cursor, parse_time
from relay.config.models import RouteMode
from relay.events import EVENT_TYPES
from relay.state.lifecycle import DeliveryStatus


class ParamError(ValueError):
    """A parameter is missing, unknown, repeated or malformed; ``code`` names which."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class Param:
    name: str
    description: str
    schema: dict[str, Any]
    parse: Callable[[str], Any]
    required: bool = False
    default: Any = None
    location: str = "query"
    missing_code: str = "missing_parameter"

    def openapi(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "in": self.location,
            "required": self.required or self.location == "path",
            "description": self.description,
            "schema": self.schema,
        }


def _text_parser(max_length: int) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if not 1 <= len(value) <= max_length:
            raise ValueError(f"must be 1 to {max_length} characters")
        return value

    return parse


def text(name: str, description: str, *, max_length: int = 256, path: bool = False) -> Param:
    schema = {"type": "string", "minLength": 1, "maxLength": max_length}
    return Param(
        name, description, schema, _text_parser(max_length), location="path" if path else "query"
    )


def choice(name: str, description: str, values: Iterable[str]) -> Param:
    allowed = list(values)

    def parse(value: str) -> str:
        if value not in allowed:
            raise ValueError("must be one of " + ", ".join(allowed))
        return value

    return Param(name, description, {"type": "string", "enum": allowed}, parse)


_DIGITS = re.compile(r"^-?[0-9]{1,18}$")


def integer(name: str, description: str, *, low: int, high: int, default: int) -> Param:
    def parse(value: str) -> int:
        if not _DIGITS.fullmatch(value) or not low <= int(value) <= high:
            raise ValueError(f"must be an integer from {low} to {high}")
        return int(value)

    schema = {"type": "integer", "minimum": low, "maximum": high, "default": default}
    return Param(name, description, schema, parse, default=default)


def _boolean(value: str) -> bool:
    if value not in ("true", "false"):
        raise ValueError("must be true or false")
    return value == "true"


def flag(name: str, description: str) -> Param:
    return Param(name, description, {"type": "boolean", "default": False}, _boolean, default=False)


def _true(value: str) -> bool:
    if value != "true":
        raise ValueError("must be true: this request deletes for good")
    return True


def confirm() -> Param:
    return Param(
        "confirm",
        "Must be `true`: a bulk purge deletes for good.",
        {"type": "boolean", "const": True},
        _true,
        required=True,
        missing_code="confirmation_required",
    )


def moment(name: str, description: str) -> Param:
    schema = {
        "anyOf": [
            {"type": "number", "minimum": 0, "maximum": MAX_TIME},
            {"type": "string", "format": "date-time"},
            {"type": "string", "format": "date"},
        ]
    }
    return Param(
        name, description + " Unix seconds or ISO 8601 (UTC unless it says).", schema, parse_time
    )


def cursor() -> Param:
    return Param(
        "cursor",
        "The `next_cursor` of the previous page.",
        {"type": "string", "pattern": CURSOR_PATTERN},
        Cursor.decode,
    )


LIMIT = integer("limit", "Items per page.", low=1, high=500, default=50)
SOURCE = text("source", "Only this source id.")
TARGET = text("target", "Only this target id.")
SINCE = moment("since", "Not before this time.")
UNTIL = moment("until", "Not after this time.")
QUERY = text("q", "Case-insensitive substring of the event's text.", max_length=200)
EVENT_FILTERS = (
    SOURCE,
    choice("type", "Only this event type.", EVENT_TYPES),
    text("group", "Only events of this group id."),
    choice("status", "Only events in this state.", ("queued", "routed", "unrouted")),
    SINCE,
    UNTIL,
    QUERY,
)
DELIVERY_STATUSES = tuple(status.value for status in DeliveryStatus)
DELIVERY_FILTERS = (
    SOURCE,
    TARGET,
    choice("status", "Only deliveries in this state.", DELIVERY_STATUSES),
    text("event_id", "Only deliveries of this event."),
    choice(
        "mode",
        "Only deliveries made in this route mode: `shadow` (recorded, never sent), `test` "
        "(sent to the route's test_targets) or `live`.",
        tuple(mode.value for mode in RouteMode),
    ),
    SINCE,
    UNTIL,
)
DEAD_LETTER_FILTERS = (SOURCE, TARGET, SINCE, UNTIL, QUERY)
PAGING = (LIMIT, cursor())
_ENTRY_ID = re.compile(r"^[0-9]{1,15}-[0-9]{1,10}$")


def _entry_id(value: str) -> str:
    if not _ENTRY_ID.fullmatch(value):
        raise ValueError("not a cursor returned by this API")
    return value


AUDIT_PAGING = (
    LIMIT,
    Param(
        "cursor",
        "The `next_cursor` of the previous page.",
        {"type": "string", "pattern": _ENTRY_ID.pattern},
        _entry_id,
    ),
)
DRY_RUN = flag("dry_run", "Only count what would be acted on; change nothing.")
EVENT_ID = text("event_id", "An event id.", path=True)
DELIVERY_ID = text("delivery_id", "A delivery id.", path=True)
TARGET_ID = text("target_id", "A target id.", path=True)


def parse_params(
    params: Iterable[Param], query: Mapping[str, list[str]], path: Mapping[str, str]
) -> dict[str, Any]:
    """Every declared parameter's value (its default when absent); ``ParamError`` else."""
    declared = {p.name: p for p in params if p.location == "query"}
    unknown = sorted(set(query) - set(declared))
    if unknown:
        raise ParamError("unknown_parameter", f"unknown parameter(s): {', '.join(unknown)}")
    values: dict[str, Any] = {}
    for param in params:
        raw: list[str] = (
            [path[param.name]] if param.location == "path" else query.get(param.name, [])
        )
        if len(raw) > 1:
            raise ParamError("invalid_parameter", f"{param.name}: give it once")
        if not raw:
            if param.required:
                raise ParamError(param.missing_code, f"{param.name}: required")
            values[param.name] = param.default
            continue
        try:
            values[param.name] = param.parse(raw[0])
        except ValueError as exc:
            raise ParamError("invalid_parameter", f"{param.name}: {exc}") from None
    return values
