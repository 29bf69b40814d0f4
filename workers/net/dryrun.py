"""Dry runs: the request a target would send, captured instead of sent.

A shadow delivery (a route in ``mode: shadow``) runs its target adapter in full
(template, mentions, signing), and every request the adapter makes through
``workers.net.http.send`` or an SMTP session of ``workers.net.smtp`` is captured here
instead of leaving the process: method, URL, headers and body, with secrets redacted.
The sender then answers with a synthetic success. Capturing at those two funnels, rather
than in each adapter, means an adapter cannot forget it, and what is shown is what the
wire would have carried.

A ``DryRun`` is switched on for the green thread (or thread) running one attempt through
a ``ContextVar``: each green thread has its own value, so a shadow delivery never
captures a live one running beside it.

Secrets are redacted on capture, so nothing unredacted is ever stored: every value the
config pulled from the environment, the target's own secret options (fields declared
``repr=False``), token-like query values and path segments, credential headers and
signature fields of a JSON body.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import redis
from pydantic import BaseModel

from relay.redact import MASK, redact
from relay.state import keys
from relay.state.lifecycle import DeliveryRecord
from relay.state.sealing import PLAIN, Sealer

BODY_CAP = 64 * 1024  # characters of a captured body kept in the record
MAX_REQUESTS = 20  # requests kept per attempt; an adapter looping would stop here
# Header names holding a credential or a signature (compared lower-case, by substring).
_SECRET_HEADERS = ("auth", "token", "secret", "sign", "password", "cookie", "api-key", "apikey")
# Query parameters and JSON fields holding a credential (lower-case, exact).
_SECRET_FIELDS = frozenset(
    {
        "access_token",
        "token",
        "key",
        "sign",
        "signature",
        "secret",
        "password",
        "api_key",
        "apikey",
        "app_secret",
        "client_secret",
    }
)
_TOKEN_LIKE = re.compile(r"^(?=.*\d)[A-Za-z0-9_\-.~:]{16,}$")
SYNTHETIC_ANSWER = (
    b'{"ok":true,"code":0,"errcode":0,"errmsg":"ok","StatusCode":0,'
    b'"msg":"dry run: nothing was sent","dry_run":true}'
)
"""What a dry run answers: the success each chat platform's adapter reads (``ok``,
``code``, ``errcode``, ``StatusCode``), saying that it is not a real answer."""


@dataclass(frozen=True)
class CapturedRequest:
    """One request a target would have sent, as stored and shown: secrets redacted."""

    method: str
    url: str
    headers: dict[str, str]
    body: str | None
    size: int  # bytes of the body as it would have been sent
    truncated: bool = False

    def public(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "url": self.url,
            "headers": self.headers,
            "body": self.body,
            "size": self.size,
            "truncated": self.truncated,
        }


@dataclass
class DryRun:
    """The requests of one attempt, captured; ``on_capture`` gets them all after each
    capture (the worker stores them on the delivery record)."""

    secrets: frozenset[str] = frozenset()
    on_capture: Callable[[list[dict[str, Any]]], None] | None = None
    requests: list[CapturedRequest] = field(default_factory=list)

    def capture(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> CapturedRequest:
        """Record one request, redacted, and tell ``on_capture``."""
        text, extra = _body_text(body or b"")
        secrets = self.secrets | extra
        shown = None if text is None else redact(text, secrets) or ""  # whole, then cut
        captured = CapturedRequest(
            method=method.upper(),
            url=redact_url(url, secrets),
            headers={k: _header_value(k, v, secrets) for k, v in headers.items()},
            body=None if shown is None else shown[:BODY_CAP],
            size=len(body or b""),
            truncated=shown is not None and len(shown) > BODY_CAP,
        )
        if len(self.requests) < MAX_REQUESTS:
            self.requests.append(captured)
            if self.on_capture is not None:
                self.on_capture([r.public() for r in self.requests])
        return captured


_current: ContextVar[DryRun | None] = ContextVar("relay_dry_run", default=None)


def current() -> DryRun | None:
    """The dry run of the attempt this green thread runs, if it is a shadow one."""
    return _current.get()


def switch(run: DryRun | None) -> None:
    """Capture (``run``) or send (``None``) from now on in this green thread. The worker
    switches before every attempt, so an attempt never inherits the previous one's."""
    _current.set(run)


def recording(
    client: redis.Redis, delivery_id: str, secrets: frozenset[str], sealer: Sealer = PLAIN
) -> DryRun:
    """A shadow attempt's dry run, kept on the delivery record (``captured``) as it grows,
    so an attempt that fails half way still shows what it would have sent. The body quotes
    the message, so it is sealed like the record's other such fields."""
    key = keys.delivery(delivery_id)
    client.hdel(key, "captured")  # the previous attempt's

    def store(requests: list[dict[str, Any]]) -> None:
        fields = DeliveryRecord(captured=json.dumps(requests, ensure_ascii=False)).to_fields()
        client.hset(key, mapping=sealer.seal_fields(delivery_id, fields))

    return DryRun(secrets=secrets, on_capture=store)


@contextmanager
def dry_run(run: DryRun) -> Iterator[DryRun]:
    """Capture inside the block only (``relay routes try``, tests)."""
    token = _current.set(run)
    try:
        yield run
    finally:
        _current.reset(token)


def option_secrets(options: Any) -> frozenset[str]:
    """The values of a target's secret options: its kind declares them ``repr=False``
    (webhook URLs with their token, signing secrets, bot tokens, passwords)."""
    if not isinstance(options, BaseModel):
        return frozenset()
    found: set[str] = set()
    for name, info in type(options).model_fields.items():
        value = getattr(options, name, None)
        if isinstance(value, BaseModel):
            found |= option_secrets(value)
        elif not info.repr:
            values = value if isinstance(value, list | tuple) else [value]
            found |= {v for v in values if isinstance(v, str) and len(v) >= 4}
    return frozenset(found)


def redact_url(url: str, secrets: Iterable[str] = ()) -> str:
    """The URL as sent, with its password, token-like path segments (a Feishu or Slack
    hook's token, a Telegram bot token) and credential query values masked."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return MASK
    known = {s for s in secrets if s}
    host = f"[{host}]" if ":" in host else host
    user = f"{MASK}@" if parts.username or parts.password else ""
    if parts.username and parts.password:
        user = f"{quote(unquote(parts.username), safe='')}:{MASK}@"
    hidden = known | _secret_segments(known)
    segments = [
        MASK if _TOKEN_LIKE.match(unquote(seg)) or unquote(seg) in hidden else seg
        for seg in parts.path.split("/")
    ]
    query = "&".join(
        f"{quote(k, safe='')}="
        + (MASK if k.lower() in _SECRET_FIELDS or v in known else quote(v, safe=""))
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    )
    shown = f"{parts.scheme}://{user}{host}{port}{'/'.join(segments)}"
    return redact(shown + (f"?{query}" if query else ""), known) or ""


def _secret_segments(secrets: Iterable[str]) -> set[str]:
    """The long path segments of secret URLs (a Slack hook's last segment may have no
    digit, so ``_TOKEN_LIKE`` alone would miss it)."""
    found = set()
    for secret in secrets:
        if "://" in secret:
            try:
                path = urlsplit(secret).path
            except ValueError:
                continue
            found |= {unquote(seg) for seg in path.split("/") if len(seg) >= 20}
    return found


def _header_value(name: str, value: str, secrets: frozenset[str]) -> str:
    """A credential header keeps only its scheme (``Bearer [redacted]``)."""
    if any(part in name.lower() for part in _SECRET_HEADERS):
        scheme, _, rest = value.partition(" ")
        return f"{scheme} {MASK}" if rest and scheme.isalpha() and len(scheme) < 16 else MASK
    return redact(value, secrets) or ""


def _body_text(body: bytes) -> tuple[str | None, frozenset[str]]:
    """The body as text (``None`` if it is not UTF-8) and the values of its secret JSON
    fields (a Feishu bot's ``sign``), which are masked wherever they appear."""
    try:
        text = body.decode()
    except UnicodeDecodeError:
        return None, frozenset()
    try:
        data = json.loads(text)
    except ValueError:
        return text, frozenset()
    return text, frozenset(_secret_values(data))


def _secret_values(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, str) and str(k).lower() in _SECRET_FIELDS and v:
                yield v
            else:
                yield from _secret_values(v)
    elif isinstance(value, list):
        for v in value:
            yield from _secret_values(v)
