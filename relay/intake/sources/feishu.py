"""``feishu``: Feishu / Lark event subscriptions in webhook mode (v2 and v1 schemas).

Verification follows the Lark SDK (larksuite/oapi-sdk-python:
``lark_oapi/event/dispatcher_handler.py``, ``lark_oapi/core/utils/decryptor.py``):

- A body ``{"encrypt": base64(iv[16] ‖ AES-256-CBC(PKCS7(json)))}`` is opened with
  ``key = SHA-256(encrypt_key)``.
- The Verification Token inside (``header.token`` in v2, ``token`` in v1 and in
  ``url_verification``) must match, compared in constant time.
- With an Encrypt Key, events must carry ``X-Lark-Signature = hex(SHA-256(timestamp +
  nonce + encrypt_key + raw body))``: a plain SHA-256, not an HMAC, over the raw
  (still encrypted) bytes. The SDK checks no time window; this source also refuses a
  ``X-Lark-Request-Timestamp`` outside ``tolerance``, so a captured request cannot be
  replayed after the dedupe key has expired.
- ``url_verification`` is answered with its challenge after the token check. The SDK
  does not require the signature on it; when the headers are sent they are checked.

Feishu wants HTTP 200 within 3 s, and retries for about 7.1 h (15 s, 5 min, 1 h, 6 h),
so ``event_id`` (v2) / ``uuid`` (v1) is remembered for 24 h by default.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import time
import uuid
from typing import Any, ClassVar

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from pydantic import ConfigDict, Field
from pydantic_core import PydanticSerializationError

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
from relay.intake.sources.feishu_payloads import Context, app_id_of, event_type, is_v2, to_event
from relay.intake.sources.generic_payloads import read_json
from relay.intake.sources.msgcrypt import CryptError
from relay.redact import MASK

TIMESTAMP_HEADER = "X-Lark-Request-Timestamp"
NONCE_HEADER = "X-Lark-Request-Nonce"
SIGNATURE_HEADER = "X-Lark-Signature"
SIGNED_BY = (TIMESTAMP_HEADER, NONCE_HEADER, SIGNATURE_HEADER)
MAX_EVENT_ID = 256
_JSON = {"content-type": ["application/json"]}


def aes_key(encrypt_key: str) -> bytes:
    """The AES-256 key: SHA-256 of the Encrypt Key as configured on the platform."""
    return hashlib.sha256(encrypt_key.encode("utf-8")).digest()


def encrypt(encrypt_key: str, plaintext: bytes, *, iv: bytes | None = None) -> str:
    """``base64(iv ‖ AES-256-CBC(PKCS7(plaintext)))``, as Feishu seals a body."""
    iv = os.urandom(16) if iv is None else iv
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plaintext) + padder.finalize()
    encryptor = Cipher(algorithms.AES(aes_key(encrypt_key)), modes.CBC(iv)).encryptor()
    return base64.b64encode(iv + encryptor.update(padded) + encryptor.finalize()).decode()


def decrypt(encrypt_key: str, encrypted: str) -> bytes:
    """The plaintext inside ``encrypted``; ``CryptError`` for bad base64, length or padding."""
    try:
        sealed = base64.b64decode(encrypted.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise CryptError("encrypt is not valid base64") from None
    if len(sealed) < 32 or len(sealed) % 16:
        raise CryptError(f"encrypt holds {len(sealed)} bytes: not an IV plus whole AES blocks")
    decryptor = Cipher(algorithms.AES(aes_key(encrypt_key)), modes.CBC(sealed[:16])).decryptor()
    plain = decryptor.update(sealed[16:]) + decryptor.finalize()
    pad = plain[-1]
    if not 1 <= pad <= 16 or plain[-pad:] != bytes([pad]) * pad:
        raise CryptError("the padding is invalid (wrong encrypt_key or damaged ciphertext)")
    return plain[:-pad]


def signature(timestamp: str, nonce: str, encrypt_key: str, body: bytes) -> str:
    """``X-Lark-Signature``: hex SHA-256 of timestamp + nonce + encrypt_key + raw body."""
    prefix = (timestamp + nonce + encrypt_key).encode("utf-8", "surrogatepass")
    return hashlib.sha256(prefix + body).hexdigest()


def _utf8(text: str) -> bytes:
    """Bytes of text read off the wire or out of JSON, lone surrogates included."""
    return text.encode("utf-8", "surrogatepass")


class FeishuOptions(SourceOptions):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    verification_token: str = Field(
        min_length=1, repr=False, description="Verification Token of the app's event settings."
    )
    encrypt_key: str | None = Field(
        None, min_length=1, repr=False, description="Encrypt Key; enables AES and signatures."
    )
    tolerance: Duration = Field(
        8 * 3600, gt=0, description="Allowed age of signed requests (covers Feishu's retries)."
    )
    bot_open_id: str | None = Field(None, min_length=1, description="The bot's open_id.")
    app_id: str | None = Field(None, min_length=1, description="Refuse events of other apps.")
    app_secret: str | None = Field(
        None, min_length=1, repr=False, description="The app's secret, to fetch message files."
    )
    api_base: str = Field(
        "https://open.feishu.cn",
        pattern=r"^https?://[^\s/?#@]+(/[^\s?#]*)?$",
        description="Lark: https://open.larksuite.com.",
    )
    allow_private: bool = Field(False, description="Let file fetches reach a private address.")
    relay_accounts: list[str] = Field(
        default_factory=list,
        description="open_ids the relay's Feishu Tasks target acts as: a task event whose "
        "operator is one of them is flagged by_relay.",
    )


class FeishuSource(BaseSource):
    kind: ClassVar[str] = "feishu"
    Options = FeishuOptions
    default_dedupe_ttl: ClassVar[float] = 24 * 3600  # Feishu retries for about 7.1 h

    def __init__(self, config: object) -> None:
        super().__init__(config)  # type: ignore[arg-type]
        opts: FeishuOptions = self.options
        self.token = _utf8(opts.verification_token)
        self.encrypt_key = opts.encrypt_key

    # -- the steps the receiver calls ---------------------------------------------------

    def handshake(self, request: InboundRequest) -> Reply | None:
        """Answer ``url_verification`` (plain or encrypted) once its token matches."""
        if request.method != "POST":
            return None
        self._check_signature(request, required=False)
        payload = self._read(request)
        if event_type(payload) != "url_verification":
            return None
        self._check_token(payload)
        challenge = payload.get("challenge")
        if not isinstance(challenge, str) or not challenge:
            raise BadRequest("url_verification carries no challenge", code="invalid_payload")
        return Reply(200, json.dumps({"challenge": challenge}).encode())

    def verify(self, request: InboundRequest) -> None:
        self._check_signature(request, required=self.encrypt_key is not None)
        payload = self._read(request)
        self._check_token(payload)
        self._check_app(payload)

    def parse(self, request: InboundRequest) -> Parsed:
        payload = self._read(request)
        dedupe_key = self._event_id(payload)
        app_id = self.options.app_id or app_id_of(payload)
        context = Context(
            self.config.id,
            self.options.bot_open_id,
            app_id if isinstance(app_id, str) else None,
            tuple(self.options.relay_accounts),
        )
        event = to_event(context, payload, _without_token(payload))
        try:
            event.to_json()
        except PydanticSerializationError as exc:  # lone surrogates, absurd nesting
            raise BadRequest(f"the event cannot be stored: {exc}", code="invalid_payload") from None
        return Parsed(event, dedupe_key)

    def reply(self, request: InboundRequest, event_id: str, *, duplicate: bool) -> Reply:
        """Feishu counts any HTTP 200 as delivered; a resend gets the first event's id."""
        body: dict[str, Any] = {"msg": "success", "event_id": event_id}
        if duplicate:
            body["duplicate"] = True
        return Reply(200, json.dumps(body).encode())

    def sample(self, body: bytes | None = None) -> SignedRequest:
        """``body`` (default: a group text message) sealed and signed as Feishu would."""
        if body is None:
            body = json.dumps(sample_payload(self.options)).encode()
        headers = {"content-type": "application/json; charset=utf-8"}
        if self.encrypt_key is not None:
            body = json.dumps({"encrypt": encrypt(self.encrypt_key, body)}).encode()
            stamp, nonce = str(int(time.time())), uuid.uuid4().hex
            headers[TIMESTAMP_HEADER] = stamp
            headers[NONCE_HEADER] = nonce
            headers[SIGNATURE_HEADER] = signature(stamp, nonce, self.encrypt_key, body)
        return SignedRequest(headers=headers, body=body)

    # -- checks -----------------------------------------------------------------------

    def _check_signature(self, request: InboundRequest, *, required: bool) -> None:
        """With an Encrypt Key: check the signature headers if sent; 401 if required and not."""
        if self.encrypt_key is None:
            return
        stamp = (request.header(TIMESTAMP_HEADER) or "").strip()
        nonce = request.header(NONCE_HEADER) or ""
        received = (request.header(SIGNATURE_HEADER) or "").strip()
        if not (stamp and nonce and received):
            if not required:
                return
            missing = [n for n, v in zip(SIGNED_BY, (stamp, nonce, received), strict=True) if not v]
            raise Unauthorized(f"missing header {', '.join(missing)}", code="missing_signature")
        if not (stamp.isascii() and stamp.isdigit()) or len(stamp) > 12:
            raise Unauthorized(
                f"{TIMESTAMP_HEADER} is not a Unix time in seconds", code="invalid_timestamp"
            )
        skew = time.time() - int(stamp)
        tolerance = self.options.tolerance
        if abs(skew) > tolerance:
            raise Unauthorized(
                f"{TIMESTAMP_HEADER} is {abs(int(skew))}s {'old' if skew > 0 else 'ahead'}; "
                f"the window is ±{tolerance:g}s",
                code="stale_timestamp",
            )
        expected = signature(stamp, nonce, self.encrypt_key, request.body)
        if not hmac.compare_digest(expected.encode(), _utf8(received.lower())):
            raise Unauthorized(
                f"{SIGNATURE_HEADER} does not match the body and the encrypt_key",
                code="invalid_signature",
            )

    def _read(self, request: InboundRequest) -> dict[str, Any]:
        """The JSON payload, decrypted if it came sealed; 415/400 if it is neither."""
        body = read_json(request)
        if isinstance(body, dict) and "encrypt" in body:
            body = self._open(body["encrypt"])
        if not isinstance(body, dict):
            raise BadRequest("the payload is not a JSON object", code="invalid_payload")
        return body

    def _open(self, encrypted: Any) -> Any:
        if not isinstance(encrypted, str):
            raise BadRequest("encrypt is not a string", code="decrypt_failed")
        if self.encrypt_key is None:
            raise BadRequest(
                "the body is encrypted but no encrypt_key is configured for this source",
                code="unexpected_encryption",
            )
        try:
            plain = decrypt(self.encrypt_key, encrypted)
        except CryptError as exc:
            raise BadRequest(str(exc), code="decrypt_failed") from None
        try:
            return read_json(InboundRequest("POST", _JSON, plain))
        except BadRequest as exc:
            raise BadRequest(f"decrypted {exc.detail}", code="decrypt_failed") from None

    def _check_token(self, payload: dict[str, Any]) -> None:
        """v2 carries the token in ``header``; v1 and ``url_verification`` at the top."""
        scope = payload.get("header") if is_v2(payload) else payload
        token = scope.get("token") if isinstance(scope, dict) else None
        if not isinstance(token, str) or not token:
            raise Unauthorized("the payload carries no verification token", code="missing_token")
        if not hmac.compare_digest(_utf8(token), self.token):
            raise Unauthorized(
                "the verification token does not match this source's", code="invalid_token"
            )

    def _check_app(self, payload: dict[str, Any]) -> None:
        """With ``app_id`` set, events of another app are refused (``header``/``event``)."""
        expected = self.options.app_id
        if expected is None:
            return
        got = app_id_of(payload)
        if not isinstance(got, str) or not hmac.compare_digest(_utf8(got), _utf8(expected)):
            raise Unauthorized(
                f"the event is for app {got!r}, not {expected!r}", code="invalid_app_id"
            )

    @staticmethod
    def _event_id(payload: dict[str, Any]) -> str:
        """The dedupe key: ``header.event_id`` in v2, ``uuid`` in v1."""
        if is_v2(payload):
            header = payload.get("header")
            value = header.get("event_id") if isinstance(header, dict) else None
            name = "header.event_id"
        else:
            value, name = payload.get("uuid"), "uuid"
        if not isinstance(value, str) or not value:
            raise BadRequest(
                f"{name} is missing: not a Feishu v2 or v1 event", code="missing_event_id"
            )
        if len(value) > MAX_EVENT_ID:
            raise BadRequest(
                f"{name} is longer than {MAX_EVENT_ID} characters", code="invalid_event_id"
            )
        return value


def _without_token(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload as stored: the verification token is a secret, so it is masked."""
    raw = dict(payload)
    if isinstance(raw.get("token"), str):
        raw["token"] = MASK
    header = raw.get("header")
    if isinstance(header, dict) and isinstance(header.get("token"), str):
        raw["header"] = {**header, "token": MASK}
    return raw


def sample_payload(options: FeishuOptions) -> dict[str, Any]:
    """A v2 ``im.message.receive_v1``: a group text message that @-mentions a user."""
    now_ms = str(int(time.time() * 1000))
    tenant = "2ca1d211f64f6438"
    return {
        "schema": "2.0",
        "header": {
            "event_id": uuid.uuid4().hex,
            "event_type": "im.message.receive_v1",
            "create_time": now_ms,
            "token": options.verification_token,
            "app_id": options.app_id or "cli_a5f2b1c3d4e5f607",
            "tenant_key": tenant,
        },
        "event": {
            "sender": {
                "sender_id": {
                    "union_id": "on_8ed6aa67826108097d9ee143816345",
                    "user_id": "e33ggbyz",
                    "open_id": "ou_84aad35d084aa403a838cf73ee18467",
                },
                "sender_type": "user",
                "tenant_key": tenant,
            },
            "message": {
                "message_id": f"om_{uuid.uuid4().hex}",
                "root_id": "",
                "parent_id": "",
                "create_time": now_ms,
                "update_time": now_ms,
                "chat_id": "oc_5ad11d72b830411d72b836c20",
                "chat_type": "group",
                "message_type": "text",
                "content": json.dumps({"text": "@_user_1 deploy finished: relay is live"}),
                "mentions": [
                    {
                        "key": "@_user_1",
                        "id": {
                            "union_id": "on_2c4b7a8e1d3f5a6b7c8d9e0f1a2b3c4d",
                            "user_id": "f7a2c9de",
                            "open_id": "ou_7d8a6e6df7621556ce0d21922b676706",
                        },
                        "name": "Ada",
                        "tenant_key": tenant,
                    }
                ],
            },
        },
    }
