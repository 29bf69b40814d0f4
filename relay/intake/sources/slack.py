"""``slack``: the Slack Events API and slash commands, on one request URL.

Slack signs every request: ``X-Slack-Signature: v0=`` + hex HMAC-SHA256 of
``"v0:" + X-Slack-Request-Timestamp + ":" + raw body`` with the app's signing secret,
refused outside ``tolerance`` (5 min). Events arrive as JSON (``url_verification``,
answered here once verified, and ``event_callback``, deduplicated on ``event_id``);
slash commands as a form (deduplicated on ``trigger_id``). Payload mapping lives in
``slack_payloads``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import parse_qs

from pydantic import ConfigDict, Field, model_validator

from relay.config.units import Duration
from relay.errors import BadRequest, IntakeError, Unauthorized
from relay.intake.sources import slack_payloads
from relay.intake.sources.base import (
    BaseSource,
    InboundRequest,
    Parsed,
    Reply,
    SignedRequest,
    SourceOptions,
)
from relay.intake.sources.generic_payloads import read_json

FORM = "application/x-www-form-urlencoded"
_SIGNATURE = re.compile(r"v0=([0-9a-fA-F]{64})")
MAX_FORM_FIELDS = 64
SAMPLE_BOT = "U0RELAYBOT"
SAMPLE_EVENT: dict[str, Any] = {
    "token": "unused-verification-token",
    "team_id": "T0RELAY01",
    "api_app_id": "A0RELAY01",
    "event": {
        "type": "message",
        "channel": "C0OPSROOM",
        "channel_type": "channel",
        "user": "U0ADA0042",
        "text": f"<@{SAMPLE_BOT}> deploy finished, <@U0GRACE07|grace> please check",
        "ts": "",
        "event_ts": "",
    },
    "type": "event_callback",
    "event_id": "",
    "event_time": 0,
}


def signature(secret: str | bytes, timestamp: str, body: bytes) -> str:
    """``v0=`` + hex HMAC-SHA256 over ``v0:{timestamp}:{body}``, as Slack computes it."""
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    payload = b"v0:" + timestamp.encode("ascii") + b":" + body
    return "v0=" + hmac.new(key, payload, hashlib.sha256).hexdigest()


class SlackOptions(SourceOptions):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    signing_secret: str | None = Field(None, repr=False, description="The app's signing secret.")
    signing_secrets: list[str] | None = Field(
        None, repr=False, description="Several signing secrets, to rotate."
    )
    tolerance: Duration = Field(300, gt=0, description="Allowed clock skew each way.")
    bot_user_id: str | None = Field(
        None, pattern=r"^[A-Z0-9]{1,64}$", description="The bot's user id (U…): sets mentions_bot."
    )
    team_id: str | None = Field(
        None, pattern=r"^[A-Z0-9]{1,64}$", description="Refuse requests of any other workspace."
    )
    command_ack: str = Field(
        "Received", max_length=3000, description="Ephemeral answer to a slash command."
    )
    bot_token: str | None = Field(
        None, min_length=1, repr=False, description="xoxb- token with files:read, to fetch files."
    )
    api_base: str = Field(
        "https://slack.com/api",
        pattern=r"^https?://[^\s/?#@]+(/[^\s?#]*)?$",
        description="Slack's Web API.",
    )
    allow_private: bool = Field(False, description="Let file fetches reach a private address.")
    workspace_url: str | None = Field(
        None,
        pattern=r"^https://[A-Za-z0-9-]+\.(slack|enterprise\.slack)\.com/?$",
        description="https://<workspace>.slack.com: events link back to their messages.",
    )

    @model_validator(mode="after")
    def _has_secret(self) -> SlackOptions:
        if self.signing_secret is None and not self.signing_secrets:
            raise ValueError("set signing_secret (or signing_secrets, to rotate)")
        if self.signing_secret == "":
            raise ValueError("signing_secret is empty (is its environment variable set?)")
        for i, secret in enumerate(self.signing_secrets or []):
            if not secret:
                raise ValueError(
                    f"signing_secrets[{i}] is empty (is its environment variable set?)"
                )
        return self

    @property
    def secrets(self) -> list[str]:
        """Every accepted secret; the first signs ``relay send`` samples."""
        first = [self.signing_secret] if self.signing_secret else []
        return first + [s for s in self.signing_secrets or [] if s != self.signing_secret]


def _form(body: bytes) -> dict[str, str]:
    """A urlencoded body as single values; 400 for anything a browser form would not send."""
    try:
        fields = parse_qs(
            body.decode("utf-8"),
            keep_blank_values=True,
            strict_parsing=True,
            errors="strict",
            max_num_fields=MAX_FORM_FIELDS,
        )
    except ValueError as exc:  # includes UnicodeDecodeError
        raise BadRequest(f"body is not a urlencoded form: {exc}", code="invalid_form") from None
    form: dict[str, str] = {}
    for name, values in fields.items():
        if not name:
            raise BadRequest("form field without a name", code="invalid_form")
        if len(values) > 1:
            raise BadRequest(f"form field {name!r} is sent more than once", code="duplicate_field")
        form[name] = values[0]
    return form


class SlackSource(BaseSource):
    kind: ClassVar[str] = "slack"
    Options = SlackOptions
    default_dedupe_ttl: ClassVar[float] = 86400  # Slack retries for ~6 minutes; keep a day

    def __init__(self, config: object) -> None:
        super().__init__(config)  # type: ignore[arg-type]
        self.keys = [s.encode("utf-8") for s in self.options.secrets]

    # -- verification ------------------------------------------------------------------------

    def verify(self, request: InboundRequest) -> None:
        value = (request.header("x-slack-signature") or "").strip()
        stamp = (request.header("x-slack-request-timestamp") or "").strip()
        if not value:
            raise Unauthorized("missing header X-Slack-Signature", code="missing_signature")
        if not stamp:
            raise Unauthorized("missing header X-Slack-Request-Timestamp", code="missing_timestamp")
        if not (stamp.isascii() and stamp.isdigit()) or len(stamp) > 12:
            raise Unauthorized(
                "X-Slack-Request-Timestamp is not a Unix time in seconds", code="invalid_timestamp"
            )
        skew = time.time() - int(stamp)
        if abs(skew) > self.options.tolerance:
            raise Unauthorized(
                f"X-Slack-Request-Timestamp is {abs(int(skew))}s "
                f"{'old' if skew > 0 else 'ahead'}; the window is ±{self.options.tolerance:g}s",
                code="stale_timestamp",
            )
        match = _SIGNATURE.fullmatch(value)
        if not match:
            raise Unauthorized(
                "X-Slack-Signature is not 'v0=' and 64 hex digits", code="malformed_signature"
            )
        received = bytes.fromhex(match.group(1))
        payload = b"v0:" + stamp.encode("ascii") + b":" + request.body
        matched = False
        for key in self.keys:  # no early exit: the time taken does not depend on which key
            expected = hmac.new(key, payload, hashlib.sha256).digest()
            matched |= hmac.compare_digest(expected, received)
        if not matched:
            raise Unauthorized(
                "X-Slack-Signature matches no configured signing secret", code="invalid_signature"
            )

    def _check_team(self, team_id: Any) -> None:
        expected = self.options.team_id
        if expected and team_id != expected:
            raise Unauthorized(
                f"the request is for workspace {team_id!r}, not {expected}", code="wrong_team"
            )

    # -- handshakes ----------------------------------------------------------------------------

    def handshake(self, request: InboundRequest) -> Reply | None:
        """``url_verification`` (signed: verified first) and ``ssl_check`` (unsigned)."""
        if request.method != "POST":
            return None
        media = request.content_type
        if b"url_verification" in request.body and media != FORM:
            try:
                body = read_json(request)
            except IntakeError:
                return None  # parse() reports it, after verification
            if isinstance(body, dict) and body.get("type") == "url_verification":
                self.verify(request)
                challenge = body.get("challenge")
                if not isinstance(challenge, str) or not challenge:
                    raise BadRequest(
                        "url_verification without a challenge", code="missing_challenge"
                    )
                return Reply(200, json.dumps({"challenge": challenge}).encode())
        elif media == FORM and b"ssl_check=" in request.body:
            try:
                form = _form(request.body)
            except IntakeError:
                return None
            if form.get("ssl_check") == "1" and "command" not in form:
                # Slack's certificate probe: nothing to verify or queue (Bolt answers it so).
                return Reply(200, b"", content_type="text/plain")
        return None

    # -- parsing ---------------------------------------------------------------------------------

    def parse(self, request: InboundRequest) -> Parsed:
        if request.content_type == FORM:
            return self._command(request)
        body = read_json(request)  # 415 for any other media type, 400 for bad JSON
        if not isinstance(body, dict) or not isinstance(body.get("type"), str):
            raise BadRequest("not a Slack Events API payload", code="invalid_payload")
        self._check_team(body.get("team_id"))
        body.pop("token", None)  # the deprecated verification token: a credential, not data
        bot = self.options.bot_user_id
        if body["type"] == "url_verification":  # only if its JSON hides the word in escapes
            raise BadRequest("url_verification written oddly", code="invalid_payload")
        if body["type"] == "event_callback":
            event_id = slack_payloads.text_of(body, "event_id")
            if not event_id or len(event_id) > 256:
                raise BadRequest("event_callback without an event_id", code="invalid_payload")
            event = slack_payloads.event_from_callback(
                self.config.id, body, bot_user_id=bot, workspace_url=self.options.workspace_url
            )
            return Parsed(event, event_id)
        key = None
        if body["type"] == "app_rate_limited":
            key = f"app_rate_limited:{body.get('minute_rate_limited')}"[:256]
        elif isinstance(body.get("event_id"), str) and 0 < len(body["event_id"]) <= 256:
            key = body["event_id"]
        return Parsed(slack_payloads.event_from_other(self.config.id, body), key)

    def _command(self, request: InboundRequest) -> Parsed:
        form = _form(request.body)
        command = form.get("command", "")
        if not command.startswith("/"):
            raise BadRequest(
                "a form body must be a slash command (a 'command' starting with '/')",
                code="not_a_command",
            )
        self._check_team(form.get("team_id"))
        form.pop("token", None)
        stamp = request.header("x-slack-request-timestamp") or ""
        sent = datetime.fromtimestamp(int(stamp), UTC) if stamp.isdigit() else datetime.now(UTC)
        event = slack_payloads.event_from_command(
            self.config.id, form, bot_user_id=self.options.bot_user_id, sent=sent
        )
        trigger = form.get("trigger_id", "")
        return Parsed(event, f"trigger:{trigger}" if 0 < len(trigger) <= 240 else None)

    # -- answers ---------------------------------------------------------------------------------

    def refusal_headers(self, error: IntakeError) -> Mapping[str, str]:
        """``X-Slack-No-Retry: 1`` when resending the same request cannot help (a body
        that is not an event, too large, of the wrong type): Slack would otherwise send
        it three more times. A 401 is left to Slack's retries (they succeed once a
        wrong signing secret is corrected), and so are 429 and 503 (they succeed once
        the relay can queue again)."""
        if error.status in (400, 413, 415, 422):
            return {"X-Slack-No-Retry": "1"}
        return {}

    def reply(self, request: InboundRequest, event_id: str, *, duplicate: bool) -> Reply:
        """200 for both (Slack retries anything else); a command gets a message to show."""
        headers = {"X-Relay-Event-Id": event_id}
        if request.content_type == FORM:
            text = self.options.command_ack
            if not text:
                return Reply(200, b"", content_type="text/plain", headers=headers)
            body: dict[str, Any] = {"response_type": "ephemeral", "text": text}
        else:
            body = {"event_id": event_id, **({"duplicate": True} if duplicate else {})}
        return Reply(200, json.dumps(body).encode(), headers=headers)

    def sample(self, body: bytes | None = None) -> SignedRequest:
        """A channel message mentioning the bot, or ``body`` (JSON, else a form) signed."""
        if body is None:
            now = time.time()
            ts = f"{now:.6f}"
            sample = json.loads(json.dumps(SAMPLE_EVENT))
            bot = self.options.bot_user_id or SAMPLE_BOT  # so mentions_bot routes can be tried
            text = sample["event"]["text"].replace(SAMPLE_BOT, bot)
            sample["event"].update(ts=ts, event_ts=ts, text=text)
            sample.update(event_id=f"Ev{uuid.uuid4().hex[:10].upper()}", event_time=int(now))
            sample["team_id"] = self.options.team_id or sample["team_id"]
            body = json.dumps(sample).encode()
        media = "application/json" if body.lstrip()[:1] in (b"{", b"[") else FORM
        stamp = str(int(time.time()))
        return SignedRequest(
            headers={
                "content-type": media,
                "x-slack-request-timestamp": stamp,
                "x-slack-signature": signature(self.keys[0], stamp, body),
            },
            body=body,
        )
