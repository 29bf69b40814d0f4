"""The audit log: every operator action and every auth failure, who, what, when, where.

Kept in a Redis stream (``relay:audit``), capped at ``MAX_ENTRIES``, newest last; the
API and the dashboard read it and ``relay keys`` writes to it. Entries hold key ids,
never key secrets, and the caller passes only values that are safe to show.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import redis

from relay.state import keys

MAX_ENTRIES = 100_000


@dataclass(frozen=True)
class AuditEntry:
    id: str
    at: float
    actor: str  # a key id, "cli", or "-" when nobody authenticated
    action: str  # replay, purge, pause, resume, key.create, login, auth.failed, ...
    target: str
    outcome: str  # ok | denied | failed
    remote_addr: str
    detail: str

    def public(self) -> dict[str, Any]:
        return dict(self.__dict__)


class AuditLog:
    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def record(
        self,
        action: str,
        *,
        actor: str = "-",
        target: str = "",
        outcome: str = "ok",
        remote_addr: str | None = None,
        detail: str = "",
    ) -> None:
        self.redis.xadd(
            keys.AUDIT,
            {
                "at": f"{time.time():.3f}",
                "actor": actor,
                "action": action,
                "target": target[:512],
                "outcome": outcome,
                "remote_addr": remote_addr or "",
                "detail": detail[:1024],
            },
            maxlen=MAX_ENTRIES,
            approximate=True,
        )

    def entries(
        self,
        *,
        limit: int = 50,
        before: str | None = None,
        action: str | None = None,
        actor: str | None = None,
    ) -> list[AuditEntry]:
        """Newest first; ``before`` (an entry id) pages back through older ones."""
        if before is not None and _is_zero_id(before):
            return []  # nothing is older, and Redis refuses the exclusive bound "(0-0"
        found: list[AuditEntry] = []
        cursor = f"({before}" if before else "+"
        while len(found) < limit:
            batch = self.redis.xrevrange(keys.AUDIT, max=cursor, min="-", count=max(limit, 100))
            if not batch:
                break
            for entry_id, fields in batch:
                entry = _entry(entry_id, fields)
                if (action is None or entry.action == action) and (
                    actor is None or entry.actor == actor
                ):
                    found.append(entry)
                    if len(found) == limit:
                        break
            cursor = f"({batch[-1][0].decode()}"
        return found


def _is_zero_id(entry_id: str) -> bool:
    """``0-0`` (also spelt ``0``, ``00-0``): the smallest stream id there is."""
    ms, _, seq = entry_id.partition("-")
    return ms.strip("0") == "" and seq.strip("0") == "" and bool(ms)


def _entry(entry_id: bytes, fields: dict[bytes, bytes]) -> AuditEntry:
    data = {k.decode(): v.decode() for k, v in fields.items()}
    return AuditEntry(
        id=entry_id.decode(),
        at=float(data.get("at") or 0),
        actor=data.get("actor", "-"),
        action=data.get("action", ""),
        target=data.get("target", ""),
        outcome=data.get("outcome", ""),
        remote_addr=data.get("remote_addr", ""),
        detail=data.get("detail", ""),
    )
