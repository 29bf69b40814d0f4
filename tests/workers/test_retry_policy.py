"""The retry schedule: full jitter within bounds, Retry-After honoured, limits enforced."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from relay.config.models import RetryPolicy
from workers.retry_policy import next_attempt_at, retry_delay

policies = st.builds(
    RetryPolicy,
    max_attempts=st.integers(1, 20),
    max_age=st.floats(1, 7 * 86400),
    backoff_base=st.floats(0.01, 60),
    backoff_cap=st.floats(0.5, 86400),
)


@given(policies, st.integers(1, 200), st.integers(0, 2**32))
def test_delay_stays_within_the_full_jitter_window(
    policy: RetryPolicy, attempt: int, seed: int
) -> None:
    delay = retry_delay(attempt, policy, rng=random.Random(seed))
    assert 0 <= delay <= min(policy.backoff_cap, policy.backoff_base * 2 ** (attempt - 1))


@given(policies, st.integers(1, 50), st.floats(0, 3600))
def test_retry_after_is_a_floor(policy: RetryPolicy, attempt: int, retry_after: float) -> None:
    assert retry_delay(attempt, policy, retry_after) >= retry_after


def test_fractional_base_is_not_truncated() -> None:
    policy = RetryPolicy(backoff_base=0.25, backoff_cap=100)
    rng = random.Random(1)
    delays = [retry_delay(3, policy, rng=rng) for _ in range(2000)]
    assert max(delays) <= 1.0
    assert max(delays) > 0.9  # the window is [0, 0.25·2²] = [0, 1], not [0, 0] or [0, 4]


@given(policies, st.floats(0, 1e6))
def test_attempts_and_age_limits_end_the_schedule(policy: RetryPolicy, start: float) -> None:
    now, attempt = start, 1
    while (due := next_attempt_at(attempt, policy, now=now, window_start=start)) is not None:
        assert due - start <= policy.max_age
        now, attempt = due, attempt + 1
    assert attempt <= policy.max_attempts


def test_a_retry_after_beyond_max_age_gives_up() -> None:
    policy = RetryPolicy(max_age=60)
    assert next_attempt_at(1, policy, now=0, window_start=0, retry_after=120) is None
    assert next_attempt_at(1, policy, now=0, window_start=0, retry_after=30) is not None
