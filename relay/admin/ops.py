"""The operations layer: what the management API and the dashboard show and do.

Reads events, deliveries, attempts, dead letters, queues, targets and sources;
replays and purges dead letters; pauses and resumes targets. Every value shown has the
configured secrets redacted (``relay.redact``), and every state change is written to
the audit log with who (key id), from where, and the outcome. Listing records is
``relay.admin.listings`` (reading them, ``relay.state.records``); their shapes
``relay.admin.views``; filters, cursors and times ``relay.admin.query``.

A replay and a pause promise something a failover must not undo (the letter is sent
again; the target gets nothing more), so with ``RELAY_REDIS_MIN_REPLICAS`` they wait for
the replicas (``relay.state.replicas``) and fail with ``NotReplicated`` (a 503) if too
few confirm. A lost purge, resume or breaker reset only brings back what the operator
can see and do again: those answer as soon as the primary has them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from relay.admin.listings import Listings
from relay.admin.query import DeadLetterFilter, Page
from relay.config.kinds import effective_rates
from relay.context import WebContext
from relay.state import keys
from relay.state.audit import AuditLog
from relay.state.gate import TargetGate
from relay.state.lifecycle import DeliveryRecord, DeliveryStatus
from relay.state.replicas import NotReplicated, Replicas
from relay.state.stats import Stats

WINDOWS = {"5m": 300, "1h": 3600}  # the recent windows of each target's rates and latency


@dataclass(frozen=True)
class Actor:
    """Who asks: an API key id (or ``cli``, ``dashboard:<key>``) and the remote address."""

    key_id: str
    remote_addr: str | None = None


class Ops(Listings):
    """Everything the API and the dashboard read and do; state changes are audited."""

    def __init__(self, runtime: WebContext) -> None:
        super().__init__(runtime)
        self.gate = TargetGate(runtime.redis)
        self.audit_log = AuditLog(runtime.redis)
        self.stats = Stats(runtime.redis)
        self.replicas = Replicas.of(runtime.settings)

    # dead letters ---------------------------------------------------------------------
    def replay(self, delivery_id: str, actor: Actor) -> bool:
        """Send one dead letter again under its delivery id; false if it is not dead."""
        d = self.store.delivery(delivery_id)
        try:
            ok = d is not None and d.status is DeliveryStatus.DEAD and self._requeue(delivery_id, d)
        except NotReplicated as exc:
            self._audit("replay", actor, delivery_id, False, f"queued on the primary only: {exc}")
            raise
        self._audit("replay", actor, delivery_id, ok, "" if ok else "not in the dead-letter queue")
        return ok

    def _requeue(self, delivery_id: str, d: DeliveryRecord) -> bool:
        """``Outbox.replay`` onto the delivery's own queue (one the relay knows)."""
        queue = d.queue or ""
        return queue in keys.ALL_QUEUES and self.runtime.outbox.replay(
            delivery_id, queue, replicas=self.replicas
        )

    def purge(self, delivery_id: str, actor: Actor) -> bool:
        ok = self.store.purge(delivery_id)
        self._audit("purge", actor, delivery_id, ok, "" if ok else "not in the dead-letter queue")
        return ok

    def replay_matching(
        self, f: DeadLetterFilter, actor: Actor, *, dry_run: bool
    ) -> dict[str, int]:
        """Replay every matching dead letter, or with ``dry_run`` only count them."""
        if dry_run:
            return {"count": sum(d is not None for _, d in self._dead(f, None))}
        count, replayed = self.replay_matching_ids(f, actor)
        return {"count": count, "replayed": len(replayed)}

    def replay_matching_ids(self, f: DeadLetterFilter, actor: Actor) -> tuple[int, list[str]]:
        """Replay every matching dead letter: how many matched and the ids sent again
        (the dashboard follows those)."""
        found = [(p.member.decode(), d) for p, d in self._dead(f, None) if d is not None]
        done: list[str] = []
        for delivery_id, d in found:
            try:
                if self._requeue(delivery_id, d):
                    done.append(delivery_id)
            except NotReplicated as exc:  # the next ones would wait as long: stop here
                done_of = f"replayed {len(done)} of {len(found)}"
                detail = f"{done_of}; the next one on the primary only: {exc}"
                self._audit("replay.bulk", actor, f.describe(), False, detail)
                raise
        self._audit(
            "replay.bulk", actor, f.describe(), True, f"replayed {len(done)} of {len(found)}"
        )
        return len(found), done

    def purge_matching(self, f: DeadLetterFilter, actor: Actor, *, dry_run: bool) -> dict[str, int]:
        ids = [p.member.decode() for p, d in self._dead(f, None) if d is not None]
        if dry_run:
            return {"count": len(ids)}
        done = sum(self.store.purge(delivery_id) for delivery_id in ids)
        self._audit("purge.bulk", actor, f.describe(), True, f"purged {done} of {len(ids)}")
        return {"count": len(ids), "purged": done}

    # queues, targets, sources ---------------------------------------------------------
    def queues(self) -> dict[str, Any]:
        return self.store.queue_stats()

    def targets(self) -> list[dict[str, Any]]:
        totals = self.stats.targets()
        return [self._target(t, totals) for t in self.runtime.config.targets]

    def target(self, target_id: str) -> dict[str, Any] | None:
        if target_id not in self.runtime.config.targets:
            return None
        return self._target(target_id, self.stats.targets())

    def _target(self, target_id: str, totals: dict[str, dict[str, Any]]) -> dict[str, Any]:
        config = self.runtime.config.targets[target_id]
        rates, origin = effective_rates(config)
        total = totals.get(target_id) or {}
        latency = total.get("latency") or {}
        return {
            "id": target_id,
            "kind": config.kind,
            **self.gate.status(target_id, rates, config.max_in_flight),
            "rate_limit_source": origin,
            "windows": {
                name: self.stats.target_window(target_id, s) for name, s in WINDOWS.items()
            },
            "outcomes": {"delivered": 0, "retry": 0, "dead": 0, **(total.get("outcomes") or {})},
            "waits": dict(total.get("waits") or {}),
            "latency": {
                "count": int(latency.get("count") or 0),
                "sum_ms": float(latency.get("sum_ms") or 0.0),
            },
        }

    def set_paused(self, target_id: str, paused: bool, actor: Actor) -> dict[str, Any] | None:
        action = "pause" if paused else "resume"
        if target_id not in self.runtime.config.targets:
            self._audit(action, actor, target_id, False, "unknown target")
            return None
        if paused:
            try:
                self.replicas.write(self.runtime.redis, lambda p: TargetGate(p).pause(target_id))
            except NotReplicated as exc:
                self._audit(action, actor, target_id, False, f"paused on the primary only: {exc}")
                raise
        else:
            self.gate.resume(target_id)
        self._audit(action, actor, target_id, True)
        return self.target(target_id)

    def reset(self, target_id: str, actor: Actor) -> dict[str, Any] | None:
        if target_id not in self.runtime.config.targets:
            self._audit("reset", actor, target_id, False, "unknown target")
            return None
        self.gate.reset(target_id)
        self._audit("reset", actor, target_id, True)
        return self.target(target_id)

    def sources(self) -> list[dict[str, Any]]:
        """Configured sources (and any counted id that is not, such as ``(unknown)``)."""
        counts = self.stats.sources()
        kinds: dict[str, str | None] = {s.id: s.kind for s in self.runtime.config.sources.values()}
        kinds.update({sid: None for sid in counts if sid not in kinds})
        return [
            {"id": sid, "kind": kind, **self._source_counts(counts.get(sid) or {})}
            for sid, kind in kinds.items()
        ]

    @staticmethod
    def _source_counts(entry: dict[str, Any]) -> dict[str, Any]:
        rejected = {str(k): int(v) for k, v in (entry.get("rejected") or {}).items()}
        return {
            "accepted": int(entry.get("accepted") or 0),
            "duplicates": int(entry.get("duplicates") or 0),
            "rejected": rejected,
            "rejected_total": sum(rejected.values()),
        }

    # audit ----------------------------------------------------------------------------
    def audit(
        self,
        *,
        limit: int = 50,
        cursor: str | None = None,
        action: str | None = None,
        actor: str | None = None,
    ) -> Page:
        entries = self.audit_log.entries(limit=limit, before=cursor, action=action, actor=actor)
        items = [self.redactor.deep(e.public()) for e in entries]
        return Page(items, entries[-1].id if len(entries) == limit else None)

    def _audit(self, action: str, actor: Actor, target: str, ok: bool, detail: str = "") -> None:
        self.audit_log.record(
            action,
            actor=actor.key_id,
            target=target,
            outcome="ok" if ok else "failed",
            remote_addr=actor.remote_addr,
            detail=detail,
        )
