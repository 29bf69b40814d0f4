"""Keep secrets out of logs, attempt records and error messages."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

MASK = "[redacted]"
# A URL's password (the user may be empty, as in redis://:pw@host) and token-like query
# values. Neither runs past a quote or backslash: in a JSON text those end the string the
# URL sits in, and what follows is not part of the secret.
_URL_SECRETS = re.compile(
    r"(?i)(://[^/\s:@\"\\]*:)[^@/\s\"\\?#]+@|([?&](?:access_token|token|key|sign|secret"
    r"|signature|password|api_key|apikey)=)[^&\s#\"\\]+"
)


def _spellings(secret: str) -> set[str]:
    """The secret as written and as it appears inside a JSON string (escaped quotes,
    backslashes, control and non-ASCII characters), so an answer that echoes it is caught."""
    return {secret, json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]}


def redact(text: str | None, secrets: Iterable[str] = ()) -> str | None:
    """Replace every known secret value, URL password and token-like query value."""
    if not text:
        return text
    forms = {form for secret in secrets if secret for form in _spellings(secret)}
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, MASK)
    return _URL_SECRETS.sub(
        lambda m: (m.group(1) or m.group(2)) + MASK + ("@" if m.group(1) else ""), text
    )
