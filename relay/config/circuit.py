"""Circuit-breaker policy of a target: when to stop sending, and for how long.

The breaker opens after ``failures`` consecutive failed attempts, or when at least
``failure_rate`` of the attempts in the last ``window`` failed (once ``min_calls``
attempts were made). While open, deliveries are parked in the durable schedule, not
attempted. After ``open_for`` one delivery is let through as a probe (half-open): its
success closes the breaker, its failure opens it again for twice as long, up to
``max_open_for``. Only retryable failures count: a permanent error is about one event,
not the target's health. The state machine runs in Redis (``relay.state.gate``).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from relay.config.units import Duration


class CircuitPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    failures: int = Field(5, ge=1, description="Consecutive failures that open the breaker.")
    failure_rate: float = Field(0.5, gt=0, le=1, description="Failure share that opens it.")
    window: Duration = Field(60.0, gt=0, description="Window of the failure rate.")
    min_calls: int = Field(20, ge=1, description="Attempts in the window before the rate counts.")
    open_for: Duration = Field(30.0, gt=0, description="First wait before a probe.")
    max_open_for: Duration = Field(600.0, gt=0, description="Cap of the doubling wait.")
