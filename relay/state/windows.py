"""Sliding-window rate limits in Redis, with Redis's own clock.

A rate is "at most ``limit`` in any window of ``per`` seconds", which is what platforms
such as DingTalk (20 a minute per robot) count. The target gate (``relay.state.gate``)
uses the same windows inside its one script (both include
``relay/state/lua/lib/windows.lua``).
"""

from __future__ import annotations

from typing import Any

import redis

from relay.config.rates import Rate
from relay.state.lua import load_script


class SlidingWindows:
    """Standalone sliding-window limits in Redis (the inbound limit of each source).

    The same algorithm as the target gate's rate check, without the gate's other
    states: ``acquire`` takes a slot in every window or says how long to wait.
    """

    def __init__(self, client: redis.Redis) -> None:
        self._acquire = load_script(client, "windows_acquire.lua")

    def acquire(self, key_of: Any, rates: list[Rate], member: str = "r") -> float:
        """Seconds to wait (0: a slot was taken). ``key_of(i)`` names rate i's key."""
        if not rates:
            return 0.0
        args: list[Any] = [member]
        for rate in rates:
            args += [rate.limit, int(rate.window * 1000)]
        waited = self._acquire(keys=[key_of(i) for i in range(len(rates))], args=args)
        return int(waited) / 1000
