"""``dingtalk_events``: DingTalk event subscription, HTTP push (encrypted).

DingTalk POSTs ``{"encrypt": ...}`` with ``msg_signature``, ``timestamp`` and ``nonce``
in the query (older pushes: ``signature``, ``timeStamp``). The signature is
``hex(SHA1(sorted(token, timestamp, nonce, encrypt)))``; the message inside is
AES-256-CBC sealed for one receiver id, the ``owner_key`` (the app key for an internal
app's event subscription, the corp id for legacy registered callbacks, the suite key
for ISV apps). Every answer, the ``check_url`` handshake included, is the same
encrypted ``"success"`` map, or DingTalk counts the push as failed.

DingTalk documents no replay window and not whether a retry is signed afresh, so the
default window, ``tolerance`` (3 days), is DingTalk's retry horizon: a late retry is
never refused, a push captured days ago is. Resends inside it are dropped by the
event's ``eventId`` (else by a hash of the decrypted text), remembered a day longer.

To-do (待办) events become ``task.*`` events about the ``taskId`` they name; they say
only which to-do was created, changed or deleted, not what changed or by whom.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import string
import time
import uuid
from typing import Any, ClassVar
from urllib.parse import urlencode

from pydantic import ConfigDict, Field, field_validator

from relay.config.units import Duration
from relay.errors import BadRequest, Unauthorized
from relay.events import GroupEvent, Party, TaskChange
from relay.intake.sources.base import (
    BaseSource,
    InboundRequest,
    Parsed,
    Reply,
    SignedRequest,
    SourceOptions,
)
from relay.intake.sources.dingtalk_payloads import (
    build_event,
    from_ms,
    ident,
    json_object,
    parties,
    party,
    pick,
)
from relay.intake.sources.generic_payloads import read_json
from relay.intake.sources.msgcrypt import (
    CryptError,
    MsgCrypt,
    ReceiverMismatch,
    decode_aes_key,
    signature,
    signature_matches,
)
from relay.intake.sources.task_payloads import by_relay_account, task_event

HANDSHAKES = frozenset({"check_url", "check_create_suite_url", "check_update_suite_url"})
MEMBER_EVENTS = {
    "chat_add_member": "member.joined",
    "chat_remove_member": "member.left",
    "chat_quit": "member.left",  # the member who left is the operator
}
GROUP_EVENTS = frozenset({"chat_update_title", "chat_update_owner", "chat_disband"})
TODO_EVENTS = {  # type, status: an update does not say whether the to-do was done
    "todo_task_create": ("task.created", None),
    "todo_task_update": ("task.updated", None),
    "todo_task_delete": ("task.updated", "deleted"),
}
_NONCE_CHARS = string.ascii_letters + string.digits
RETRY_HORIZON = 3 * 86400.0
"""DingTalk redelivers a failed push for up to about 3 days."""


class DingTalkEventsOptions(SourceOptions):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    token: str = Field(min_length=1, repr=False, description="The subscription's Token.")
    aes_key: str = Field(repr=False, description="The 43-character aes_key (EncodingAESKey).")
    owner_key: str = Field(min_length=1, description="App key, corp id or suite key.")
    tolerance: Duration = Field(
        RETRY_HORIZON, gt=0, description="Refuse timestamps further off than this, either way."
    )
    relay_accounts: list[str] = Field(
        default_factory=list,
        description="unionIds the relay's to-do target acts as: a to-do event whose "
        "operatorUnionId is one of them is flagged by_relay.",
    )

    @field_validator("aes_key")
    @classmethod
    def _aes_key(cls, value: str) -> str:
        decode_aes_key(value)  # ValueError says what is wrong, not the value
        return value


class DingTalkEventsSource(BaseSource):
    kind: ClassVar[str] = "dingtalk_events"
    Options = DingTalkEventsOptions
    # Longer than the default window, so a replay inside it is always a known duplicate.
    default_dedupe_ttl: ClassVar[float] = RETRY_HORIZON + 86400

    def __init__(self, config: object) -> None:
        super().__init__(config)  # type: ignore[arg-type]
        opts: DingTalkEventsOptions = self.options
        self.crypt = MsgCrypt(opts.aes_key, opts.owner_key)

    def _query(self, request: InboundRequest) -> tuple[str, str, str]:
        """``(signature, timestamp, nonce)`` from the query; 401 if missing or malformed."""
        sig = request.arg("msg_signature") or request.arg("signature") or ""
        stamp = request.arg("timestamp") or request.arg("timeStamp") or ""
        nonce = request.arg("nonce") or ""
        missing = [
            name
            for name, value in (("msg_signature", sig), ("timestamp", stamp), ("nonce", nonce))
            if not value
        ]
        if missing:
            raise Unauthorized(
                f"missing query parameter {', '.join(missing)}", code="missing_signature"
            )
        if not (stamp.isascii() and stamp.isdigit()) or len(stamp) > 16:
            raise Unauthorized(
                "timestamp is not a Unix time in milliseconds", code="invalid_timestamp"
            )
        if not (sig.isascii() and nonce.isascii()) or len(nonce) > 256:
            raise Unauthorized("msg_signature or nonce is malformed", code="invalid_signature")
        return sig, stamp, nonce

    def _check_time(self, stamp: str) -> None:
        tolerance: float = self.options.tolerance
        sent = int(stamp) / 1000 if len(stamp) > 11 else int(stamp)  # ms; seconds tolerated
        skew = time.time() - sent
        if abs(skew) > tolerance:
            raise Unauthorized(
                f"timestamp is {abs(int(skew))}s {'old' if skew > 0 else 'ahead'}; "
                f"the window is ±{tolerance:g}s",
                code="stale_timestamp",
            )

    @staticmethod
    def _encrypted(request: InboundRequest) -> str:
        """The body's ``encrypt`` value (415/400 if the body is not that JSON)."""
        body = read_json(request)
        value = body.get("encrypt") if isinstance(body, dict) else None
        if not isinstance(value, str) or not value:
            raise BadRequest('body is not {"encrypt": "<base64>"}', code="invalid_body")
        if not value.isascii():
            raise BadRequest("encrypt is not base64", code="undecryptable")
        return value

    def verify(self, request: InboundRequest) -> None:
        sig, stamp, nonce = self._query(request)
        self._check_time(stamp)
        encrypted = self._encrypted(request)
        if not signature_matches(sig, self.options.token, stamp, nonce, encrypted):
            raise Unauthorized(
                "msg_signature does not match the token and the message",
                code="invalid_signature",
            )

    def _open(self, request: InboundRequest) -> tuple[bytes, dict[str, Any]]:
        """The decrypted message and its JSON; 401 if sealed for another owner, else 400."""
        try:
            plain = self.crypt.decrypt(self._encrypted(request))
        except ReceiverMismatch:
            raise Unauthorized(
                "the message is sealed for another owner_key (app key, corp id or suite key)",
                code="invalid_owner_key",
            ) from None
        except CryptError as exc:
            raise BadRequest(f"encrypt cannot be decrypted: {exc}", code="undecryptable") from None
        return plain, json_object(plain, "the decrypted message")

    def handshake(self, request: InboundRequest) -> Reply | None:
        """Answer ``check_url`` (verified first); any other event goes on to ``parse``."""
        if request.method != "POST":
            return None
        self.verify(request)
        _, message = self._open(request)
        if event_type_of(message) in HANDSHAKES:
            return self._success()
        return None

    def parse(self, request: InboundRequest) -> Parsed:
        plain, message = self._open(request)
        accounts = self.options.relay_accounts
        event = todo_event(self.config.id, message, accounts) or chat_event(self.config.id, message)
        return Parsed(event, dedupe_key(message, plain))

    def reply(self, request: InboundRequest, event_id: str, *, duplicate: bool) -> Reply:
        """The encrypted success map for every event, resends too; our id rides in headers."""
        headers = {"X-Relay-Event-Id": event_id}
        if duplicate:
            headers["X-Relay-Duplicate"] = "true"
        return self._success(headers)

    def _success(self, headers: dict[str, str] | None = None) -> Reply:
        stamp = str(int(time.time() * 1000))
        nonce = "".join(secrets.choice(_NONCE_CHARS) for _ in range(16))
        encrypted = self.crypt.encrypt(b"success")
        answer = {
            "msg_signature": signature(self.options.token, stamp, nonce, encrypted),
            "timeStamp": stamp,
            "nonce": nonce,
            "encrypt": encrypted,
        }
        return Reply(200, json.dumps(answer).encode(), headers=headers or {})

    def sample(self, body: bytes | None = None) -> SignedRequest:
        """``body`` is the plaintext event; it is sealed and signed as DingTalk would."""
        now = int(time.time() * 1000)
        plain = body if body is not None else json.dumps(sample_event(now)).encode()
        encrypted = self.crypt.encrypt(plain)
        stamp = str(now)
        nonce = "".join(secrets.choice(_NONCE_CHARS) for _ in range(8))
        query = {
            "msg_signature": signature(self.options.token, stamp, nonce, encrypted),
            "timestamp": stamp,
            "nonce": nonce,
        }
        return SignedRequest(
            headers={"content-type": "application/json"},
            body=json.dumps({"encrypt": encrypted}).encode(),
            path_suffix="?" + urlencode(query),
        )


def sample_event(now_ms: int) -> dict[str, Any]:
    """A ``chat_add_member`` push as an internal app's HTTP subscription receives it."""
    return {
        "EventType": "chat_add_member",
        "EventTime": now_ms,
        "CorpId": "dingsamplecorp",
        "BizId": str(now_ms),
        "eventId": uuid.uuid4().hex,
        "timeStamp": now_ms,
        "unionId": ["sampleUnionIdOfNewMember"],
        "chatId": "chat0123456789abcdef0123456789abcdef",
        "corpId": "dingsamplecorp",
        "operatorUnionId": "sampleUnionIdOfOperator",
        "eventType": "chat_add_member",
        "userId": ["user456"],
        "openConversationId": "cidSampleGroupConversation==",
        "operator": "manager4220",
    }


def event_type_of(message: dict[str, Any]) -> str | None:
    """``EventType`` (HTTP push, registered callbacks) or ``eventType``, if a string."""
    kind = pick(message, "eventType")
    return kind if isinstance(kind, str) else None


def dedupe_key(message: dict[str, Any], plain: bytes) -> str:
    """The push's ``eventId``; pushes without one are deduped on their exact plaintext."""
    event_id = ident(pick(message, "eventId"))
    if event_id is not None:
        return event_id
    return "sha256:" + hashlib.sha256(plain).hexdigest()


def chat_event(source_id: str, message: dict[str, Any]) -> GroupEvent:
    """Map a group (chat) event; other event types become ``custom`` with the same fields."""
    kind = event_type_of(message)
    operator = party(pick(message, "operator"))
    event_type = "custom"
    mentions: list[Party] = []
    if kind in MEMBER_EVENTS:
        event_type = MEMBER_EVENTS[kind]
        if kind == "chat_quit":
            mentions = [operator] if operator else []
        else:
            mentions = parties(pick(message, "userId")) or parties(pick(message, "unionId"))
    elif kind in GROUP_EVENTS:
        event_type = "group.updated"
    title = pick(message, "title") if kind == "chat_update_title" else None
    group_id = ident(pick(message, "openConversationId")) or pick(message, "chatId")
    occurred = from_ms(pick(message, "timeStamp")) or from_ms(pick(message, "eventTime"))
    return build_event(
        source_id,
        type=event_type,
        group=party(group_id, title),
        sender=operator,
        mentions=mentions,
        raw=message,
        **({"occurred_at": occurred} if occurred else {}),
    )


def todo_event(
    source_id: str, message: dict[str, Any], relay_accounts: list[str]
) -> GroupEvent | None:
    """A ``task.*`` event for a to-do event naming its ``taskId``, else ``None``.

    ``key`` and ``id`` are the ``taskId``, what the ``dingtalk_todo`` target records.
    ``UnionIdList`` names everyone on the to-do (creator, executors, participants), not
    who acted, so it is left in ``raw``; an ``operatorUnionId``, if one is ever sent, is
    the actor.
    """
    mapping = TODO_EVENTS.get(event_type_of(message) or "")
    task_id = ident(pick(message, "taskId"))
    if mapping is None or task_id is None:
        return None
    kind, status = mapping
    actor = party(pick(message, "operatorUnionId"))
    change = TaskChange(
        tool="dingtalk_todo",
        key=task_id,
        id=task_id,
        status=status,
        actor=actor,
        changes=["deleted"] if status == "deleted" else [],
        by_relay=by_relay_account(actor, relay_accounts),
    )
    occurred = from_ms(pick(message, "eventTime"))
    return task_event(
        source_id=source_id, type=kind, change=change, occurred_at=occurred, raw=message
    )
