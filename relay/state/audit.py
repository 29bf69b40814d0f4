"""The audit log: every operator action and every auth failure, who, what, when, where.

Kept in a Redis stream (``relay:audit``), capped at ``MAX_ENTRIES``, newest last; the
API and the dashboard read it and ``relay keys`` writes to it. Entries hold key ids,
never key secrets, and the caller passes only values that are safe to show.

Refusals (``record_failure``) come from callers nobody vouches for, so they are
aggregated per action, address and minute (``lua/audit_failure.lua``): the first is an
entry, the rest a count written as one summary entry, and past ``MAX_SOURCES`` addresses
a minute the rest count together under ``*``. One client can then add a few entries a
minute, never rotate the history out; summing ``count`` gives every refusal.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import redis

from relay.state import keys
from relay.state.lua import load_script

MAX_ENTRIES = 100_000
MAX_SOURCES = 100  # (action, address) pairs a minute with refusal entries of their own
FAILURE_BUCKET_TTL = 7 * 86400  # s: a minute's counts wait this long for their summary


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
    count: int = 1  # refusals this entry stands for (a summary counts several)

    def public(self) -> dict[str, Any]:
        return dict(self.__dict__)


class AuditLog:
    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._failure = load_script(client, "audit_failure.lua")

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
        self.flush()  # refusals counted before this action come before it in the log
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

    def record_failure(
        self,
        action: str,
        *,
        actor: str = "-",
        target: str = "",
        outcome: str = "denied",
        remote_addr: str | None = None,
        detail: str = "",
    ) -> bool:
        """A refused call, aggregated per action, address and minute; true if it got an
        entry of its own, false if it was only counted (a summary will show it)."""
        written = self._run_failure(
            "0", action, actor, target[:512], outcome, remote_addr or "", detail[:1024]
        )
        return bool(written)

    def flush(self) -> None:
        """Write the pending refusal counts as summary entries (done before each read)."""
        self._run_failure("1", "", "", "", "", "", "")

    def _run_failure(self, flush_only: str, *fields: str) -> int:
        return int(
            self._failure(
                keys=[keys.AUDIT, keys.AUDIT_PENDING],
                args=[
                    keys.audit_failures(),
                    MAX_ENTRIES,
                    MAX_SOURCES,
                    FAILURE_BUCKET_TTL,
                    flush_only,
                    *fields,
                ],  # fmt: skip
            )
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
        if before is None:
            self.flush()  # the first page shows every refusal counted so far
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
        count=int(data["count"]) if data.get("count", "").isdigit() else 1,
    )
