"""When a failed attempt is tried again: exponential backoff with full jitter, capped
by the target's ``max_attempts`` and ``max_age``, never sooner than ``Retry-After``."""

from __future__ import annotations

import random

from relay.backoff import full_jitter
from relay.config.models import RetryPolicy


def retry_delay(
    attempt: int,
    policy: RetryPolicy,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Full jitter: uniform in [0, min(cap, base·2^(attempt-1))], never below ``retry_after``."""
    return full_jitter(
        attempt,
        base=policy.backoff_base,
        cap=policy.backoff_cap,
        floor=retry_after,
        rng=rng,
    )


def next_attempt_at(
    attempt: int,
    policy: RetryPolicy,
    *,
    now: float,
    window_start: float,
    retry_after: float | None = None,
) -> float | None:
    """When to try again after failed ``attempt``, or ``None`` when the policy is spent."""
    if attempt >= policy.max_attempts:
        return None
    due = now + retry_delay(attempt, policy, retry_after)
    if due - window_start > policy.max_age:
        return None
    return due
