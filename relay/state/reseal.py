"""Re-sealing stored records under the newest key: ``relay keys rotate-data``.

After a new key is put first in ``RELAY_ENCRYPTION_KEYS`` (and every process restarted
with it), new writes use it, while records written before stay under older keys (or in
plain text, if sealing was just turned on). This walk re-seals them, so the old key can
then be dropped:

- ``SCAN`` in batches over event records, delivery records and attempt lists, with
  intake and workers running; nothing is paused and no key is held for long.
- Each value is replaced by one script only if it still holds what was read
  (``lua/reseal.lua``): a value written meanwhile is newer, and stays.
- The position (phase and ``SCAN`` cursor) and the counts are kept in Redis after each
  batch, so a run that is stopped or crashes resumes where it was. ``SCAN`` returns
  every key that exists for the whole walk at least once; a key seen twice finds its
  values already re-sealed.
- One run at a time: a lock with a short TTL, renewed every batch, so a crashed run
  does not block the next for long. Two runs at once would still be safe, only wasteful.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis

from relay.state import keys
from relay.state.lua import load_script
from relay.state.sealing import (
    ATTEMPT_FIELDS,
    DELIVERY_FIELDS,
    Sealer,
    Unreadable,
    attempt_field,
    delivery_field,
)

STATE = keys.RESEAL
LOCK = keys.RESEAL_LOCK
LOCK_TTL = 60
EXAMPLES = 5  # unreadable values named in the summary


@dataclass(frozen=True)
class Phase:
    name: str
    pattern: str
    redis_type: str


PHASES = (
    Phase("events", keys.event("*"), "hash"),
    Phase("deliveries", keys.delivery("*"), "hash"),
    Phase("attempts", keys.attempts("*"), "list"),
)
_COUNTS = ("records", "resealed", "sealed", "current", "changed", "unreadable")


@dataclass
class _Call:
    """One record's compare-and-set: triples (field or index, value read, new value) and,
    per triple, what each value it moves was (``sealed``: plain, ``resealed``)."""

    name: str
    kind: str  # 'hash' or 'list'
    args: list[str] = field(default_factory=list)
    moves: list[list[str]] = field(default_factory=list)

    def add(self, where: str, read: str, new: str | None, moved: list[str]) -> None:
        if new is not None and moved:
            self.args += [where, read, new]
            self.moves.append(moved)


class Busy(Exception):
    """Another ``rotate-data`` holds the lock."""


@dataclass
class Progress:
    """Where a walk is and what it found. ``resealed``: values moved from an older key;
    ``sealed``: plain values sealed; ``current``: already under the newest key;
    ``changed``: rewritten meanwhile by the relay (left alone); ``unreadable``: under a
    key not configured, or damaged (left alone, ``examples`` names a few)."""

    target: str
    phase: str = PHASES[0].name
    cursor: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    by_key: Counter[str] = field(default_factory=Counter)  # values found, by key id or "plain"
    examples: list[str] = field(default_factory=list)
    resumed: bool = False

    @property
    def done(self) -> bool:
        return self.phase == "done"

    def saved(self) -> dict[str, str]:
        return {
            "target": self.target,
            "phase": self.phase,
            "cursor": str(self.cursor),
            **{name: str(self.counts[name]) for name in _COUNTS},
            "by_key": json.dumps(self.by_key),
            "examples": json.dumps(self.examples),
            "updated_at": f"{time.time():.6f}",
        }

    @classmethod
    def restored(cls, stored: dict[bytes, bytes]) -> Progress:
        text = {k.decode(): v.decode() for k, v in stored.items()}
        return cls(
            target=text["target"],
            phase=text.get("phase", PHASES[0].name),
            cursor=int(text.get("cursor", "0")),
            counts=Counter({name: int(text.get(name, "0")) for name in _COUNTS}),
            by_key=Counter(json.loads(text.get("by_key", "{}"))),
            examples=list(json.loads(text.get("examples", "[]"))),
            resumed=True,
        )


class Resealer:
    """One walk over the stored records, re-sealing what is not under the newest key.
    ``dry_run`` counts what a walk would do and writes nothing (no lock, no position)."""

    def __init__(
        self, client: redis.Redis, sealer: Sealer, *, batch: int = 500, dry_run: bool = False
    ) -> None:
        if sealer.newest is None:
            raise ValueError("RELAY_ENCRYPTION_KEYS is not set: there is no key to seal with")
        self.redis = client
        self.sealer = sealer
        self.target: str = sealer.newest
        self.batch = batch
        self.dry_run = dry_run
        self._cas = load_script(client, "reseal.lua")
        self._token = uuid.uuid4().hex
        self._moving: list[str] = []  # what the values of the triple being built were

    def start(self, *, restart: bool = False) -> Progress:
        """Where to begin: the saved position of an unfinished walk to the same key (unless
        ``restart``), else the first batch. Takes the lock (``Busy`` if another run has it)."""
        if self.dry_run:
            return Progress(self.target)
        if not self.redis.set(LOCK, self._token, nx=True, ex=LOCK_TTL):
            raise Busy(
                f"another rotate-data is running (its lock {LOCK} expires within {LOCK_TTL}s)"
            )
        saved = self.redis.hgetall(STATE)
        if saved and not restart:
            progress = Progress.restored(saved)
            if progress.target == self.target and not progress.done:
                return progress
        progress = Progress(self.target)
        self.redis.delete(STATE)
        self.redis.hset(STATE, mapping=progress.saved())
        return progress

    def run(self, progress: Progress, on_batch: Callable[[Progress], None] | None = None) -> None:
        """Walk from ``progress`` to the end, saving the position after every batch."""
        try:
            while not progress.done:
                self.step(progress)
                if on_batch is not None:
                    on_batch(progress)
        finally:
            if not self.dry_run:
                self._release()

    def step(self, progress: Progress) -> None:
        """One ``SCAN`` batch of the current phase: read, re-seal, compare and set, save."""
        index = [p.name for p in PHASES].index(progress.phase)
        phase = PHASES[index]
        cursor, found = self.redis.scan(
            progress.cursor, match=phase.pattern, count=self.batch, _type=phase.redis_type
        )
        names = [k.decode(errors="replace") for k in found]
        if phase.redis_type == "hash":
            self._hashes(phase, names, progress)
        else:
            self._lists(names, progress)
        progress.cursor = int(cursor)
        if progress.cursor == 0:
            progress.phase = PHASES[index + 1].name if index + 1 < len(PHASES) else "done"
        if not self.dry_run:
            self._save(progress)

    # the records ----------------------------------------------------------------------
    def _hashes(self, phase: Phase, names: list[str], progress: Progress) -> None:
        fields = ["data"] if phase.name == "events" else ["event", *DELIVERY_FIELDS]
        pipe = self.redis.pipeline(transaction=False)
        for name in names:
            pipe.hmget(name, fields)
        calls: list[_Call] = []
        for name, values in zip(names, pipe.execute(), strict=True):
            record_id = name.removeprefix(phase.pattern.removesuffix("*"))
            call = _Call(name, "hash")
            for field_name, raw in zip(fields, values, strict=True):
                if not raw:
                    continue
                value = raw.decode(errors="replace")
                where = f"{name}#{field_name}"
                if field_name in ("data", "event"):
                    new = self._event(value, where, progress)
                else:
                    context = delivery_field(record_id, field_name)
                    new = self._value(value, context, where, progress)
                call.add(field_name, value, new, self._moving)
                self._moving = []
            progress.counts["records"] += 1
            if call.args:
                calls.append(call)
        self._write(calls, progress)

    def _lists(self, names: list[str], progress: Progress) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for name in names:
            pipe.lrange(name, 0, -1)
        calls: list[_Call] = []
        for name, items in zip(names, pipe.execute(), strict=True):
            delivery_id = name.removeprefix(keys.attempts(""))
            call = _Call(name, "list")
            for n, raw in enumerate(items):
                item = raw.decode(errors="replace")
                new = self._attempt(item, delivery_id, f"{name}[{n}]", progress)
                call.add(str(n), item, new, self._moving)
                self._moving = []
            progress.counts["records"] += 1
            if call.args:
                calls.append(call)
        self._write(calls, progress)

    def _attempt(self, item: str, delivery_id: str, where: str, progress: Progress) -> str | None:
        try:
            attempt: Any = json.loads(item)
        except ValueError:
            return None
        if not isinstance(attempt, dict):
            return None
        changed = False
        for name in ATTEMPT_FIELDS:
            value = attempt.get(name)
            if isinstance(value, str) and value:
                context = attempt_field(delivery_id, name)
                new = self._value(value, context, f"{where}.{name}", progress)
                if new is not None:
                    attempt[name], changed = new, True
        return json.dumps(attempt) if changed else None

    # one value ------------------------------------------------------------------------
    def _value(self, value: str, context: str, where: str, progress: Progress) -> str | None:
        """The value sealed under the newest key, or ``None`` to leave it as it is."""
        kid = self.sealer.sealed_with(value)
        if not self._tally(kid, progress):
            return None
        try:
            return self.sealer.seal(self.sealer.open(value, context), context)
        except Unreadable as exc:
            self._unreadable(where, exc, progress)
            return None

    def _event(self, value: str, where: str, progress: Progress) -> str | None:
        kid = self.sealer.sealed_with(value)
        if not self._tally(kid, progress):
            return None
        try:
            return self.sealer.seal_event(self.sealer.open_event(value))
        except Unreadable as exc:
            self._unreadable(where, exc, progress)
            return None

    def _tally(self, kid: str | None, progress: Progress) -> bool:
        """Count a value by its key; true if it needs sealing under the newest."""
        progress.by_key[kid or "plain"] += 1
        if kid == self.target:
            progress.counts["current"] += 1
            return False
        self._moving.append("sealed" if kid is None else "resealed")
        return True

    def _unreadable(self, where: str, exc: Unreadable, progress: Progress) -> None:
        self._moving.pop()  # it stays where it is
        progress.counts["unreadable"] += 1
        if len(progress.examples) < EXAMPLES:
            progress.examples.append(f"{where}: {exc}")

    def _write(self, calls: list[_Call], progress: Progress) -> None:
        """Compare and set each record's new values, all in one round trip; count each
        value moved by what it was (plain or under an older key), or as ``changed``."""
        if not self.dry_run and calls:
            pipe = self.redis.pipeline(transaction=False)
            for call in calls:
                pipe.evalsha(self._cas.sha, 1, call.name, call.kind, *call.args)
            try:
                answers = pipe.execute()
            except redis.exceptions.NoScriptError:  # the server forgot it: load, run each
                answers = [self._cas(keys=[c.name], args=[c.kind, *c.args]) for c in calls]
        else:
            answers = [[1] * len(call.moves) for call in calls]
        for call, flags in zip(calls, answers, strict=True):
            for moved, ok in zip(call.moves, flags, strict=True):
                progress.counts.update(moved if int(ok) else ["changed"] * len(moved))

    def _save(self, progress: Progress) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(STATE, mapping=progress.saved())
        pipe.get(LOCK)
        _, holder = pipe.execute()
        if holder is not None and holder.decode() != self._token:
            raise Busy("another rotate-data took over the walk; this one stops")
        self.redis.expire(LOCK, LOCK_TTL)

    def _release(self) -> None:
        if self.redis.get(LOCK) == self._token.encode():
            self.redis.delete(LOCK)


def saved_progress(client: redis.Redis) -> Progress | None:
    """The last walk's position and counts, if any (``relay keys rotate-data --status``)."""
    stored = client.hgetall(STATE)
    return Progress.restored(stored) if stored else None
