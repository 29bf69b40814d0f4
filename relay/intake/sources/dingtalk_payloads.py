"""Helpers shared by the DingTalk sources: lenient reads of verified platform JSON.

The payload is authentic once it gets here, but its fields still come from the
network: a value of the wrong type, an empty id or an impossible time is skipped
(the field stays unset) rather than failing the whole event, and whatever cannot be
mapped is still in ``raw``. Only a ``GroupEvent`` that will not validate is a 422.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from relay.config.paths import path_of
from relay.errors import BadRequest, Unprocessable
from relay.events import FileRef, GroupEvent, Party, ReplyHandle
from relay.intake.sources.base import InboundRequest
from relay.intake.sources.generic_payloads import read_json

MAX_ID = 256  # Party.id, GroupEvent.message_id
MAX_NAME = 1024  # Party.name, FileRef.name
MAX_REF = 4096  # FileRef.ref
_MAX_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
SESSION_HOSTS = ("oapi.dingtalk.com", "api.dingtalk.com")
"""Hosts a robot's ``sessionWebhook`` may point at by default; any other URL is not kept."""
DEFAULT_PORTS = {"https": 443, "http": 80}
Origin = tuple[str, str, int]  # scheme, host, port


def pick(data: Mapping[str, Any], name: str) -> Any:
    """``data[name]``, else the same key with a capital first letter.

    DingTalk's current HTTP push uses ``chatId``/``timeStamp``; older registered
    callbacks send ``ChatId``/``TimeStamp`` for the same fields.
    """
    if name in data:
        return data[name]
    return data.get(name[:1].upper() + name[1:])


def ident(value: Any, limit: int = MAX_ID) -> str | None:
    """A usable id: a non-blank string within ``limit`` characters."""
    if isinstance(value, str) and value.strip() and len(value) <= limit:
        return value
    return None


def party(id_value: Any, name: Any = None) -> Party | None:
    """A ``Party`` if ``id_value`` is a usable id; an odd name is dropped, a long one cut."""
    party_id = ident(id_value)
    if party_id is None:
        return None
    label = name[:MAX_NAME] if isinstance(name, str) and name else None
    return Party(id=party_id, name=label)


def parties(values: Any) -> list[Party]:
    """Parties from a list of user ids, in order, each once; anything else is skipped."""
    found: list[Party] = []
    if not isinstance(values, list):
        return found
    seen: set[str] = set()
    for value in values:
        member = party(value)
        if member is not None and member.id not in seen:
            seen.add(member.id)
            found.append(member)
    return found


def from_ms(value: Any) -> datetime | None:
    """A UTC time from epoch milliseconds (a number or a digit string), else ``None``."""
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 15:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not 0 <= value <= _MAX_MS:  # also rejects NaN
        return None
    return datetime.fromtimestamp(value / 1000, tz=UTC)


def file_ref(name: Any, ref: Any, *, fallback: str, mime: str | None = None) -> FileRef | None:
    """A ``FileRef`` for a platform download code, or ``None`` if the code is unusable."""
    code = ident(ref, MAX_REF)
    if code is None:
        return None
    label = name[:MAX_NAME] if isinstance(name, str) and name.strip() else fallback
    return FileRef(name=label, ref=code, mime=mime)


def json_object(body: bytes, what: str) -> dict[str, Any]:
    """``body`` read as one JSON object with the relay's strict rules (400 otherwise)."""
    request = InboundRequest("POST", {"content-type": ["application/json"]}, body)
    try:
        value = read_json(request)
    except BadRequest as exc:
        raise BadRequest(f"{what}: {exc.detail}", code=exc.code) from None
    if not isinstance(value, dict):
        raise BadRequest(f"{what} is not a JSON object", code="invalid_json")
    return value


def build_event(source_id: str, **fields: Any) -> GroupEvent:
    """The ``GroupEvent``; 422 naming the first field that does not validate."""
    try:
        return GroupEvent(source=source_id, **fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise Unprocessable(f"{path_of(first['loc']) or 'event'}: {first['msg']}") from None


def session_origin(entry: str) -> Origin:
    """``(scheme, host, port)`` of a ``session_hosts`` entry; a bare host means https:443.

    Plain http (a loopback test server, say) is trusted only when an entry spells it.
    """
    text = entry.strip()
    spelled = text if "://" in text else f"https://{text}"
    try:
        parts = urlsplit(spelled)
        port = parts.port
    except ValueError as exc:  # a malformed host or port
        raise ValueError(f"{entry!r}: {exc}") from None
    scheme, host = parts.scheme.lower(), (parts.hostname or "").rstrip(".")
    extra = parts.path not in ("", "/") or parts.query or parts.fragment or parts.username
    if scheme not in DEFAULT_PORTS or not host or extra or parts.password is not None:
        raise ValueError(
            f"{entry!r} is neither a host name (such as oapi.dingtalk.com) nor an origin "
            "(such as http://127.0.0.1:8080)"
        )
    return scheme, host, port or DEFAULT_PORTS[scheme]


DEFAULT_ORIGINS = frozenset(session_origin(host) for host in SESSION_HOSTS)


def session_reply(url: Any, expires: Any, origins: frozenset[Origin]) -> ReplyHandle | None:
    """The ``sessionWebhook`` if its scheme, host and port are one of ``origins``."""
    if not isinstance(url, str) or len(url) > 4096:
        return None
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        port = parts.port or DEFAULT_PORTS.get(scheme, 0)
    except ValueError:  # a malformed host or port
        return None
    if (scheme, (parts.hostname or "").rstrip("."), port) not in origins:
        return None
    return ReplyHandle(kind="dingtalk_session", url=url, expires_at=from_ms(expires))
