"""API keys for the management API and the dashboard: scoped, stored only as hashes.

A key reads ``rk_<id>_<secret>``. The id is public (it names the key in the audit log
and in ``relay keys ls``); only a SHA-256 of the whole key is stored, so a Redis dump
reveals no usable key (the secret has 256 bits of entropy, so a plain hash suffices).
Scopes nest: ``admin`` can do everything ``replay`` can, which can do everything
``read`` can. Rotating gives the same id a new secret; the old one stays valid for a
grace period so clients can switch without downtime.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from typing import Literal

import redis

from relay.state import keys

Scope = Literal["read", "replay", "admin"]
SCOPES: tuple[Scope, ...] = ("read", "replay", "admin")
_TOKEN = re.compile(r"^rk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def allows(held: str, needed: str) -> bool:
    """Whether a key of scope ``held`` may do what needs ``needed``."""
    order: tuple[str, ...] = SCOPES
    return held in order and order.index(held) >= order.index(needed)


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    scope: str
    created_at: float
    revoked_at: float | None = None
    previous_until: float | None = None  # the pre-rotation secret is valid until then
    last_used_at: float | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def public(self) -> dict[str, object]:
        """What may be shown anywhere: never the secret or its hash."""
        return {
            "id": self.id,
            "name": self.name,
            "scope": self.scope,
            "created_at": self.created_at,
            "revoked_at": self.revoked_at,
            "previous_valid_until": self.previous_until,
            "last_used_at": self.last_used_at,
        }


class UnknownKey(LookupError):
    """No such key, or it is revoked."""


class ApiKeys:
    """Create, list, verify, rotate and revoke keys in Redis."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def create(self, name: str, scope: str) -> tuple[ApiKey, str]:
        """A new key; the token is returned once and never stored."""
        if scope not in SCOPES:
            raise ValueError(f"unknown scope {scope!r}; one of {', '.join(SCOPES)}")
        key_id = secrets.token_hex(6)
        token = f"rk_{key_id}_{secrets.token_urlsafe(32)}"
        now = time.time()
        pipe = self.redis.pipeline()
        pipe.hset(
            keys.api_key(key_id),
            mapping={
                "id": key_id,
                "name": name,
                "scope": scope,
                "hash": _hash(token),
                "created_at": f"{now:.3f}",
            },
        )
        pipe.sadd(keys.API_KEYS, key_id)
        pipe.execute()
        return self.get(key_id), token

    def get(self, key_id: str) -> ApiKey:
        raw = self.redis.hgetall(keys.api_key(key_id))
        if not raw:
            raise UnknownKey(f"no API key {key_id!r}")
        data = {k.decode(): v.decode() for k, v in raw.items()}

        def number(name: str) -> float | None:
            return float(data[name]) if data.get(name) else None

        return ApiKey(
            id=data["id"],
            name=data.get("name", ""),
            scope=data["scope"],
            created_at=float(data["created_at"]),
            revoked_at=number("revoked_at"),
            previous_until=number("previous_until"),
            last_used_at=number("last_used_at"),
        )

    def all(self) -> list[ApiKey]:
        ids = sorted(member.decode() for member in self.redis.smembers(keys.API_KEYS))
        found = []
        for key_id in ids:
            try:
                found.append(self.get(key_id))
            except UnknownKey:
                continue
        return sorted(found, key=lambda k: k.created_at)

    def verify(self, token: str) -> ApiKey | None:
        """The key ``token`` belongs to if it is valid now, else ``None``."""
        match = _TOKEN.match(token.strip())
        if not match:
            return None
        key_id = match.group(1)
        stored = self.redis.hmget(
            keys.api_key(key_id), "hash", "previous_hash", "previous_until", "revoked_at"
        )
        current, previous, previous_until, revoked = (v.decode() if v else None for v in stored)
        if current is None or revoked:
            return None
        given = _hash(token.strip())
        ok = hmac.compare_digest(given, current) or (
            previous is not None
            and previous_until is not None
            and float(previous_until) > time.time()
            and hmac.compare_digest(given, previous)
        )
        if not ok:
            return None
        self.redis.hset(keys.api_key(key_id), "last_used_at", f"{time.time():.3f}")
        return self.get(key_id)

    def rotate(self, key_id: str, grace: float) -> tuple[ApiKey, str]:
        """A new secret for ``key_id``; the current one keeps working for ``grace`` s."""
        key = self.get(key_id)
        if not key.active:
            raise UnknownKey(f"API key {key_id!r} is revoked")
        token = f"rk_{key_id}_{secrets.token_urlsafe(32)}"
        current = self.redis.hget(keys.api_key(key_id), "hash")
        self.redis.hset(
            keys.api_key(key_id),
            mapping={
                "hash": _hash(token),
                "previous_hash": current or b"",
                "previous_until": f"{time.time() + grace:.3f}",
            },
        )
        return self.get(key_id), token

    def revoke(self, key_id: str) -> ApiKey:
        self.get(key_id)
        self.redis.hset(keys.api_key(key_id), "revoked_at", f"{time.time():.3f}")
        self.redis.hdel(keys.api_key(key_id), "previous_hash", "previous_until")
        return self.get(key_id)
