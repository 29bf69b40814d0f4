"""The delivery policy: one attempt, its typed outcome, and what happens next.

Success → delivered. ``RetryableDeliveryError`` → back off (exponential, full jitter,
at least the remote's ``Retry-After``) through the durable schedule, until the
target's ``max_attempts`` or ``max_age`` is reached → dead letter.
``PermanentDeliveryError`` → dead letter at once. The attempt counter is bumped
*before* the adapter runs, so a delivery that keeps killing its worker also ends in
the dead-letter queue instead of looping.
"""

from __future__ import annotations

import random
import time
import traceback
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import redis
import structlog

from relay.config.models import RouteMode, TargetConfig
from relay.errors import (
    DeliveryError,
    PermanentDeliveryError,
    RetryableDeliveryError,
    TargetThrottled,
)
from relay.redact import redact
from relay.state import keys
from relay.state.deliveries import Begun
from relay.state.gate import Admission, admission, breaker_state
from relay.state.heartbeats import Holding
from relay.state.lanes import LaneClaim, Lanes, LaneVerdict, ordering_hold
from relay.state.lifecycle import AttemptOutcome, ClaimVerdict, DeliveryRecord, DeliveryStatus
from relay.state.lua import ScriptCall, run_together
from workers import chain
from workers.concurrency import run_side_by_side
from workers.context import WorkerContext
from workers.net import dryrun
from workers.pm import updates
from workers.retry_policy import next_attempt_at
from workers.targets.base import DeliveryContext

log = structlog.get_logger("relay.delivery")
LOCK_MARGIN = 5.0  # the task is killed at its time limit; the lock outlives it a little
_SPREAD = frozenset({"circuit_open", "circuit_probing", "concurrency_limited"})


def _attempt(
    n: int, started: float, elapsed: float, outcome: AttemptOutcome, **extra: Any
) -> dict[str, Any]:
    record = {
        "n": n,
        "started_at": round(started, 6),
        "duration_ms": round(elapsed * 1000, 2),
        "outcome": outcome,
    }
    record.update({k: v for k, v in extra.items() if v is not None})
    return record


def _dead(
    ctx: WorkerContext,
    bound: Any,
    delivery_id: str,
    record: dict[str, Any] | None,
    reason: str,
    event_json: str,
    *,
    token: str,
    breaker: tuple[TargetConfig, ScriptCall] | None = None,
) -> str:
    """Dead-letter the delivery, keeping the last attempt (if any) and the event; the
    attempt's ``breaker`` record goes in the same round trip."""
    also = [breaker[1]] if breaker else []
    answers = ctx.store.finish_dead(delivery_id, record, reason, event_json, token=token, also=also)
    if breaker:
        _log_breaker(bound, breaker[0], answers)
    bound.warning("deliver.dead", reason=reason, error=(record or {}).get("error"))
    return AttemptOutcome.DEAD


def _context(
    ctx: WorkerContext,
    delivery: DeliveryRecord,
    delivery_id: str,
    attempt: int,
    event_json: str,
    target: TargetConfig,
) -> DeliveryContext:
    routes = ctx.config.routes
    route_index = -1 if delivery.route is None else delivery.route
    route_template = routes[route_index].template if 0 <= route_index < len(routes) else None
    source = ctx.config.sources.get(delivery.source or "")
    chained = chain.read_vars(delivery.vars)
    variables: Mapping[str, Any] = chained.vars
    if "burst" in variables:  # a task update: the changes it gathered
        variables = {**variables, **updates.gathered(ctx, delivery_id, variables)}
    shadow = delivery.mode is RouteMode.SHADOW
    run = None
    if shadow:  # its requests are captured on the record, never sent
        secrets = ctx.config.secrets | dryrun.option_secrets(target.options)
        run = dryrun.recording(ctx.store.redis, delivery_id, secrets, ctx.store.sealer)
    dryrun.switch(run)  # right before the adapter runs, in its green thread
    return DeliveryContext(
        delivery_id=delivery_id,
        attempt=attempt,
        event_json=event_json,
        timeout=target.timeout or ctx.settings.http_timeout,
        # a chained delivery says what it posts; the route's template is its parent's
        template=(chained.template or target.template)
        if delivery.parent or delivery.vars
        else (route_template or target.template),
        source_kind=source.kind if source else None,
        people=ctx.people,
        state=ctx.store.redis,
        source=source,
        retention=ctx.settings.retention,
        link_retention=ctx.settings.task_link_retention,
        vars=variables,
        shadow=shadow,
    )


def _wait(
    ctx: WorkerContext,
    bound: Any,
    delivery_id: str,
    admission: Admission,
    attempts: int,
    *,
    token: str,
) -> str:
    """Park a delivery the target cannot take now; the attempt is not spent. Waiters for
    a sick target (breaker, attempts in flight) wake spread over half their wait again,
    so a backlog parked together does not come back as one burst in the shared queue."""
    spread = admission.wait * 0.5 if admission.reason in _SPREAD else min(1.0, admission.wait * 0.1)
    wait = admission.wait + random.uniform(0, spread)
    ctx.store.park(
        delivery_id, time.time() + wait, admission.reason, attempts=attempts, token=token
    )
    bound.info("deliver.wait", reason=admission.reason, in_seconds=round(wait, 3))
    return "waiting"


def _breaker(
    ctx: WorkerContext, bound: Any, claimed: _Claimed, failure: DeliveryError | None
) -> ScriptCall | None:
    """The outcome as the breaker's record, to run with the attempt's finish. Only
    retryable failures say the target is unwell; a platform's throttle makes the whole
    target wait instead. A shadow attempt sent nothing, so it says nothing of the target
    (a captured success must not close a circuit the live deliveries opened)."""
    if claimed.shadow:
        return None
    target, delivery_id = claimed.target, claimed.delivery_id
    if isinstance(failure, TargetThrottled):
        ctx.gate.throttle(target.id, failure.retry_after or 60.0)
        bound.warning("target.throttled", for_seconds=failure.retry_after)
    counts = failure is None or (
        isinstance(failure, RetryableDeliveryError) and not isinstance(failure, TargetThrottled)
    )
    return ctx.gate.record_call(
        target.id, delivery_id, ok=failure is None, counts=counts, circuit=target.circuit
    )


def _log_breaker(bound: Any, target: TargetConfig, answers: list[Any]) -> None:
    if not answers:  # no breaker record went with the finish
        return
    state = breaker_state(answers[0])
    if state == "opened":
        bound.warning("circuit.opened", target=target.id)
    elif state == "recovered":
        bound.info("circuit.closed", target=target.id)


@dataclass(frozen=True)
class _Claimed:
    """A delivery claimed for one attempt, with what sending it needs."""

    delivery_id: str
    begun: Begun
    target: TargetConfig
    event_json: str
    bound: Any
    hold: float | None = None  # an ordered delivery's lane hold (relay.state.lanes)
    lane: LaneVerdict | None = None  # its lane's answer: the break it makes, the next one

    @property
    def shadow(self) -> bool:
        """Captured, never sent: it takes no rate slot and says nothing of the target."""
        return self.begun.delivery.mode is RouteMode.SHADOW


def run_delivery(ctx: WorkerContext, delivery_id: str) -> str:
    """Run one attempt of a delivery if it is still due; return what happened."""
    return run_deliveries(ctx, [delivery_id])[0]


def run_deliveries(
    ctx: WorkerContext, delivery_ids: Sequence[str], *, holding: Holding | None = None
) -> list[str]:
    """Run one attempt of each delivery still due, side by side; what happened to each.

    The deliveries of one task message are claimed in one round trip and pass the
    target gate in another; each then sends and finishes on its own. ``holding`` notes
    the runs as this worker's, to be given back at once if it dies.
    """
    lock_ttl = ctx.settings.task_time_limit + LOCK_MARGIN
    claims = [(delivery_id, uuid.uuid4().hex) for delivery_id in delivery_ids]
    begun = ctx.store.begin_many(claims, lock_ttl, time.time() + lock_ttl, holding=holding)
    outcomes: list[str] = [""] * len(delivery_ids)
    ready: list[tuple[int, _Claimed]] = []
    for n, (delivery_id, claim) in enumerate(zip(delivery_ids, begun, strict=True)):
        claimed = _claim(ctx, delivery_id, claim)
        if isinstance(claimed, str):
            outcomes[n] = claimed
        else:
            ready.append((n, claimed))
    ready = _in_lanes(ctx, ready, outcomes)
    admitted = [(n, c) for n, c in ready if c.shadow]
    ready = [(n, c) for n, c in ready if not c.shadow]
    gate_calls = [
        ctx.gate.admit_call(
            c.target.id,
            c.delivery_id,
            rates=ctx.rates[c.target.id],
            circuit=c.target.circuit,
            probe_ttl=lock_ttl,
            max_in_flight=c.target.max_in_flight,
            slow_after=c.target.circuit.slow_after(c.target.timeout or ctx.settings.http_timeout),
        )
        for _, c in ready
    ]
    for (n, c), answer in zip(ready, run_together(ctx.store.redis, gate_calls), strict=True):
        verdict = admission(answer)
        if verdict.admitted:
            admitted.append((n, c))
        else:
            outcomes[n] = _wait(
                ctx, c.bound, c.delivery_id, verdict, c.begun.attempt - 1, token=c.begun.token
            )
    sent = run_side_by_side(lambda item: _send(ctx, item[1]), admitted)
    for (n, _), outcome in zip(admitted, sent, strict=True):
        outcomes[n] = outcome
    return outcomes


def _claim(ctx: WorkerContext, delivery_id: str, begun: Begun) -> _Claimed | str:
    """The claimed delivery if it is to be sent, else what happened to it instead."""
    store = ctx.store
    if begun.verdict is ClaimVerdict.MISSING:
        store.redis.zrem(keys.INFLIGHT, f"deliver:{delivery_id}")
    if begun.verdict is not ClaimVerdict.RUN:
        log.info("deliver.skipped", delivery_id=delivery_id, reason=begun.verdict)
        return begun.verdict
    delivery = begun.delivery
    bound = log.bind(
        delivery_id=delivery_id,
        event_id=delivery.event_id,
        target=delivery.target,
        attempt=begun.attempt,
    )
    event_json = begun.event_json
    if begun.previous_status is DeliveryStatus.RUNNING:
        store.add_attempt(
            delivery_id,
            _attempt(
                begun.attempt - 1,
                delivery.updated_at or 0.0,
                0,
                AttemptOutcome.LOST,
                error="the worker stopped during this attempt",
            ),
        )
    target_config = ctx.config.targets.get(delivery.target or "")
    if target_config is None or event_json is None:
        reason = (
            "target is no longer configured"
            if target_config is None
            else begun.unreadable or "the event record expired before delivery"
        )
        kept = event_json or begun.stored_event or "null"  # an unreadable event: as stored
        return _dead(ctx, bound, delivery_id, None, reason, kept, token=begun.token)
    policy = target_config.retry
    if begun.attempt_since_replay > policy.max_attempts:
        reason = f"gave up after {policy.max_attempts} attempts"
        return _dead(ctx, bound, delivery_id, None, reason, event_json, token=begun.token)

    gathering = updates.waiting(chain.read_vars(delivery.vars).vars)
    if gathering > 0:  # a task update waits for the rest of a burst: no attempt spent
        ctx.store.park(
            delivery_id,
            time.time() + gathering,
            "gathering",
            attempts=begun.attempt - 1,
            token=begun.token,
        )
        bound.info("deliver.wait", reason="gathering", in_seconds=round(gathering, 3))
        return "waiting"
    hold = _hold(ctx, delivery, target_config)
    return _Claimed(delivery_id, begun, target_config, event_json, bound, hold)


def _hold(ctx: WorkerContext, delivery: DeliveryRecord, target: TargetConfig) -> float | None:
    """The lane hold of an ordered delivery, else ``None``, as its route or target says
    now: with ordering turned off, one still in a lane goes without asking it. Chained
    and shadow deliveries join no lane."""
    if delivery.parent or delivery.vars or delivery.mode is RouteMode.SHADOW:
        return None
    routes, index = ctx.config.routes, delivery.route
    route = routes[index] if index is not None and 0 <= index < len(routes) else None
    return ordering_hold(route, target)


def _in_lanes(
    ctx: WorkerContext, ready: list[tuple[int, _Claimed]], outcomes: list[str]
) -> list[tuple[int, _Claimed]]:
    """The claimed deliveries that may go on to the gate: an ordered one only as the head
    of its lane; the others are held there by the same script. Asked before the gate, so
    a held delivery takes no slot of its target."""
    claims = {
        n: LaneClaim(c.delivery_id, c.begun.token, c.begun.attempt - 1, c.hold)
        for n, c in ready
        if c.hold is not None
    }
    if not claims:
        return ready
    answers = Lanes(ctx.store.redis).admit_many(list(claims.values()), time.time())
    verdicts = dict(zip(claims, answers, strict=True))
    going: list[tuple[int, _Claimed]] = []
    for n, c in ready:
        verdict = verdicts.get(n)
        if verdict is not None and not verdict.go:
            behind = verdict.blocker or "an earlier event's fan-out"
            c.bound.info("deliver.held", behind=behind, until=verdict.until)
            outcomes[n] = "held"
            continue
        if verdict is not None and verdict.broke:
            c.bound.warning("deliver.order_broken", **verdict.broke)
        going.append((n, c if verdict is None else replace(c, lane=verdict)))
    return going


def _hand_over(ctx: WorkerContext, claimed: _Claimed) -> None:
    """Queue the next delivery of the lane now, instead of at the scheduler's next sweep:
    the finish made it due, and of the two that try to move it, one does."""
    lane = claimed.lane
    if lane is None or lane.next_id is None or lane.next_queue is None:
        return
    try:
        ctx.outbox.release_due(lane.next_id, lane.next_queue, time.time())
    except redis.RedisError as exc:  # the scheduler moves it
        claimed.bound.warning("deliver.hand_over_failed", error=type(exc).__name__)


def _send(ctx: WorkerContext, claimed: _Claimed) -> str:
    """Send one admitted delivery and record the attempt's outcome."""
    store = ctx.store
    delivery_id, begun, target_config = claimed.delivery_id, claimed.begun, claimed.target
    delivery, event_json, bound = begun.delivery, claimed.event_json, claimed.bound
    policy = target_config.retry
    broke = claimed.lane.broke if claimed.lane else None  # sent before an earlier one
    context = _context(ctx, delivery, delivery_id, begun.attempt, event_json, target_config)
    started, t0 = time.time(), time.perf_counter()
    failure: DeliveryError
    try:
        result = ctx.targets[target_config.id].deliver(context)
    except DeliveryError as exc:
        failure = exc
    except Exception as exc:  # an adapter bug must not lose the event: retry, then dead-letter
        trace = "".join(traceback.format_exception(exc))
        bound.error("deliver.adapter_error", traceback=redact(trace, ctx.config.secrets))
        failure = RetryableDeliveryError(f"unexpected {type(exc).__name__}: {exc}")
    else:
        elapsed = time.perf_counter() - t0
        record = _attempt(
            begun.attempt,
            started,
            elapsed,
            AttemptOutcome.DELIVERED,
            status=result.status,
            response=redact(result.excerpt, ctx.config.secrets),
            order_break=broke,
        )
        if result.chain:  # before finishing: a crash in between repeats nothing twice
            chain.start(ctx, delivery, delivery_id, result.chain)
        breaker = _breaker(ctx, bound, claimed, None)
        also = [breaker] if breaker else []
        _log_breaker(
            bound,
            target_config,
            store.finish_delivered(delivery_id, record, token=begun.token, also=also),
        )
        bound.info("deliver.ok", ms=round(elapsed * 1000, 2), status=result.status)
        _hand_over(ctx, claimed)
        return AttemptOutcome.DELIVERED

    breaker = _breaker(ctx, bound, claimed, failure)
    retry_after = getattr(failure, "retry_after", None)
    record = _attempt(
        begun.attempt,
        started,
        time.perf_counter() - t0,
        AttemptOutcome.RETRY,
        status=failure.status,
        retry_after=retry_after,
        response=redact(failure.excerpt, ctx.config.secrets),
        error=redact(failure.message, ctx.config.secrets),
        order_break=broke,
    )
    if isinstance(failure, PermanentDeliveryError):
        reason = "permanent failure"
        due = None
    else:
        due = next_attempt_at(
            begun.attempt_since_replay,
            policy,
            now=time.time(),
            retry_after=retry_after,
            window_start=started if delivery.window_start is None else delivery.window_start,
        )
        reason = (
            f"retries exhausted after {begun.attempt_since_replay} attempts"
            if begun.attempt_since_replay >= policy.max_attempts
            else f"max_age {policy.max_age:g}s reached"
        )
    if due is None:
        record["outcome"] = AttemptOutcome.FAILED
        dead = _dead(
            ctx,
            bound,
            delivery_id,
            record,
            reason,
            event_json,
            token=begun.token,
            breaker=(target_config, breaker) if breaker else None,
        )
        _hand_over(ctx, claimed)
        return dead
    also = [breaker] if breaker else []
    retried = store.finish_retry(delivery_id, record, due, token=begun.token, also=also)
    _log_breaker(bound, target_config, retried)
    bound.info("deliver.retry", in_seconds=round(due - time.time(), 3), error=record.get("error"))
    return AttemptOutcome.RETRY
