"""``dingtalk_robot``: messages to a DingTalk enterprise-internal app robot (HTTP mode).

DingTalk signs each callback with two headers, ``timestamp`` (epoch ms) and
``sign = Base64(HMAC-SHA256(appSecret, timestamp + "\\n" + appSecret))``; requests
outside ±``tolerance`` (1 h, DingTalk's own rule) are refused. The signature does not
cover the body, so one (timestamp, sign) pair may carry one message only: intake gets
it as a single-use credential and refuses it with any other ``msgId`` (401
``replayed_signature``), while a resend of the same ``msgId`` is a duplicate. The
dedupe key is ``msgId``. The unsigned body's ``sessionWebhook`` becomes the event's
reply URL only if it points at an origin in ``session_hosts`` (DingTalk's API hosts
over https by default), so a forged body cannot aim a reply target elsewhere.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
import uuid
from typing import Any, ClassVar

from pydantic import ConfigDict, Field, field_validator, model_validator

from relay.config.units import Duration
from relay.errors import Unauthorized, Unprocessable
from relay.events import FileRef, GroupEvent, Party
from relay.intake.sources.base import (
    BaseSource,
    InboundRequest,
    Parsed,
    Reply,
    SignedRequest,
    SourceOptions,
)
from relay.intake.sources.dingtalk_payloads import (
    DEFAULT_ORIGINS,
    MAX_ID,
    SESSION_HOSTS,
    Origin,
    build_event,
    file_ref,
    from_ms,
    ident,
    party,
    session_origin,
    session_reply,
)
from relay.intake.sources.generic_payloads import read_json

MEDIA_TYPES = ("picture", "audio", "video", "file")


def signature(secret: str, timestamp: str) -> str:
    """DingTalk's ``sign`` header for ``timestamp`` under ``secret``."""
    message = f"{timestamp}\n{secret}".encode()
    return base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()


class DingTalkRobotOptions(SourceOptions):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    app_secret: str | None = Field(None, repr=False, description="The app's Client Secret.")
    app_secrets: list[str] = Field(
        default_factory=list, repr=False, description="More secrets, accepted while rotating."
    )
    tolerance: Duration = Field(3600, gt=0, description="Allowed clock skew each way.")
    session_hosts: list[str] = Field(
        default_factory=lambda: list(SESSION_HOSTS),
        description="Where a sessionWebhook may point: a host (https on 443) or an origin.",
    )
    app_key: str | None = Field(
        None, min_length=1, description="The app's Client ID (AppKey), to fetch message files."
    )
    robot_code: str | None = Field(
        None, min_length=1, description="The robot's code; default app_key."
    )
    api_base: str = Field(
        "https://api.dingtalk.com",
        pattern=r"^https?://[^\s/?#@]+(/[^\s?#]*)?$",
        description="DingTalk's v1.0 API.",
    )
    allow_private: bool = Field(False, description="Let file fetches reach a private address.")

    @field_validator("session_hosts")
    @classmethod
    def _session_hosts(cls, value: list[str]) -> list[str]:
        for entry in value:
            session_origin(entry)  # its ValueError names the entry and what is wrong
        return value

    @model_validator(mode="after")
    def _some_secret(self) -> DingTalkRobotOptions:
        if self.app_secret is None and not self.app_secrets:
            raise ValueError("set app_secret (or app_secrets while rotating)")
        for i, secret in enumerate(self.app_secrets):
            if not secret:
                raise ValueError(f"app_secrets[{i}] is empty (is its environment variable set?)")
        if self.app_secret == "":
            raise ValueError("app_secret is empty (is its environment variable set?)")
        return self


class DingTalkRobotSource(BaseSource):
    kind: ClassVar[str] = "dingtalk_robot"
    Options = DingTalkRobotOptions
    # Requests older than the 1 h window are refused anyway; a day covers any resend.
    default_dedupe_ttl: ClassVar[float] = 86400

    def __init__(self, config: object) -> None:
        super().__init__(config)  # type: ignore[arg-type]
        opts: DingTalkRobotOptions = self.options
        self.secrets = ([opts.app_secret] if opts.app_secret else []) + list(opts.app_secrets)
        self.session_origins = frozenset(session_origin(entry) for entry in opts.session_hosts)

    def _signed(self, request: InboundRequest) -> tuple[str, bytes]:
        """The ``timestamp`` header and the digest ``sign`` carries; 401 if malformed."""
        stamp = (request.header("timestamp") or "").strip()
        sign = (request.header("sign") or "").strip()
        missing = [name for name, value in (("timestamp", stamp), ("sign", sign)) if not value]
        if missing:
            raise Unauthorized(f"missing header {', '.join(missing)}", code="missing_signature")
        if not (stamp.isascii() and stamp.isdigit()) or len(stamp) > 16:
            raise Unauthorized(
                "timestamp is not a Unix time in milliseconds", code="invalid_timestamp"
            )
        try:
            if not sign.isascii():
                raise ValueError
            digest = base64.b64decode(sign, validate=True)
        except (ValueError, binascii.Error):
            raise Unauthorized("sign is not base64", code="malformed_signature") from None
        if len(digest) != hashlib.sha256().digest_size:
            raise Unauthorized(
                f"sign carries {len(digest)} bytes; HMAC-SHA256 makes 32",
                code="malformed_signature",
            )
        return stamp, digest

    def verify(self, request: InboundRequest) -> None:
        stamp, digest = self._signed(request)
        tolerance = self.options.tolerance
        skew = time.time() - int(stamp) / 1000
        if abs(skew) > tolerance:
            raise Unauthorized(
                f"timestamp is {abs(int(skew))}s {'old' if skew > 0 else 'ahead'}; "
                f"the window is ±{tolerance:g}s",
                code="stale_timestamp",
            )
        message = f"{stamp}\n".encode()
        matched = False
        for secret in self.secrets:  # no early exit: timing does not reveal which secret
            key = secret.encode()
            expected = hmac.new(key, message + key, hashlib.sha256).digest()
            matched |= hmac.compare_digest(expected, digest)
        if not matched:
            raise Unauthorized("sign matches no configured app secret", code="invalid_signature")

    def parse(self, request: InboundRequest) -> Parsed:
        stamp, digest = self._signed(request)
        body = read_json(request)
        if not isinstance(body, dict):
            raise Unprocessable("body: a DingTalk robot message is a JSON object")
        event = robot_event(self.config.id, body, self.session_origins)
        # The digest, not the header text: base64 has spare bits, so several spellings of
        # one sign decode alike and must count as the same credential.
        credential = hashlib.sha256(stamp.encode() + b"\n" + digest).hexdigest()
        return Parsed(
            event,
            event.message_id,
            single_use=credential,
            single_use_ttl=2 * self.options.tolerance,
        )

    def reply(self, request: InboundRequest, event_id: str, *, duplicate: bool) -> Reply:
        """Always 200 with JSON: DingTalk reads any other status as a failed callback."""
        body: dict[str, Any] = {"event_id": event_id}
        if duplicate:
            body["duplicate"] = True
        return Reply(200, json.dumps(body).encode())

    def sample(self, body: bytes | None = None) -> SignedRequest:
        now = int(time.time() * 1000)
        if body is None:
            body = json.dumps(sample_message(now), ensure_ascii=False).encode()
        stamp = str(now)
        return SignedRequest(
            headers={
                "content-type": "application/json; charset=utf-8",
                "timestamp": stamp,
                "sign": signature(self.secrets[0], stamp),
            },
            body=body,
        )


def sample_message(now_ms: int) -> dict[str, Any]:
    """A group text message @-mentioning the robot, shaped as DingTalk sends it."""
    bot = "$:LWCP_v1:$sampleRobotUserId"
    return {
        "conversationId": "cidSampleGroupConversation==",
        "atUsers": [{"dingtalkId": bot}],
        "chatbotCorpId": "dingsamplecorp",
        "chatbotUserId": bot,
        "msgId": f"msg{uuid.uuid4().hex}",
        "senderNick": "Ada",
        "isAdmin": False,
        "senderStaffId": "manager4220",
        "sessionWebhookExpiredTime": now_ms + 90 * 60 * 1000,
        "createAt": now_ms,
        "senderCorpId": "dingsamplecorp",
        "conversationType": "2",
        "senderId": "$:LWCP_v1:$sampleSenderId",
        "conversationTitle": "Ops",
        "isInAtList": True,
        "sessionWebhook": "https://oapi.dingtalk.com/robot/sendBySession?session=sample",
        "text": {"content": " Deploy finished: relay is live"},
        "robotCode": "dingsamplerobotcode",
        "msgtype": "text",
    }


def robot_event(
    source_id: str, body: dict[str, Any], session_origins: frozenset[Origin] = DEFAULT_ORIGINS
) -> GroupEvent:
    """Map one robot message; ``msgtype`` picks the event type (unknown → ``custom``)."""
    msg_id = ident(body.get("msgId"), MAX_ID)
    if msg_id is None:
        raise Unprocessable("msgId: a robot message needs its msgId (a string of 1-256 chars)")
    msgtype = body.get("msgtype")
    given = body.get("content")
    content: dict[str, Any] = given if isinstance(given, dict) else {}
    event_type = "message.created"
    text: str | None = None
    files: list[FileRef] = []
    if msgtype == "text":
        inner = body.get("text")
        raw_text = inner.get("content") if isinstance(inner, dict) else None
        text = raw_text.strip() if isinstance(raw_text, str) else None
    elif msgtype == "richText":
        text, files = _rich_text(content.get("richText"))
    elif msgtype in MEDIA_TYPES:
        event_type = "file.shared"
        files = [_media(str(msgtype), content, msg_id)]
        recognition = content.get("recognition")  # DingTalk's speech-to-text of audio
        text = recognition if isinstance(recognition, str) and recognition else None
    else:
        event_type = "custom"
    occurred = from_ms(body.get("createAt"))
    return build_event(
        source_id,
        type=event_type,
        group=party(body.get("conversationId"), body.get("conversationTitle")),
        sender=party(
            ident(body.get("senderStaffId")) or body.get("senderId"), body.get("senderNick")
        ),
        text=text,
        mentions=_mentions(body.get("atUsers"), body.get("chatbotUserId")),
        mentions_bot=body.get("isInAtList") is True,
        message_id=msg_id,
        reply=session_reply(
            body.get("sessionWebhook"), body.get("sessionWebhookExpiredTime"), session_origins
        ),
        files=files,
        raw=body,
        **({"occurred_at": occurred} if occurred else {}),
    )


def _rich_text(items: Any) -> tuple[str | None, list[FileRef]]:
    """Text segments joined as sent; pictures become files (their ``downloadCode``)."""
    parts: list[str] = []
    files: list[FileRef] = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        if isinstance(item.get("text"), str):
            parts.append(item["text"])
        elif item.get("type", "picture") == "picture":
            ref = file_ref(None, item.get("downloadCode"), fallback="picture")
            if ref is not None:
                files.append(ref)
    text = "".join(parts).strip()
    return text or None, files


def _media(msgtype: str, content: dict[str, Any], msg_id: str) -> FileRef:
    """The one file of a picture/audio/video/file message; 422 without a download code."""
    mime = None
    video_type = content.get("videoType")
    if msgtype == "video" and isinstance(video_type, str) and video_type.isalnum():
        mime = f"video/{video_type.lower()}"
    ref = file_ref(
        content.get("fileName"), content.get("downloadCode"), fallback=msgtype, mime=mime
    )
    if ref is None:
        raise Unprocessable(f"content.downloadCode: a {msgtype} message {msg_id} needs one")
    return ref


def _mentions(at_users: Any, bot_id: Any) -> list[Party]:
    """@-mentioned people (staff id, else DingTalk id), without the robot itself."""
    found: list[Party] = []
    for user in at_users if isinstance(at_users, list) else []:
        if not isinstance(user, dict) or (bot_id and user.get("dingtalkId") == bot_id):
            continue
        person = party(ident(user.get("staffId")) or user.get("dingtalkId"))
        if person is not None and all(p.id != person.id for p in found):
            found.append(person)
    return found
