"""Sliding-window rate limits in Redis, with Redis's own clock.

A rate is "at most ``limit`` in any window of ``per`` seconds", which is what platforms
such as DingTalk (20 a minute per robot) count. The target gate (``relay.state.gate``)
uses the same windows inside its one script.
"""

from __future__ import annotations

from typing import Any

import redis

from relay.config.rates import Rate

# Lua shared by every script that enforces rates: Redis's clock in ms, and sliding
# windows over the ZSETs KEYS[first..]; window i reads its limit and window (ms) from
# ARGV[2i] and ARGV[2i+1], and ARGV[1] prefixes the members it adds.
WINDOWS_LUA = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function window_wait(first, now)
  local wait = 0
  for i = first, #KEYS do
    local limit, window = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
    redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - window)
    if redis.call('ZCARD', KEYS[i]) >= limit then
      local oldest = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')
      local w = tonumber(oldest[2]) + window - now + 1
      if w > wait then wait = w end
    end
  end
  return wait
end
local function window_take(first, now)
  for i = first, #KEYS do
    redis.call('ZADD', KEYS[i], now, ARGV[1] .. ':' .. now .. ':' .. math.random(1000000))
    redis.call('PEXPIRE', KEYS[i], tonumber(ARGV[2 * i + 1]))
  end
end
"""

# KEYS: one ZSET per rate. ARGV: member prefix, then (limit, window ms) per rate.
_ACQUIRE = (
    WINDOWS_LUA
    + """
local now = now_ms()
local wait = window_wait(1, now)
if wait > 0 then return wait end
window_take(1, now)
return 0
"""
)


class SlidingWindows:
    """Standalone sliding-window limits in Redis (the inbound limit of each source).

    The same algorithm as the target gate's rate check, without the gate's other
    states: ``acquire`` takes a slot in every window or says how long to wait.
    """

    def __init__(self, client: redis.Redis) -> None:
        self._acquire = client.register_script(_ACQUIRE)

    def acquire(self, key_of: Any, rates: list[Rate], member: str = "r") -> float:
        """Seconds to wait (0: a slot was taken). ``key_of(i)`` names rate i's key."""
        if not rates:
            return 0.0
        args: list[Any] = [member]
        for rate in rates:
            args += [rate.limit, int(rate.window * 1000)]
        waited = self._acquire(keys=[key_of(i) for i in range(len(rates))], args=args)
        return int(waited) / 1000
