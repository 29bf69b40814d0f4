"""Full-jitter backoff: every wait inside [0, min(cap, base·2ⁿ⁻¹)], spread over all of it,
never below the floor, and reproducible from a seeded RNG."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.backoff import full_jitter


@given(
    st.integers(1, 5000),
    st.floats(1e-6, 1e6),
    st.floats(1e-3, 1e7),
    st.integers(0, 2**32),
)
def test_every_wait_is_inside_the_window(failures: int, base: float, cap: float, seed: int) -> None:
    wait = full_jitter(failures, base=base, cap=cap, rng=random.Random(seed))
    assert 0 <= wait <= min(cap, base * 2.0 ** min(failures - 1, 1000))


@pytest.mark.parametrize("failures, ceiling", [(1, 0.5), (2, 1.0), (3, 2.0), (4, 3.0), (60, 3.0)])
def test_the_window_doubles_up_to_the_cap(failures: int, ceiling: float) -> None:
    rng = random.Random(5)
    waits = [full_jitter(failures, base=0.5, cap=3.0, rng=rng) for _ in range(2000)]
    assert max(waits) <= ceiling
    assert max(waits) > 0.95 * ceiling  # it reaches the top of the window ...
    assert min(waits) < 0.05 * ceiling  # ... and the bottom: full jitter, not equal jitter


def test_a_seeded_rng_gives_the_same_waits() -> None:
    first, second = random.Random(11), random.Random(11)
    assert [full_jitter(n, base=1, cap=60, rng=first) for n in range(1, 10)] == [
        full_jitter(n, base=1, cap=60, rng=second) for n in range(1, 10)
    ]


@given(st.integers(1, 100), st.floats(0, 1e5), st.integers(0, 2**32))
def test_the_floor_is_never_undercut(failures: int, floor: float, seed: int) -> None:
    wait = full_jitter(failures, base=2, cap=3600, floor=floor, rng=random.Random(seed))
    assert wait >= floor
    if floor > 3600:
        assert wait == floor  # a Retry-After beyond the cap is waited, not shortened


def test_failures_count_from_one() -> None:
    with pytest.raises(ValueError, match="counts from 1"):
        full_jitter(0, base=1, cap=10)
