"""Telegram Bot API ``Update`` objects (also SafeW's clone of the API) → ``GroupEvent``.

Pure functions over decoded JSON, shared by the webhook source and ``relay poll``.
Every field is read defensively: a field of the wrong type counts as absent, so an odd
update becomes a thinner event, never a crash. Field names follow
core.telegram.org/bots/api (Update, Message, User, Chat, MessageEntity, PhotoSize,
Document, Audio, Video, Voice).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from relay.config.paths import path_of
from relay.errors import Unprocessable
from relay.events import FileRef, GroupEvent, Party

# Updates that carry a new ``Message``, and those that carry a new version of one.
MESSAGE_KINDS = ("message", "channel_post", "business_message")
EDIT_KINDS = ("edited_message", "edited_channel_post", "edited_business_message")
# Message fields holding one file object each (``photo`` is a list of sizes, see below).
# An animation also sets ``document`` with the same file_id; ``_files`` keeps one.
FILE_FIELDS: dict[str, tuple[str, str | None]] = {  # field → (default name, default mime)
    "animation": ("animation.mp4", "video/mp4"),
    "document": ("document", None),
    "audio": ("audio", None),
    "video": ("video.mp4", "video/mp4"),
    "voice": ("voice.ogg", "audio/ogg"),
    "video_note": ("video_note.mp4", "video/mp4"),
}
GROUP_CHANGES = ("new_chat_title", "new_chat_photo", "delete_chat_photo")
_MAX_TIME = 253402300799  # 9999-12-31T23:59:59Z


@dataclass(frozen=True)
class BotIdentity:
    """Who "the bot" is, to set ``mentions_bot``; either part may be unknown."""

    username: str | None = None  # lower-case, without the leading "@"
    id: int | None = None


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(value: Any, limit: int = 1024) -> str | None:
    return value[:limit] if isinstance(value, str) and value else None


def _ident(value: Any) -> str | None:
    """A Telegram id (an integer) as the string a ``Party`` holds."""
    number = _int(value)
    if number is not None:
        return str(number)[:256]
    return _str(value, 256)


def _full_name(obj: dict[str, Any]) -> str | None:
    parts = [p for p in (_str(obj.get("first_name")), _str(obj.get("last_name"))) if p]
    return " ".join(parts)[:1024] if parts else None


def user_party(user: Any) -> Party | None:
    """A ``User``: id, "first last" (else the username) as the name."""
    user = _obj(user)
    uid = _ident(user.get("id"))
    if uid is None:
        return None
    return Party(id=uid, name=_full_name(user) or _str(user.get("username")))


def chat_party(chat: Any) -> Party | None:
    """A ``Chat``: id, its title (a private chat: the other person's name)."""
    chat = _obj(chat)
    cid = _ident(chat.get("id"))
    if cid is None:
        return None
    name = _str(chat.get("title")) or _full_name(chat) or _str(chat.get("username"))
    return Party(id=cid, name=name)


def _timestamp(value: Any) -> datetime | None:
    seconds = _int(value)
    if seconds is None or not 0 <= seconds <= _MAX_TIME:
        return None
    return datetime.fromtimestamp(seconds, UTC)


def entity_text(text: str, entity: dict[str, Any]) -> str | None:
    """The entity's slice of ``text``: offsets count UTF-16 code units, not characters."""
    offset, length = _int(entity.get("offset")), _int(entity.get("length"))
    if offset is None or length is None or offset < 0 or length <= 0:
        return None
    units = text.encode("utf-16-le", "surrogatepass")
    if 2 * (offset + length) > len(units):
        return None
    return units[2 * offset : 2 * (offset + length)].decode("utf-16-le", "replace")


def _mentions(text: str, entities: Any, bot: BotIdentity) -> tuple[list[Party], bool]:
    """``mention`` (@username → id "@username") and ``text_mention`` (a user object)
    entities; a ``bot_command`` addressed as ``/cmd@bot`` also counts as a bot mention."""
    found: dict[str, Party] = {}
    to_bot = False
    for entity in entities if isinstance(entities, list) else []:
        entity = _obj(entity)
        kind = entity.get("type")
        if kind == "text_mention":
            party = user_party(entity.get("user"))
            if party is None:
                continue
            found.setdefault(party.id, party)
            to_bot |= bot.id is not None and party.id == str(bot.id)
        elif kind in ("mention", "bot_command"):
            written = entity_text(text, entity)
            if not written:
                continue
            if kind == "mention":
                handle = written[:256]
                found.setdefault(handle.lower(), Party(id=handle))
                to_bot |= bot.username is not None and handle.lower() == "@" + bot.username
            else:
                _, at, target = written.partition("@")
                to_bot |= bool(at) and target.lower() == bot.username
    return list(found.values()), to_bot


def _file(obj: dict[str, Any], name: str, mime: str | None) -> FileRef | None:
    file_id = _str(obj.get("file_id"), 4096)
    if file_id is None:
        return None
    size = _int(obj.get("file_size"))
    return FileRef(
        name=_str(obj.get("file_name")) or _str(obj.get("title")) or name,
        size=size if size is not None and size >= 0 else None,
        mime=_str(obj.get("mime_type"), 255) or mime,
        ref=file_id,
    )


def largest_photo(sizes: Any) -> FileRef | None:
    """The biggest ``PhotoSize`` of a photo (by pixels, then bytes); photos are JPEG."""
    candidates = [s for s in (sizes if isinstance(sizes, list) else []) if isinstance(s, dict)]

    def area(size: dict[str, Any]) -> tuple[int, int]:
        pixels = (_int(size.get("width")) or 0) * (_int(size.get("height")) or 0)
        return pixels, _int(size.get("file_size")) or 0

    for size in sorted(candidates, key=area, reverse=True):
        ref = _file(size, "photo.jpg", "image/jpeg")
        if ref is not None:
            return ref
    return None


def _files(message: dict[str, Any]) -> list[FileRef]:
    files: dict[str, FileRef] = {}
    photo = largest_photo(message.get("photo"))
    if photo is not None:
        files[photo.ref or ""] = photo
    for field, (name, mime) in FILE_FIELDS.items():
        ref = _file(_obj(message.get(field)), name, mime)
        if ref is not None:
            files.setdefault(ref.ref or "", ref)
    return list(files.values())


def _composed_id(chat_id: int | None, message: dict[str, Any]) -> str | None:
    """``"<chat id>:<message id>"``: Telegram numbers messages per chat."""
    message_id = _int(message.get("message_id"))
    if message_id is None or chat_id is None:
        return None
    composed = f"{chat_id}:{message_id}"
    return composed if len(composed) <= 256 else None


def _replied_id(chat_id: int | None, message: dict[str, Any]) -> str | None:
    """The ``message_id`` of ``reply_to_message``, composed as for the original.

    The original is in the same chat (a reply to another chat is ``external_reply``,
    not read here). In a forum topic, a message that quotes nothing still has the
    topic's opening message as ``reply_to_message``: the topic is its thread.
    """
    original = _obj(message.get("reply_to_message"))
    if not original:
        return None
    return _composed_id(_int(_obj(original.get("chat")).get("id")) or chat_id, original)


def message_link(base: str | None, chat: dict[str, Any], message: dict[str, Any]) -> str | None:
    """A link to the message under ``base`` (``https://t.me``): ``<username>/<id>`` in a
    chat with a public username, ``c/<chat id without -100>/<id>`` in a private
    supergroup (it opens for its members); basic groups and private chats have none."""
    message_id = _int(message.get("message_id"))
    if not base or message_id is None:
        return None
    username = _str(chat.get("username"), 64)
    if username and username.replace("_", "").isalnum():
        return f"{base}/{username}/{message_id}"
    chat_id = str(_int(chat.get("id")) or "")
    if chat.get("type") in ("supergroup", "channel") and chat_id.startswith("-100"):
        return f"{base}/c/{chat_id[4:]}/{message_id}"
    return None


def _message_fields(
    message: dict[str, Any], bot: BotIdentity, edited: bool, link_base: str | None = None
) -> dict[str, Any]:
    """Type and fields of a (new or edited) message; see docs/sources/telegram.md."""
    chat = _obj(message.get("chat"))
    group = chat_party(chat)
    fields: dict[str, Any] = {
        "group": group,
        # Anonymous admins and channels post as a chat (``sender_chat``), with a
        # placeholder ``from``: the chat is the real author.
        "sender": chat_party(message.get("sender_chat")) or user_party(message.get("from")),
    }
    occurred = _timestamp(message.get("edit_date")) if edited else None
    occurred = occurred or _timestamp(message.get("date"))
    if occurred is not None:
        fields["occurred_at"] = occurred
    chat_id = _int(chat.get("id"))
    fields["message_id"] = _composed_id(chat_id, message)
    fields["in_reply_to"] = _replied_id(chat_id, message)
    fields["link"] = message_link(link_base, chat, message)
    text = _str(message.get("text"), 1 << 20)
    entities = message.get("entities")
    if text is None:
        text, entities = _str(message.get("caption"), 1 << 20), message.get("caption_entities")
    if text is not None:
        fields["text"] = text
        fields["mentions"], fields["mentions_bot"] = _mentions(text, entities, bot)
    fields["files"] = _files(message)

    joined = message.get("new_chat_members")
    left = user_party(message.get("left_chat_member"))
    if isinstance(joined, list) and joined:
        members = [p for p in (user_party(u) for u in joined) if p is not None]
        fields["type"], fields["mentions"] = "member.joined", members
        fields["mentions_bot"] = bot.id is not None and str(bot.id) in {p.id for p in members}
    elif left is not None:
        fields["type"], fields["mentions"] = "member.left", [left]
        fields["mentions_bot"] = bot.id is not None and left.id == str(bot.id)
    elif any(message.get(key) for key in GROUP_CHANGES):
        fields["type"] = "group.updated"
        title = _str(message.get("new_chat_title"))
        if title and group is not None:
            fields["group"] = Party(id=group.id, name=title)
        photo = largest_photo(message.get("new_chat_photo"))
        fields["files"] = [photo] if photo else []
    elif fields["files"]:
        fields["type"] = "file.shared"
    elif text is not None:
        fields["type"] = "message.created"
    else:
        fields["type"] = "custom"
    if edited:
        fields["type"] = "custom"  # an edit is not a new message: routes tell by ``raw``
    return fields


def _other_fields(payload: dict[str, Any]) -> dict[str, Any]:
    """Context of an update that is no message (callback query, member update, ...)."""
    chat = payload.get("chat") or _obj(payload.get("message")).get("chat")
    fields: dict[str, Any] = {"type": "custom", "group": chat_party(chat)}
    fields["sender"] = user_party(payload.get("from") or payload.get("user"))
    occurred = _timestamp(payload.get("date"))
    if occurred is not None:
        fields["occurred_at"] = occurred
    return fields


def update_kind(update: dict[str, Any]) -> str | None:
    """The update's one payload field (``message``, ``callback_query``, ...), if any."""
    for key, value in update.items():
        if key != "update_id" and isinstance(value, dict):
            return key
    return None


def event_from_update(
    source_id: str, update: dict[str, Any], bot: BotIdentity, *, link_base: str | None = None
) -> GroupEvent:
    """Map one ``Update`` (already known to carry an ``update_id``) to a ``GroupEvent``;
    ``link_base`` (``https://t.me``) gives messages their ``link``."""
    kind = update_kind(update)
    payload = _obj(update.get(kind)) if kind else {}
    if kind in MESSAGE_KINDS or kind in EDIT_KINDS:
        fields = _message_fields(payload, bot, edited=kind in EDIT_KINDS, link_base=link_base)
    else:
        fields = _other_fields(payload)
    try:
        return GroupEvent(source=source_id, raw=update, **fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise Unprocessable(f"{path_of(first['loc']) or 'update'}: {first['msg']}") from None
