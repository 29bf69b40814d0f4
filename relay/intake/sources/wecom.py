"""``wecom``: WeCom (企业微信) app callbacks, sealed with WXBizMsgCrypt.

WeCom signs ``hex(SHA1(sorted([token, timestamp, nonce, Encrypt])))`` into the query
parameter ``msg_signature`` and encrypts the message under the EncodingAESKey for one
ReceiveId (the corp id; a suite id for third-party apps; ``""`` for 智能机器人 bots).
The URL check is a GET whose ``echostr`` is answered with its plaintext; events are
POSTs of an XML (or JSON) envelope around ``Encrypt``, acknowledged with an empty
200 (WeCom retries three times when no answer comes within 5 s). The URL check is
signed exactly like an event, so it gets the same time window and answers only a
plaintext shaped like an echostr: otherwise a captured POST replayed as a GET would
have the relay decrypt the message for anyone.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from typing import ClassVar
from urllib.parse import urlencode
from xml.sax.saxutils import escape

from pydantic import ConfigDict, Field, field_validator

from relay.config.units import Duration
from relay.errors import BadRequest, Unauthorized
from relay.intake.sources.base import (
    BaseSource,
    InboundRequest,
    Parsed,
    Reply,
    SignedRequest,
    SourceOptions,
)
from relay.intake.sources.msgcrypt import (
    CryptError,
    MsgCrypt,
    ReceiverMismatch,
    decode_aes_key,
    signature,
    signature_matches,
)
from relay.intake.sources.wecom_payloads import dedupe_key, read_envelope, read_message, to_event

SAMPLE_AGENT_ID = "1000002"
ECHOSTR = re.compile(rb"[0-9A-Za-z]{1,128}")
"""What an echostr decrypts to: a short random string of digits and letters (WeCom's
own samples: ``1288432023552776189``); never XML or JSON, so never a sealed message."""
SAMPLE_TEXT = "Deploy finished: relay is live"


class WecomOptions(SourceOptions):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    token: str = Field(min_length=1, repr=False, description="The callback Token.")
    encoding_aes_key: str = Field(repr=False, description="The 43-character EncodingAESKey.")
    corp_id: str = Field(
        description="ReceiveId: the corp id (suite id for third-party apps, '' for bots)."
    )
    tolerance: Duration = Field(300, gt=0, description="Allowed clock skew of events.")
    corp_secret: str | None = Field(
        None, min_length=1, repr=False, description="The app's Secret, to fetch media by id."
    )
    api_base: str = Field(
        "https://qyapi.weixin.qq.com",
        pattern=r"^https?://[^\s/?#@]+(/[^\s?#]*)?$",
        description="WeCom's server API.",
    )
    allow_private: bool = Field(False, description="Let file fetches reach a private address.")
    range_chunk: int = Field(
        20 * 1024 * 1024, ge=1024, le=20 * 1024 * 1024, description="Bytes per Range request."
    )

    @field_validator("encoding_aes_key")
    @classmethod
    def _key(cls, value: str) -> str:
        decode_aes_key(value)  # its ValueError names what is wrong with the key
        return value


class WecomSource(BaseSource):
    kind: ClassVar[str] = "wecom"
    Options = WecomOptions
    # WeCom retries within seconds; a day also outlasts the replay window many times over.
    default_dedupe_ttl: ClassVar[float] = 86400

    def __init__(self, config: object) -> None:
        super().__init__(config)  # type: ignore[arg-type]
        opts: WecomOptions = self.options
        self.crypt = MsgCrypt(opts.encoding_aes_key, opts.corp_id)

    # -- verification ------------------------------------------------------------------

    def _query(self, request: InboundRequest) -> tuple[str, str, str]:
        names = ("msg_signature", "timestamp", "nonce")
        sig, stamp, nonce = (request.arg(n) or "" for n in names)
        missing = [n for n, v in zip(names, (sig, stamp, nonce), strict=True) if not v]
        if missing:
            raise Unauthorized(
                f"missing query parameter {', '.join(missing)}", code="missing_signature"
            )
        return sig, stamp, nonce

    def _matches(self, sig: str, stamp: str, nonce: str, encrypt: str) -> bool:
        try:
            return signature_matches(sig, self.options.token, stamp, nonce, encrypt)
        except UnicodeError:  # a lone surrogate cannot be hashed, nor can it be signed
            return False

    def _check_signature(self, sig: str, stamp: str, nonce: str, encrypt: str) -> None:
        if not self._matches(sig, stamp, nonce, encrypt):
            raise Unauthorized("msg_signature does not match the token", code="invalid_signature")

    def _check_time(self, stamp: str) -> None:
        if not (stamp.isascii() and stamp.isdigit()) or len(stamp) > 12:
            raise Unauthorized("timestamp is not a Unix time in seconds", code="invalid_timestamp")
        skew = time.time() - int(stamp)
        tolerance: float = self.options.tolerance
        if abs(skew) > tolerance:
            raise Unauthorized(
                f"timestamp is {abs(int(skew))}s {'old' if skew > 0 else 'ahead'}; "
                f"the window is ±{tolerance:g}s",
                code="stale_timestamp",
            )

    def _open(self, encrypted: str) -> bytes:
        """Decrypt; a message for another ReceiveId is 401, undecryptable bytes 400."""
        try:
            return self.crypt.decrypt(encrypted)
        except ReceiverMismatch:
            raise Unauthorized(
                "the message is sealed for another corp id (ReceiveId)", code="corp_id_mismatch"
            ) from None
        except CryptError as exc:
            raise BadRequest(f"cannot decrypt: {exc}", code="undecryptable") from None

    def handshake(self, request: InboundRequest) -> Reply | None:
        """The URL check: GET with ``echostr``, answered with its bare plaintext.

        It is signed like an event, so it gets the event's time window, and only a
        plaintext shaped like an echostr is answered: a captured POST's ``Encrypt`` sent
        as a GET must not come back decrypted. A ``+`` sent unencoded arrives as a space
        (base64 has no spaces), so if the value as received does not verify, it is
        tried once more with ``+`` back.
        """
        echostr = request.arg("echostr") if request.method == "GET" else None
        if echostr is None:
            return None
        sig, stamp, nonce = self._query(request)
        self._check_time(stamp)
        restored = echostr.replace(" ", "+")
        if restored != echostr and not self._matches(sig, stamp, nonce, echostr):
            echostr = restored
        self._check_signature(sig, stamp, nonce, echostr)
        plain = self._open(echostr)
        if ECHOSTR.fullmatch(plain) is None:
            raise BadRequest(
                "echostr does not decrypt to a URL-check string (1-128 letters and digits); "
                "a sealed message is not answered in clear",
                code="invalid_echostr",
            )
        return Reply(200, plain, content_type="text/plain")

    def verify(self, request: InboundRequest) -> None:
        sig, stamp, nonce = self._query(request)
        self._check_time(stamp)
        self._check_signature(sig, stamp, nonce, read_envelope(request))

    # -- events ------------------------------------------------------------------------

    def parse(self, request: InboundRequest) -> Parsed:
        """Only the decrypted message is used: the envelope's ToUserName/AgentID are unsigned."""
        message = read_message(self._open(read_envelope(request)))
        return Parsed(to_event(self.config.id, message), dedupe_key(message))

    def reply(self, request: InboundRequest, event_id: str, *, duplicate: bool) -> Reply:
        """WeCom wants an empty 200 (anything else may be read as a passive reply)."""
        return Reply(200, b"", content_type="text/plain", headers={"X-Relay-Event-Id": event_id})

    def sample(self, body: bytes | None = None) -> SignedRequest:
        """``body`` (or a sample text message) encrypted, wrapped and signed like WeCom."""
        opts: WecomOptions = self.options
        message = body if body is not None else self._sample_message()
        encrypt = self.crypt.encrypt(message)
        stamp, nonce = str(int(time.time())), str(secrets.randbelow(10**10))
        query = {
            "msg_signature": signature(opts.token, stamp, nonce, encrypt),
            "timestamp": stamp,
            "nonce": nonce,
        }
        if message.lstrip()[:1] == b"{":
            envelope = json.dumps({"tousername": opts.corp_id, "encrypt": encrypt}).encode()
            content_type = "application/json"
        else:
            envelope = (
                f"<xml><ToUserName>{escape(opts.corp_id)}</ToUserName>"
                f"<Encrypt><![CDATA[{encrypt}]]></Encrypt>"
                f"<AgentID><![CDATA[{SAMPLE_AGENT_ID}]]></AgentID></xml>"
            ).encode()
            content_type = "text/xml"
        return SignedRequest(
            headers={"content-type": content_type},
            body=envelope,
            path_suffix="?" + urlencode(query),
        )

    def _sample_message(self) -> bytes:
        """A text message as a member sends it to the app, with a fresh MsgId."""
        return (
            f"<xml><ToUserName>{escape(self.options.corp_id)}</ToUserName>"
            "<FromUserName><![CDATA[ada]]></FromUserName>"
            f"<CreateTime>{int(time.time())}</CreateTime>"
            "<MsgType><![CDATA[text]]></MsgType>"
            f"<Content><![CDATA[{SAMPLE_TEXT}]]></Content>"
            f"<MsgId>{secrets.randbits(63)}</MsgId>"
            f"<AgentID>{SAMPLE_AGENT_ID}</AgentID></xml>"
        ).encode()
