"""WeCom payloads: the envelope around ``Encrypt``, the decrypted message, and ``GroupEvent``.

Envelopes and messages come as XML (app callbacks) or JSON (the JSON callback variant,
and 智能机器人 bots, whose messages use lower-case keys such as ``msgtype`` and
``chatid``). XML is read with ``xml.etree.ElementTree`` and any document that
declares a DTD is refused: WeCom never sends one, and a DTD is what entity-expansion
attacks ("billion laughs", external entities) need, so refusing it removes the whole
class without the ``defusedxml`` dependency. The envelope is screened for the text
``<!DOCTYPE``/``<!ENTITY`` before parsing; the decrypted message is not (a chat text
may quote HTML), and the parser itself stops at a DOCTYPE declaration instead.
"""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import ValidationError

from relay.config.paths import path_of
from relay.errors import BadRequest, Unprocessable, UnsupportedMediaType
from relay.events import GroupEvent
from relay.intake.sources.base import InboundRequest
from relay.intake.sources.generic_payloads import read_json

MAX_DEPTH = 8  # WeCom messages nest two levels (MemChangeList/Item); deeper is not WeCom
_DTD_MARKERS = ("<!DOCTYPE", "<!ENTITY")
_XML_TYPES = ("text/xml", "application/xml")
_SNIFFED_TYPES = ("", "text/plain", "application/octet-stream")
_APP_MEDIA = ("image", "voice", "video", "shortvideo", "file")
_BOT_MEDIA = ("image", "file", "video")
# The fields that tell two events without a MsgId apart; a resend repeats all of them.
_EVENT_KEY_FIELDS = (
    "FromUserName",
    "CreateTime",
    "MsgType",
    "Event",
    "ChangeType",
    "UpdateDetail",
    "ChatId",
    "UserID",
    "ExternalUserID",
    "CurMemVer",
    "Id",
    "JobId",
    "AgentID",
)
MAX_MESSAGE_ID = 200


class _DoctypeFound(Exception):
    pass


class _NoDoctype(ET.TreeBuilder):
    """A tree builder the parser calls when a DOCTYPE starts, before any entity is used."""

    def doctype(self, name: str, pubid: str | None, system: str | None) -> None:
        raise _DoctypeFound(name)


def read_xml(text: str, *, screen: bool = True) -> dict[str, Any]:
    """An XML document as a dict of its root's children; 400 if malformed or with a DTD.

    ``screen`` also refuses the DTD markers anywhere in the text, even inside CDATA.
    """
    forbidden = BadRequest(
        "XML with a DOCTYPE or ENTITY declaration is refused (WeCom never sends one)",
        code="forbidden_xml",
    )
    if screen and any(marker in text for marker in _DTD_MARKERS):
        raise forbidden
    try:
        root = ET.fromstring(text, parser=ET.XMLParser(target=_NoDoctype()))
    except _DoctypeFound:
        raise forbidden from None
    except ET.ParseError as exc:
        raise BadRequest(f"not well-formed XML: {exc}", code="invalid_xml") from None
    value = _element(root, 0)
    return value if isinstance(value, dict) else {}


def _element(elem: ET.Element, depth: int) -> Any:
    """A leaf's text (verbatim), or a dict of children; ``Item`` children always a list."""
    children = list(elem)
    if not children:
        return elem.text or ""
    if depth >= MAX_DEPTH:
        raise BadRequest(f"XML is nested deeper than {MAX_DEPTH} levels", code="invalid_xml")
    grouped: dict[str, list[Any]] = {}
    for child in children:
        grouped.setdefault(child.tag, []).append(_element(child, depth + 1))
    return {k: v if len(v) > 1 or k == "Item" else v[0] for k, v in grouped.items()}


def _json(body: bytes) -> Any:
    """Strict JSON (the relay's usual rules: UTF-8, no NaN, no repeated keys)."""
    return read_json(InboundRequest("POST", {"content-type": ("application/json",)}, body))


def _utf8(body: bytes, what: str, code: str) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"{what} is not UTF-8 (byte {exc.start})", code=code) from None


def body_format(request: InboundRequest) -> Literal["xml", "json"]:
    """XML or JSON by content type; without a telling one, by the body's first byte."""
    media = request.content_type
    if media in _XML_TYPES or media.endswith("+xml"):
        return "xml"
    if media == "application/json" or media.endswith("+json"):
        return "json"
    if media in _SNIFFED_TYPES:
        return "json" if request.body.lstrip()[:1] == b"{" else "xml"
    raise UnsupportedMediaType(
        f"content type {media!r} is not accepted; WeCom sends XML (text/xml) or JSON"
    )


def read_envelope(request: InboundRequest) -> str:
    """The ``Encrypt`` value: what the signature covers (the rest of the envelope is not)."""
    if body_format(request) == "json":
        data = _json(request.body)
        if not isinstance(data, dict):
            raise BadRequest("the JSON body is not an object", code="missing_encrypt")
        encrypt = data.get("encrypt", data.get("Encrypt"))
    else:
        encrypt = read_xml(_utf8(request.body, "body", "invalid_xml")).get("Encrypt")
    if not isinstance(encrypt, str) or not encrypt:
        raise BadRequest("the body has no Encrypt value", code="missing_encrypt")
    return encrypt


def read_message(plain: bytes) -> dict[str, Any]:
    """The decrypted message as a dict, from XML or JSON; 400 if it is neither."""
    text = _utf8(plain, "the decrypted message", "invalid_message")
    head = text.lstrip().removeprefix("\ufeff")[:1]
    if head == "{":
        data = _json(plain)
        if isinstance(data, dict):
            return data
    elif head == "<":
        return read_xml(text, screen=False)
    raise BadRequest(
        "the decrypted message is not an XML document or a JSON object", code="invalid_message"
    )


def _str(data: Any, key: str) -> str | None:
    """An id-like field as stripped text (JSON numbers too); ``None`` if absent or empty."""
    value = data.get(key) if isinstance(data, dict) else None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str):
        return value.strip() or None
    return None


def _party(ident: str | None) -> dict[str, str] | None:
    return {"id": ident} if ident else None


def _time(value: Any) -> datetime | None:
    """``CreateTime`` (Unix seconds; milliseconds accepted) as UTC; 422 if not a time."""
    if value is None or value == "":
        return None
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        value = int(value.strip()) if len(value.strip()) <= 13 else None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 10**13:
        raise Unprocessable("CreateTime is not a Unix time", code="invalid_event")
    try:
        return datetime.fromtimestamp(value / 1000 if value >= 10**12 else value, UTC)
    except (OverflowError, OSError, ValueError):
        raise Unprocessable("CreateTime is out of range", code="invalid_event") from None


def _members(value: Any) -> list[dict[str, str]]:
    """``MemChangeList``: ``<Item>`` children (current format) or ``id1,id2`` (older)."""
    if isinstance(value, dict):
        value = value.get("Item")
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list):
        return []
    return [{"id": i.strip()} for i in items if isinstance(i, str) and i.strip()]


def _app_fields(msg: dict[str, Any]) -> dict[str, Any]:
    """An app callback (CamelCase fields): messages to the app and events."""
    kind, sender = _str(msg, "MsgType"), _str(msg, "FromUserName")
    fields: dict[str, Any] = {
        "group": _party(_str(msg, "ChatId") or _str(msg, "AgentID")),
        "sender": _party(sender) if sender != "sys" else None,  # "sys": a system event
    }
    message = {"message_id": _str(msg, "MsgId"), "mentions_bot": True}  # sent to the app
    if kind == "text":
        content = msg.get("Content")
        fields |= {"type": "message.created", "text": content if isinstance(content, str) else ""}
        fields |= message
    elif kind == "link":
        parts = [_str(msg, k) for k in ("Title", "Description", "Url")]
        fields |= {"type": "message.created", "text": "\n".join(p for p in parts if p)} | message
    elif kind in _APP_MEDIA and (_str(msg, "MediaId") or _str(msg, "PicUrl")):
        ident = _str(msg, "MsgId") or _str(msg, "MediaId")
        fmt = _str(msg, "Format") if kind == "voice" else None
        file = {
            "name": f"{kind}-{ident}" + (f".{fmt}" if fmt else ""),
            "ref": _str(msg, "MediaId"),
            "url": _str(msg, "PicUrl") if kind == "image" else None,
        }
        fields |= {"type": "file.shared", "files": [file]} | message
    elif kind == "event" and _str(msg, "Event") == "change_external_chat":
        change, detail = _str(msg, "ChangeType"), _str(msg, "UpdateDetail")
        if change == "update" and detail in ("add_member", "del_member"):
            joined = detail == "add_member"
            fields["type"] = "member.joined" if joined else "member.left"
            fields["mentions"] = _members(msg.get("MemChangeList"))
        elif change in ("create", "update", "dismiss"):
            fields["type"] = "group.updated"
    return fields


def _quoted_id(msg: dict[str, Any]) -> str | None:
    """The ``msgid`` of the message a bot message quotes (``quote``), if WeCom names it.

    The documented ``quote`` (developer.work.weixin.qq.com/document/path/100719) carries
    only the quoted content (``msgtype`` plus ``text``/``image``/``mixed``/...), no id,
    so a quote usually leaves ``in_reply_to`` unset; an id is used where one is present.
    App callbacks (CamelCase XML) carry no quote at all.
    """
    ident = _str(msg.get("quote"), "msgid")
    return ident if ident is not None and len(ident) <= 256 else None  # GroupEvent's limit


def _bot_fields(msg: dict[str, Any]) -> dict[str, Any]:
    """A 智能机器人 callback (lower-case fields); a group message arrives only if @-mentioned."""
    kind, msg_id = _str(msg, "msgtype") or "", _str(msg, "msgid")
    fields: dict[str, Any] = {
        "group": _party(_str(msg, "chatid") or _str(msg, "aibotid")),
        "sender": _party(_str(msg.get("from"), "userid")),
        "message_id": msg_id,
        "in_reply_to": _quoted_id(msg),
    }
    mixed = msg.get("mixed")
    items = mixed.get("msg_item") if kind == "mixed" and isinstance(mixed, dict) else [msg]
    texts: list[str] = []
    files: list[dict[str, Any]] = []
    for item in items if isinstance(items, list) else []:
        item_kind = _str(item, "msgtype") or ""
        body = item.get(item_kind) if isinstance(item, dict) else None
        if item_kind in ("text", "voice") and isinstance(body, dict):
            content = body.get("content")
            texts += [content] if isinstance(content, str) else []
        elif item_kind in _BOT_MEDIA and _str(body, "url"):
            files.append({"name": f"{item_kind}-{msg_id}-{len(files)}", "url": _str(body, "url")})
    if texts or files:
        kind = "message.created" if texts else "file.shared"
        fields |= {"type": kind, "text": "\n".join(texts) or None, "files": files}
        fields["mentions_bot"] = True
    return fields


def to_event(source_id: str, msg: dict[str, Any]) -> GroupEvent:
    """Map a decrypted message; 422 names the first field GroupEvent refuses."""
    is_bot = "msgtype" in msg and "MsgType" not in msg
    fields = _bot_fields(msg) if is_bot else _app_fields(msg)
    occurred = _time(msg.get("create_time" if is_bot else "CreateTime"))
    if occurred is not None:
        fields["occurred_at"] = occurred
    try:
        return GroupEvent(source=source_id, raw=msg, **fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise Unprocessable(f"{path_of(first['loc']) or 'message'}: {first['msg']}") from None


def dedupe_key(msg: dict[str, Any]) -> str | None:
    """``MsgId`` (``msgid`` for bots), else a digest of the fields that identify an event."""
    ident = _str(msg, "MsgId") or _str(msg, "msgid")
    if ident:
        if len(ident) <= MAX_MESSAGE_ID:
            return f"msg:{ident}"
        return "msg:" + hashlib.sha256(ident.encode()).hexdigest()
    parts = [_str(msg, name) or "" for name in _EVENT_KEY_FIELDS]
    if not any(parts):
        return None
    return "evt:" + hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
