"""Whether a target may be sent to now: pause, throttle, breaker, attempts in flight, rates.

``admit`` is one Redis script per attempt, shared by every worker process: it answers
"go" or "wait this long, because ...". A delivery told to wait is parked in the durable
schedule without spending an attempt. ``record`` feeds each attempt's outcome to the
circuit breaker (see ``relay.config.circuit``) and gives back the attempt's slot. All
times come from Redis's own clock, so workers with skewed clocks still share one window.
``status`` is what the CLI and the API show.

The cap on attempts in flight (``max_in_flight``, a bulkhead) is shared by every worker
process rather than counted per process: one Redis set per target, touched by the two
scripts that already run per attempt, so it costs no extra round trip, and it bounds
both what a hung target can hold in any one worker (at most the cap) and how many
connections the whole fleet opens to it. Each slot is a lease ending when the attempt's
lock does, so the slot of a worker killed mid-attempt comes back on its own. A running
attempt past the slow-call threshold is counted as a breaker failure by the next
``admit`` for the target, at once, not when it ends.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis

from relay.config.circuit import CircuitPolicy
from relay.config.rates import Rate
from relay.state import keys
from relay.state.lua import ScriptCall, load_script

PAUSE_RECHECK = 10.0  # a paused target's deliveries look again this often
PROBE_BUSY_WAIT = 2.0  # others wait at least this long while a half-open probe runs
FULL_WAIT = 0.1  # and at least this long while the target has max_in_flight attempts running


@dataclass(frozen=True)
class Admission:
    """``wait`` seconds (0 = go now) and why (``ok``, ``paused``, ``concurrency_limited``,
    ``rate_limited``, ...)."""

    reason: str
    wait: float

    @property
    def admitted(self) -> bool:
        return self.wait <= 0


def admission(answer: Any) -> Admission:
    """The verdict an ``admit`` script answered."""
    reason, wait_ms = answer
    return Admission(reason.decode() if isinstance(reason, bytes) else reason, int(wait_ms) / 1000)


def _policy_args(circuit: CircuitPolicy) -> list[Any]:
    """The breaker's policy as ``lib/breaker.lua``'s ``breaker_policy`` reads it."""
    return [
        circuit.failures,
        circuit.failure_rate,
        int(circuit.window * 1000),
        circuit.min_calls,
        int(circuit.open_for * 1000),
        int(circuit.max_open_for * 1000),
    ]


def breaker_state(answer: Any) -> str:
    """The state a ``record`` script answered."""
    return answer.decode() if isinstance(answer, bytes) else str(answer)


class TargetGate:
    """Pause, platform throttle, circuit breaker and rate limits of every target."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._admit = load_script(client, "gate_admit.lua")
        self._record = load_script(client, "gate_record.lua")

    def admit(
        self,
        target_id: str,
        token: str,
        *,
        rates: Sequence[Rate],
        circuit: CircuitPolicy,
        probe_ttl: float,
        max_in_flight: int | None = None,
        slow_after: float | None = None,
    ) -> Admission:
        """May ``token`` (a delivery id) be sent to the target now? Takes a rate slot and
        a slot among the attempts in flight if so."""
        call = self.admit_call(
            target_id,
            token,
            rates=rates,
            circuit=circuit,
            probe_ttl=probe_ttl,
            max_in_flight=max_in_flight,
            slow_after=slow_after,
        )
        return admission(call.run())

    def admit_call(
        self,
        target_id: str,
        token: str,
        *,
        rates: Sequence[Rate],
        circuit: CircuitPolicy,
        probe_ttl: float,
        max_in_flight: int | None = None,
        slow_after: float | None = None,
    ) -> ScriptCall:
        """``admit`` as a call to run together with others (``relay.state.lua``); read its
        answer with ``admission``. ``probe_ttl`` is the attempt's lease (its lock's TTL):
        how long its probe and its slot last if its worker dies; ``max_in_flight`` None
        is no cap, ``slow_after`` None no slow-call signal."""
        script_keys = [
            keys.target_state(target_id),
            keys.target_throttle(target_id),
            keys.target_calls(target_id),
            keys.target_running(target_id),
            keys.target_slow(target_id),
        ]
        args: list[Any] = [
            token,
            int(probe_ttl * 1000),
            "1" if circuit.enabled else "0",
            int(PAUSE_RECHECK * 1000),
            int(PROBE_BUSY_WAIT * 1000),
            max_in_flight or 0,
            int(FULL_WAIT * 1000),
            int(slow_after * 1000) if slow_after and circuit.enabled else 0,
            *_policy_args(circuit),
        ]
        # Per rate (gate_admit.lua's header): a key after those five, (limit, window) after these.
        for index, rate in enumerate(rates):
            script_keys.append(keys.target_rate(target_id, index))
            args += [rate.limit, int(rate.window * 1000)]
        return ScriptCall(self._admit, script_keys, args)

    def record(
        self, target_id: str, token: str, *, ok: bool, counts: bool, circuit: CircuitPolicy
    ) -> str:
        """Feed one attempt's outcome to the breaker and give back its slot; returns the
        breaker's state after it, or ``opened``/``recovered`` when this outcome changed it."""
        return breaker_state(
            self.record_call(target_id, token, ok=ok, counts=counts, circuit=circuit).run()
        )

    def record_call(
        self, target_id: str, token: str, *, ok: bool, counts: bool, circuit: CircuitPolicy
    ) -> ScriptCall:
        """``record`` as a call to run together with others (``relay.state.lua``); read
        its answer with ``breaker_state``."""
        return ScriptCall(
            self._record,
            [
                keys.target_state(target_id),
                keys.target_calls(target_id),
                keys.target_running(target_id),
                keys.target_slow(target_id),
            ],
            [
                "1" if ok else "0",
                token,
                *_policy_args(circuit),
                "1" if counts and circuit.enabled else "0",
            ],
        )

    def throttle(self, target_id: str, seconds: float) -> None:
        """The platform blocks the whole target: nobody sends to it for ``seconds``."""
        until_ms = int((time.time() + seconds) * 1000)
        self.redis.set(keys.target_throttle(target_id), until_ms, px=max(1, int(seconds * 1000)))

    def pause(self, target_id: str) -> None:
        self.redis.hset(keys.target_state(target_id), "paused", "1")

    def resume(self, target_id: str) -> None:
        self.redis.hdel(keys.target_state(target_id), "paused")

    def reset(self, target_id: str) -> None:
        """Close the breaker and forget its counters (an operator's decision)."""
        pipe = self.redis.pipeline()
        pipe.hdel(
            keys.target_state(target_id),
            "state",
            "open_until",
            "opened",
            "opened_at",
            "probe",
            "probe_until",
            "consecutive",
        )
        # The running attempts keep their slots: they still hold their connections.
        pipe.delete(keys.target_calls(target_id), keys.target_throttle(target_id))
        pipe.execute()

    def status(
        self, target_id: str, rates: Sequence[Rate] = (), max_in_flight: int | None = None
    ) -> dict[str, Any]:
        """Pause flag, breaker state and counters, throttle, attempts in flight (with the
        cap, if known) and rate-window usage."""
        now_ms = time.time() * 1000
        pipe = self.redis.pipeline()
        pipe.hgetall(keys.target_state(target_id))
        pipe.get(keys.target_throttle(target_id))
        pipe.zcount(keys.target_running(target_id), f"({now_ms}", "+inf")  # leases not ended
        for index, rate in enumerate(rates):
            pipe.zcount(keys.target_rate(target_id, index), now_ms - rate.window * 1000, "+inf")
        state_raw, throttle_raw, in_flight, *used = pipe.execute()
        state = {k.decode(): v.decode() for k, v in state_raw.items()}
        circuit = state.get("state", "closed")
        open_until = float(state.get("open_until") or 0) / 1000
        if circuit == "open" and open_until <= time.time():
            circuit = "half_open"  # the next delivery becomes the probe
        throttled_until = float(throttle_raw or 0) / 1000
        return {
            "paused": state.get("paused") == "1",
            "circuit": circuit,
            "open_until": open_until or None,
            "consecutive_failures": int(state.get("consecutive") or 0),
            "successes": int(state.get("successes") or 0),
            "failures": int(state.get("failures") or 0),
            "slow_calls": int(state.get("slow_calls") or 0),
            "in_flight": int(in_flight),
            "max_in_flight": max_in_flight,
            "throttled_until": throttled_until if throttled_until > time.time() else None,
            "rates": [
                {"rate": str(rate), "limit": rate.limit, "per": rate.per, "used": int(n)}
                for rate, n in zip(rates, used, strict=True)
            ],
        }
