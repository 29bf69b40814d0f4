"""Keep secrets out of logs, attempt records and error messages."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus, urlsplit

MASK = "[redacted]"
# A URL's password (the user may be empty, as in redis://:pw@host) and token-like query
# values. Neither runs past a quote or backslash: in a JSON text those end the string the
# URL sits in, and what follows is not part of the secret.
_URL_SECRETS = re.compile(
    r"(?i)(://[^/\s:@\"\\]*:)[^@/\s\"\\?#]+@|([?&](?:access_token|token|key|sign|secret"
    r"|signature|password|api_key|apikey)=)[^&\s#\"\\]+"
)
# Reply credentials: URLs that let whoever holds them post into the group as the bot for
# a while (DingTalk's ``sessionWebhook`` ~90 min, Slack's ``response_url`` 30 min). In
# text: the ``session`` query value, and the path of a Slack command or action reply URL.
_REPLY_URLS = re.compile(
    r"(?i)(https?://hooks\.slack\.com/(?:commands|actions|app|triggers|workflows)/)"
    r"[^\s\"\\?#]+|([?&]session=)[^&\s#\"\\]+"
)
# The fields of platform payloads that hold a reply credential (compared casefolded).
REPLY_URL_FIELDS = frozenset({"sessionwebhook", "response_url"})
# An API key pasted where it does not belong: ``rk_<id>_<secret>``; the id stays readable.
_API_KEYS = re.compile(r"\b(rk_[0-9a-f]{12}_)[A-Za-z0-9_-]{43}")
# The WSGI environ key under which the web app leaves its configured secrets for the
# access log (``relay.gunicorn_conf.RedactingLogger``), which has no config of its own.
SECRETS_ENVIRON = "relay.secrets"


def _spellings(secret: str) -> set[str]:
    """The secret as written, as it appears inside a JSON string (escaped quotes,
    backslashes, control and non-ASCII characters), so an answer that echoes it is caught,
    and percent-encoded, as it appears in a raw request line."""
    return {
        secret,
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        quote(secret, safe=""),
        quote(secret),
        quote_plus(secret),
    }


@functools.lru_cache(maxsize=64)
def _forms(secrets: frozenset[str]) -> tuple[str, ...]:
    """Every spelling of every secret, longest first (the longer of two overlapping
    secrets is masked whole); cached, as the same few sets are asked for on every line."""
    forms = {form for secret in secrets if secret for form in _spellings(secret)}
    return tuple(sorted(forms, key=len, reverse=True))


def redact(text: str | None, secrets: Iterable[str] = (), *, reply_urls: bool = True) -> str | None:
    """Replace every known secret value, URL password and token-like query value, and
    (unless ``reply_urls`` is false: an admin's view) the token of a reply URL."""
    if not text:
        return text
    for form in _forms(frozenset(secrets)):
        if form in text:
            text = text.replace(form, MASK)
    # each pattern runs only where its fixed part occurs: most log values have none
    if "=" in text or "://" in text:
        text = _URL_SECRETS.sub(
            lambda m: (m.group(1) or m.group(2)) + MASK + ("@" if m.group(1) else ""), text
        )
    if "rk_" in text:
        text = _API_KEYS.sub(lambda m: m.group(1) + MASK, text)
    if reply_urls and ("session=" in text.lower() or "slack" in text.lower()):
        text = _REPLY_URLS.sub(lambda m: (m.group(1) or m.group(2)) + MASK, text)
    return text


def hide_url(url: str) -> str:
    """Scheme and host only: what a reader may know of a credential URL."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return MASK
    if not parts.scheme or not host:
        return MASK
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}/{MASK}"


def hide_reply_urls(value: Any) -> Any:
    """A copy of a JSON value with every reply-credential field (``sessionWebhook``,
    ``response_url``, at any depth) cut to its host; what workers read is not touched."""
    if isinstance(value, dict):
        return {
            k: hide_url(v)
            if isinstance(v, str) and str(k).casefold() in REPLY_URL_FIELDS
            else hide_reply_urls(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [hide_reply_urls(v) for v in value]
    return value
