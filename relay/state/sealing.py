"""Sealing: what people wrote, kept in Redis encrypted (``RELAY_ENCRYPTION_KEYS``).

A sealed value is the text ``enc:v1:<key id>:<base64url(nonce ‖ ciphertext ‖ tag)>``,
AES-256-GCM-SIV (RFC 8452) under the key the id names. The envelope says which key to
open it with, so a record sealed with a key no longer configured is reported as such
(``UnknownDataKey``) instead of failing as corrupt, and a value without the prefix is
plain: records written before sealing was turned on stay readable.

GCM-SIV rather than GCM: both take a random 96-bit nonce per value, but a repeated
nonce breaks GCM (NIST caps a GCM key at 2³² random nonces, days of a busy relay's
seals) while GCM-SIV only reveals that two values were equal. Not Fernet: it has no
key id to name the missing key, and no associated data.

Every value is bound to where it belongs (associated data: its record and field), so a
sealed value copied into another record does not open there. An event stays
filterable: its stored JSON keeps ``id``, ``source``, ``type`` and the group's id in
the clear beside the sealed whole (``{"id": ..., "sealed": "enc:v1:..."}``), and those
clear fields are part of what the seal authenticates.

Without keys a ``Sealer`` writes plain text and opens only plain text, so a relay that
never set the variable stores byte for byte what it always did.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives.ciphers.aead import AESGCMSIV

from relay.errors import ConfigError, RelayError

if TYPE_CHECKING:
    from relay.events import GroupEvent
    from relay.settings import Settings

PREFIX = "enc:v1:"
SETTING = "RELAY_ENCRYPTION_KEYS"
KEY_BYTES = 32
NONCE_BYTES = 12
EVENT_CLEAR = ("id", "source", "type")  # an event's fields kept readable, with the group id


class Unreadable(RelayError):
    """A sealed value that cannot be opened; ``str()`` says why, for people."""

    def __init__(self, reason: str, key_id: str) -> None:
        self.reason = reason
        self.key_id = key_id
        super().__init__(reason)


class UnknownDataKey(Unreadable):
    """Sealed with a key that ``RELAY_ENCRYPTION_KEYS`` does not (or no longer) hold."""

    def __init__(self, key_id: str, *, configured: bool) -> None:
        reason = (
            f"sealed with key {key_id}, which {SETTING} no longer holds"
            if configured
            else f"sealed with key {key_id}, but {SETTING} is not set"
        )
        super().__init__(reason, key_id)


class DamagedSeal(Unreadable):
    """The key is known but the value does not authenticate: altered, cut or moved."""

    def __init__(self, key_id: str) -> None:
        super().__init__(
            f"sealed with key {key_id}, but it does not authenticate (altered or damaged)", key_id
        )


def key_id(secret: bytes) -> str:
    """A key's public name: 8 hex digits of a SHA-256 over it, stable across processes."""
    return hashlib.sha256(b"group-relay data key\0" + secret).hexdigest()[:8]


def new_key() -> str:
    """A fresh key as ``RELAY_ENCRYPTION_KEYS`` takes it: 32 random bytes, URL-safe base64."""
    return base64.urlsafe_b64encode(os.urandom(KEY_BYTES)).decode()


@dataclass(frozen=True)
class DataKey:
    id: str
    secret: bytes = field(repr=False)
    aead: AESGCMSIV = field(repr=False, compare=False)

    @classmethod
    def of(cls, secret: bytes) -> DataKey:
        return cls(key_id(secret), secret, AESGCMSIV(secret))


def parse_keys(text: str | None) -> tuple[DataKey, ...]:
    """The keys of a ``RELAY_ENCRYPTION_KEYS`` value, newest first. A problem names the
    key by its position, never its value: the message may end up in a log."""
    items = [item.strip() for item in (text or "").split(",")]
    if not any(items):
        return ()
    found: list[DataKey] = []
    for n, item in enumerate(items, start=1):
        try:
            secret = base64.urlsafe_b64decode(item + "=" * (-len(item) % 4))
        except (binascii.Error, ValueError):
            secret = b""
        if len(secret) != KEY_BYTES:
            raise ValueError(
                f"key {n} of {len(items)} is not {KEY_BYTES} bytes in URL-safe base64 "
                "(make one with `relay keys new-data-key`)"
            )
        try:
            key = DataKey.of(secret)
        except UnsupportedAlgorithm:
            raise ValueError(
                "this build of the cryptography package lacks AES-GCM-SIV (it needs "
                "OpenSSL 3.2 or later; the PyPI wheels have it)"
            ) from None
        if any(k.id == key.id for k in found):
            raise ValueError(f"key {n} repeats an earlier key ({key.id})")
        found.append(key)
    return tuple(found)


def is_sealed(value: str | bytes | None) -> bool:
    if isinstance(value, bytes):
        return value.startswith(PREFIX.encode())
    return isinstance(value, str) and value.startswith(PREFIX)


def _canonical(clear: Mapping[str, Any]) -> bytes:
    return json.dumps(clear, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _event_clear(event: Mapping[str, Any]) -> dict[str, Any]:
    clear = {name: event[name] for name in EVENT_CLEAR if isinstance(event.get(name), str)}
    group = event.get("group")
    if isinstance(group, Mapping) and isinstance(group.get("id"), str):
        clear["group"] = {"id": group["id"]}
    return clear


class Sealer:
    """Seals with the newest key and opens with whichever key a value names."""

    def __init__(self, keys: Iterable[DataKey] = ()) -> None:
        self.keys = tuple(keys)
        self._by_id = {k.id: k for k in self.keys}

    @classmethod
    def of(cls, settings: Settings) -> Sealer:
        """The settings' keys; a malformed value is a ``ConfigError`` naming the variable."""
        try:
            return cls(parse_keys(settings.encryption_keys))
        except ValueError as exc:
            raise ConfigError([f"{SETTING}: {exc}"]) from None

    @property
    def active(self) -> bool:
        """True when new writes are sealed."""
        return bool(self.keys)

    @property
    def newest(self) -> str | None:
        """The id of the key new writes are sealed with."""
        return self.keys[0].id if self.keys else None

    # any value ------------------------------------------------------------------------
    def seal(self, text: str, where: str) -> str:
        """``text`` sealed for the place ``where`` (record and field); as is without keys."""
        if not self.keys:
            return text
        key = self.keys[0]
        nonce = os.urandom(NONCE_BYTES)
        sealed = key.aead.encrypt(nonce, text.encode(), where.encode())
        return f"{PREFIX}{key.id}:{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def open(self, value: str, where: str) -> str:
        """The text of a value sealed for ``where``; a plain value as is."""
        if not value.startswith(PREFIX):
            return value
        kid, _, body = value[len(PREFIX) :].partition(":")
        key = self._by_id.get(kid)
        if key is None:
            raise UnknownDataKey(kid, configured=self.active)
        try:
            raw = base64.urlsafe_b64decode(body)
            return key.aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], where.encode()).decode()
        except (binascii.Error, ValueError, InvalidTag):
            raise DamagedSeal(kid) from None

    def shown(self, value: str, where: str) -> str:
        """``open`` for people: an unreadable value becomes a bracketed note of why."""
        try:
            return self.open(value, where)
        except Unreadable as exc:
            return f"[{exc}]"

    def sealed_with(self, value: str) -> str | None:
        """The id of the key a value (or an event's stored JSON) is sealed with; ``None``
        for a plain one."""
        if value.startswith(PREFIX):
            return value[len(PREFIX) :].partition(":")[0]
        envelope = _envelope(value)
        return None if envelope is None else self.sealed_with(envelope[1])

    # events ---------------------------------------------------------------------------
    def seal_event(self, event_json: str, event: GroupEvent | None = None) -> str:
        """The event's JSON as stored: sealed whole, its filter fields beside it in the
        clear. ``event`` spares parsing the JSON again for them. Already sealed (a dead
        letter's copy of a stored event) or no keys: as is."""
        if not self.keys or _envelope(event_json) is not None:
            return event_json
        if event is not None:
            group = {"id": event.group.id} if event.group is not None else None
            clear = _event_clear({"id": event.id, "source": event.source, "type": event.type})
            clear.update({"group": group} if group else {})
        else:
            try:
                parsed = json.loads(event_json)
            except ValueError:
                parsed = None
            clear = _event_clear(parsed) if isinstance(parsed, dict) else {}
        sealed = self.seal(event_json, "event\n" + _canonical(clear).decode())
        return json.dumps({**clear, "sealed": sealed}, ensure_ascii=False)

    def open_event(self, stored: str) -> str:
        """The event's JSON from its stored form; plain JSON as is."""
        envelope = _envelope(stored)
        if envelope is None:
            return stored
        clear, sealed = envelope
        return self.open(sealed, "event\n" + _canonical(clear).decode())

    def shown_event(self, stored: str) -> tuple[str, str | None]:
        """(the event's JSON, ``None``), or for an event that does not open its clear
        fields with the reason as its ``text``, and the reason."""
        try:
            return self.open_event(stored), None
        except Unreadable as exc:
            envelope = _envelope(stored)
            clear = envelope[0] if envelope else {}
            return json.dumps({**clear, "text": f"[{exc}]"}, ensure_ascii=False), str(exc)

    # delivery and attempt records ----------------------------------------------------
    def seal_fields(self, delivery_id: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        """A delivery hash's fields as stored: the event copy and each non-empty field of
        ``DELIVERY_FIELDS`` sealed, the rest (ids, statuses, times) as they are."""
        if not self.keys:
            return dict(fields)
        stored = dict(fields)
        for name in DELIVERY_FIELDS:
            value = stored.get(name)
            if isinstance(value, str) and value and not is_sealed(value):
                stored[name] = self.seal(value, delivery_field(delivery_id, name))
        if isinstance(stored.get("event"), str):
            stored["event"] = self.seal_event(stored["event"])
        return stored

    def open_fields(
        self, delivery_id: str, fields: Mapping[str, str], *, strict: bool = False
    ) -> dict[str, str]:
        """A delivery hash's fields opened. Unreadable ones become a note of why (the
        event copy: its clear fields with the note as text), except that with ``strict``
        (a worker about to deliver) unreadable variables raise ``Unreadable``."""
        opened = dict(fields)
        for name in DELIVERY_FIELDS:
            value = opened.get(name)
            if value is not None and value.startswith(PREFIX):
                where = delivery_field(delivery_id, name)
                strict_here = strict and name == "vars"
                opened[name] = self.open(value, where) if strict_here else self.shown(value, where)
        event = opened.get("event")
        if event is not None:
            opened["event"] = self.shown_event(event)[0]
        return opened

    def seal_attempt(self, delivery_id: str, attempt: Mapping[str, Any]) -> dict[str, Any]:
        """An attempt record with the target's answer and the error sealed."""
        if not self.keys:
            return dict(attempt)
        return {
            name: self.seal(value, attempt_field(delivery_id, name))
            if name in ATTEMPT_FIELDS and isinstance(value, str) and value
            else value
            for name, value in attempt.items()
        }

    def open_attempt(self, delivery_id: str, attempt: Mapping[str, Any]) -> dict[str, Any]:
        """An attempt record as people read it (unreadable parts: a note of why)."""
        return {
            name: self.shown(value, attempt_field(delivery_id, name))
            if name in ATTEMPT_FIELDS and isinstance(value, str)
            else value
            for name, value in attempt.items()
        }


DELIVERY_FIELDS = ("last_error", "vars", "captured")
"""The delivery hash's fields that may quote what people wrote or a target answered
(besides ``event``, the dead letter's copy of the event, sealed as an event)."""
ATTEMPT_FIELDS = ("response", "error")
"""The fields of an attempt record that quote the target's answer."""


def delivery_field(delivery_id: str, name: str) -> str:
    """Where a delivery field's sealed value belongs (its associated data)."""
    return f"delivery:{delivery_id}:{name}"


def attempt_field(delivery_id: str, name: str) -> str:
    return f"attempts:{delivery_id}:{name}"


def _envelope(stored: str) -> tuple[dict[str, Any], str] | None:
    """(clear fields, sealed value) of an event's stored JSON, or ``None`` if it is plain.
    A plain event never has a ``sealed`` field (``GroupEvent`` forbids extra fields)."""
    if '"sealed": "enc:' not in stored:  # the cheap test first: most reads are of plain JSON
        return None
    try:
        parsed = json.loads(stored)
    except ValueError:
        return None
    if not isinstance(parsed, dict) or not is_sealed(parsed.get("sealed")):
        return None
    sealed = parsed.pop("sealed")
    return parsed, sealed


PLAIN = Sealer()
"""Seals nothing, opens only plain text: the relay without ``RELAY_ENCRYPTION_KEYS``."""
