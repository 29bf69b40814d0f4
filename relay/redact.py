"""Keep secrets out of logs, attempt records and error messages."""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "[redacted]"
_URL_SECRETS = re.compile(
    r"(?i)(://[^/\s:@]+:)[^@/\s]+@|([?&](?:access_token|token|key|sign|secret"
    r"|signature|password|api_key|apikey)=)[^&\s#]+"
)


def redact(text: str | None, secrets: Iterable[str] = ()) -> str | None:
    """Replace every known secret value, URL password and token-like query value."""
    if not text:
        return text
    for secret in sorted(secrets, key=len, reverse=True):
        if secret:
            text = text.replace(secret, MASK)
    return _URL_SECRETS.sub(
        lambda m: (m.group(1) or m.group(2)) + MASK + ("@" if m.group(1) else ""), text
    )
