"""Exponential backoff with full jitter: how long to wait after the n-th failure in a row.

Delivery retries (``workers.retry_policy``) and the Telegram poller
(``relay.intake.poller``) both wait this way. It lives here, a leaf that imports nothing
of the relay, so the poller may use it without ``relay`` importing ``workers``.

Full jitter (uniform in ``[0, ceiling]``) rather than a fixed or half-random wait: many
clients that failed together (a target down, the Bot API restarting) then come back
spread out instead of in step.
"""

from __future__ import annotations

import random

# 2**1000 times any positive base is beyond every cap (or inf): the ceiling is the cap
# from there on, and the power itself never overflows.
_MAX_EXPONENT = 1000


def full_jitter(
    failures: int,
    *,
    base: float,
    cap: float,
    floor: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Uniform in [0, min(cap, base·2^(failures-1))], never below ``floor`` (a Retry-After).

    ``failures`` counts from 1 (the wait after the first failure is at most ``base``).
    """
    if failures < 1:
        raise ValueError(f"failures counts from 1, not {failures}")
    ceiling = min(cap, base * 2.0 ** min(failures - 1, _MAX_EXPONENT))
    delay = (rng or random).uniform(0, ceiling)
    return delay if floor is None else max(delay, floor)
