"""Outbound rate limits: ``"20/min"``-style rates and their parsing.

A target's rates are enforced as sliding windows in Redis by ``relay.gate``, shared by
every worker process: at most ``limit`` sends in *any* window of ``per`` seconds, which
is what platforms such as DingTalk (20 a minute per robot) count.
"""

from __future__ import annotations

import re
from typing import Any

import redis
from pydantic import BaseModel, ConfigDict, Field, model_validator

from relay.durations import Duration, parse_duration

_UNITS = {
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)?\s*([a-z]+)\s*$")
OFF = ("off", "none", "unlimited")


class Rate(BaseModel):
    """At most ``limit`` sends in any window of ``per`` seconds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    limit: int = Field(ge=1, le=1_000_000)
    per: Duration = Field(gt=0)

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: Any) -> Any:
        return parse_rate_text(value) if isinstance(value, str) else value

    @property
    def window(self) -> float:
        """The enforced window: ``per`` plus a small margin (2 %, at most 1 s) that keeps
        us under the platform's count despite send-to-arrival jitter."""
        return self.per + min(1.0, self.per * 0.02)

    def __str__(self) -> str:
        return f"{self.limit}/{self.per:g}s"


def parse_rate_text(text: str) -> dict[str, Any]:
    """``"20/min"``, ``"5/s"``, ``"100/10m"`` → ``{limit, per}``; ``ValueError`` otherwise."""
    match = _RATE.match(text.lower())
    if not match:
        raise ValueError(f"{text!r} is not a rate such as 20/min, 5/s or 100/10m")
    count, amount, unit = match.groups()
    if unit in _UNITS:
        per = float(amount or 1) * _UNITS[unit]
    else:
        try:
            per = parse_duration(f"{amount or 1}{unit}")
        except ValueError:
            raise ValueError(f"{text!r} is not a rate such as 20/min, 5/s or 100/10m") from None
    return {"limit": int(count), "per": per}


def rates_value(value: Any) -> Any:
    """Normalise a config value for ``list[Rate]``: ``None`` keeps the kind's default;
    ``off``/``false`` means no limit; one rate becomes a list of one."""
    if value is None:
        return None
    if value is False or (isinstance(value, str) and value.strip().lower() in OFF):
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def parse_rates(values: Any) -> list[Rate]:
    """Rates from a kind's defaults such as ``("20/min",)``."""
    return [Rate.model_validate(v) for v in rates_value(values) or []]


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
