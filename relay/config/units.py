"""Human-friendly durations and sizes ("90s", "24h", "7d", "1MiB") used by config and settings."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated

from pydantic import BeforeValidator

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
# Decimal, so a duration written round comes out round: "9ms" is 0.009, "1.1h" is 3960.0
# (binary floats would give 0.009000000000000001 and 3960.0000000000005).
_DURATION_UNITS = {
    "ms": Decimal("0.001"),
    "s": Decimal(1),
    "m": Decimal(60),
    "h": Decimal(3600),
    "d": Decimal(86400),
    "w": Decimal(604800),
    None: Decimal(1),
}

_SIZE = re.compile(r"^\s*(\d+)\s*(b|kb|kib|mb|mib|gb|gib|k|m|g)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    None: 1,
    "b": 1,
    "k": 1024,
    "kb": 1000,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1000**3,
    "gib": 1024**3,
}


def parse_duration(value: object) -> float:
    """Seconds from a number or a string such as ``"30s"``, ``"15m"``, ``"24h"``, ``"7d"``."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 15m, 24h or 7d")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(Decimal(match.group(1)) * _DURATION_UNITS[match.group(2)])
    else:
        raise ValueError(f"{value!r} is not a duration such as 30s, 15m, 24h or 7d")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


def parse_size(value: object) -> int:
    """Bytes from a number or a string such as ``"512KiB"`` or ``"1MiB"``."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 1048576 or 1MiB")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (match := _SIZE.match(value)):
        unit = match.group(2).lower() if match.group(2) else None
        size = int(match.group(1)) * _SIZE_UNITS[unit]
    else:
        raise ValueError(f"{value!r} is not a size such as 1048576, 512KiB or 1MiB")
    if size <= 0:
        raise ValueError("a size must be positive")
    return size


Duration = Annotated[float, BeforeValidator(parse_duration)]
"""Seconds, written in config as a number or a string like ``24h``."""

Size = Annotated[int, BeforeValidator(parse_size)]
"""Bytes, written in config as a number or a string like ``1MiB``."""
