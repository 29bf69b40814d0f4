"""Standard Webhooks signatures (``webhook-id``/``-timestamp``/``-signature``), both ways.

Signed content is ``{id}.{timestamp}.{raw body}``, HMAC-SHA256 with the secret that
``whsec_`` + base64 encodes; the header is a space-separated list of ``v1,<base64>``
entries and a request verifies if *any* entry matches *any* configured secret, which
is how secrets rotate. The receiver and the ``webhook`` target share this module.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Iterable, Sequence

SECRET_PREFIX = "whsec_"
MIN_SECRET_BYTES = 16


def decode_secret(secret: str) -> bytes:
    """The key bytes of a ``whsec_...`` secret; ``ValueError`` says what is wrong."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("a Standard Webhooks secret starts with 'whsec_'")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the part after 'whsec_' is not valid base64") from None
    if len(key) < MIN_SECRET_BYTES:
        raise ValueError(f"the secret is {len(key)} bytes; use at least 24 (minimum 16)")
    return key


def generate_secret(nbytes: int = 32) -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(nbytes)).decode()


def signature(key: bytes, msg_id: str, timestamp: int | str, body: bytes) -> str:
    """One ``v1,<base64>`` entry."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def sign_header(keys: Iterable[bytes], msg_id: str, timestamp: int | str, body: bytes) -> str:
    """The ``webhook-signature`` value: one entry per key (several while rotating)."""
    return " ".join(signature(key, msg_id, timestamp, body) for key in keys)


def matches(keys: Sequence[bytes], msg_id: str, timestamp: str, body: bytes, header: str) -> bool:
    """True if any well-formed ``v1`` entry of ``header`` matches any key.

    Malformed entries (no comma, other versions, bad base64) are skipped, never raised:
    a broken header is simply not a valid signature.
    """
    expected = [signature(key, msg_id, timestamp, body)[3:].encode() for key in keys]
    found = False
    for entry in header.split(" "):
        version, sep, value = entry.partition(",")
        if not sep or version != "v1" or not value:
            continue
        for candidate in expected:
            found |= hmac.compare_digest(candidate, value.encode("utf-8", "replace"))
    return found
