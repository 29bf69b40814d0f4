"""Circuit-breaker policy of a target: when to stop sending, and for how long.

The breaker opens after ``failures`` consecutive failed attempts, or when at least
``failure_rate`` of the attempts in the last ``window`` failed (once ``min_calls``
attempts were made). While open, deliveries are parked in the durable schedule, not
attempted. After ``open_for`` one delivery is let through as a probe (half-open): its
success closes the breaker, its failure opens it again for twice as long, up to
``max_open_for``. Only retryable failures count: a permanent error is about one event,
not the target's health. An attempt still running after ``slow_call`` (default: the
target's request timeout) counts as a failure at that moment, not when it ends: a target
that accepts connections and never answers opens the breaker as soon as the first
attempts pass the threshold, even while they still hold their worker threads. The state
machine runs in Redis (``relay.state.gate``).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

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
    slow_call: Duration | None = Field(
        None, description="An attempt running longer is a failure; unset: the target's timeout."
    )

    @field_validator("slow_call")
    @classmethod
    def _positive(cls, value: float | None) -> float | None:
        if value is not None and value <= 0:
            raise ValueError(f"slow_call {value:g}s is not a threshold: it must be above 0")
        return value

    def slow_after(self, timeout: float) -> float | None:
        """Seconds after which a running attempt counts as failed (None: never, the
        breaker being off); ``timeout`` is the target's request timeout."""
        return (self.slow_call or timeout) if self.enabled else None
