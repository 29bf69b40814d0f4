"""Outbound rate limits: ``"20/min"``-style rates and their parsing.

Rates are enforced as sliding windows in Redis (``relay.state.windows``, and the target
gate in ``relay.state.gate``), shared by
every worker process: at most ``limit`` sends in *any* window of ``per`` seconds, which
is what platforms such as DingTalk (20 a minute per robot) count.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from relay.config.units import Duration, parse_duration

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
