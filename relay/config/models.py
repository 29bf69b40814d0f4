"""The routing config's models: ``sources``, ``targets``, ``routes`` and ``people``.

Each model validates one entry; ``relay.config.loader`` reads the file, substitutes
``${NAME}`` references and validates the whole, naming every problem by its path.
Kind-specific options are validated by the kind's own ``Options`` model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from relay.config.circuit import CircuitPolicy
from relay.config.people import Person
from relay.config.rates import Rate, rates_value
from relay.config.units import Duration
from relay.events import EVENT_TYPES
from relay.templates import check_template

ID_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
# Half the Procfile worker's 64 green threads: one hung target leaves the other half free.
DEFAULT_MAX_IN_FLIGHT = 32


def max_in_flight_value(value: object) -> int | None:
    """A cap on a target's attempts running at once: a whole number ≥ 1, or ``off``."""
    if value is False or value == "off":
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise ValueError(f"{value!r} is not a cap on attempts in flight: a whole number ≥ 1, or off")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetryPolicy(_Strict):
    """How long a target's deliveries keep being retried."""

    max_attempts: int = Field(8, ge=1, le=100)
    max_age: Duration = Field(24 * 3600, gt=0)
    backoff_base: Duration = Field(2.0, gt=0)
    backoff_cap: Duration = Field(3600.0, gt=0)


class SourceConfig(_Strict):
    """Fields every source has; ``options`` holds what its kind adds."""

    id: str = Field(pattern=ID_PATTERN)
    kind: str
    dedupe_ttl: Duration | None = Field(None, gt=0)
    rate_limit: list[Rate] = Field(
        default_factory=list, description="Inbound limit such as 600/min; over it → 429."
    )
    options: Any = None

    @field_validator("rate_limit", mode="before")
    @classmethod
    def _rates(cls, value: object) -> object:
        return rates_value(value) or []


class TargetConfig(_Strict):
    """Fields every target has; ``options`` holds what its kind adds."""

    id: str = Field(pattern=ID_PATTERN)
    kind: str
    retry: RetryPolicy = RetryPolicy()
    allow_private: bool = False
    timeout: Duration | None = Field(None, gt=0)
    rate_limit: list[Rate] | None = Field(
        None, description="Rates such as 20/min; off for none; unset for the kind's default."
    )
    circuit: CircuitPolicy = CircuitPolicy()
    max_in_flight: int | None = Field(
        DEFAULT_MAX_IN_FLIGHT,
        description="Attempts running at once, across all workers; more wait. off for no cap.",
    )
    template: str | None = Field(None, description="Jinja2 template of the message.")
    ordering: Literal["none", "per_group"] = Field(
        "none", description="per_group: one group's deliveries go one at a time, in order."
    )
    ordering_hold: Duration | None = Field(
        None, gt=0, description="How long one delivery may hold back its group's next (10m)."
    )
    options: Any = None

    @field_validator("rate_limit", mode="before")
    @classmethod
    def _rates(cls, value: object) -> object:
        return rates_value(value)

    @field_validator("max_in_flight", mode="before")
    @classmethod
    def _in_flight(cls, value: object) -> int | None:
        return max_in_flight_value(value)

    @field_validator("template")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        return None if value is None else check_template(value)


class RouteFilter(_Strict):
    """Which events a route takes; every given condition must hold."""

    type: list[str] | None = None
    group: list[str] | None = None
    sender: list[str] | None = None
    text: str | None = Field(None, description="Regular expression searched in the text.")
    has_files: bool | None = None
    mentions_bot: bool | None = None

    @field_validator("type", "group", "sender", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @field_validator("type")
    @classmethod
    def _known_types(cls, value: list[str] | None) -> list[str] | None:
        for item in value or []:
            if item not in EVENT_TYPES:
                raise ValueError(f"unknown event type {item!r}; one of {', '.join(EVENT_TYPES)}")
        return value

    @field_validator("text")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"invalid regular expression: {exc}") from None
        return value


class RouteMode(StrEnum):
    """How a route's deliveries go out; each delivery keeps the mode it was made in."""

    LIVE = "live"  # to the route's targets
    SHADOW = "shadow"  # rendered and recorded with the exact request; never sent
    TEST = "test"  # to the route's test_targets instead of its targets


# Built-in target kinds whose every outbound call goes through the workers' guarded HTTP
# or SMTP path, where a shadow delivery's dry run captures it. The others act outside it
# (Apprise's own networking, a file, a task tool's ledger, streamed uploads, an access
# token cached for every worker), so a shadow route cannot use them. A plugin kind opts in
# with ``dry_run = True`` on its adapter class.
DRY_RUN_KINDS = frozenset(
    {"webhook", "dingtalk_robot", "feishu_bot", "wecom_bot", "slack", "telegram", "email"}
)


class RouteConfig(_Strict):
    source: str
    when: RouteFilter = RouteFilter()
    targets: list[str] = Field(min_length=1)
    template: str | None = Field(None, description="Overrides each target's template.")
    ordering: Literal["none", "per_group"] = Field(
        "none", description="per_group: one group's deliveries go one at a time, in order."
    )
    ordering_hold: Duration | None = Field(
        None, gt=0, description="Overrides the targets' ordering_hold for this route."
    )
    mode: RouteMode = Field(
        RouteMode.LIVE, description="live, shadow (record, never send) or test (test_targets)."
    )
    test_targets: list[str] | None = Field(
        None, min_length=1, validate_default=True, description="Replace targets in mode test."
    )

    @field_validator("template")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        return None if value is None else check_template(value)

    @field_validator("test_targets")
    @classmethod
    def _given_in_test(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
        if value is None and info.data.get("mode") is RouteMode.TEST:
            raise ValueError(
                "required in mode test: the targets (a test group, say) that replace "
                "targets while testing"
            )
        return value

    @property
    def delivery_targets(self) -> list[str]:
        """Where this route's deliveries go now: its test targets while testing."""
        if self.mode is RouteMode.TEST and self.test_targets:
            return self.test_targets
        return self.targets


@dataclass(frozen=True)
class UnresolvedOptions:
    """A source's or target's kind options left unread because a ``${NAME}`` in them is
    not set: what a command that never talks to the platform gets
    (``load_config(resolve_secrets=False)``), so looking at the relay does not need
    every production secret in the shell. Holds only the problems, never a value."""

    problems: tuple[str, ...]

    @property
    def names(self) -> tuple[str, ...]:
        """The unset variables, in order of appearance."""
        found = (p.rsplit("environment variable ", 1)[-1].split(" ", 1)[0] for p in self.problems)
        return tuple(dict.fromkeys(found))


@dataclass(frozen=True)
class RelayConfig:
    """The validated config, with lookups by id."""

    sources: dict[str, SourceConfig]
    targets: dict[str, TargetConfig]
    routes: list[RouteConfig]
    secrets: frozenset[str] = field(default=frozenset(), repr=False)
    """Every value pulled from the environment, so logs and records can redact them."""
    people: dict[str, Person] = field(default_factory=dict)

    def unresolved(self) -> dict[str, UnresolvedOptions]:
        """``sources.<id>`` / ``targets.<id>`` whose options wait for an unset variable."""
        found = {f"sources.{k}": v.options for k, v in self.sources.items()}
        found |= {f"targets.{k}": v.options for k, v in self.targets.items()}
        return {k: v for k, v in found.items() if isinstance(v, UnresolvedOptions)}

    def routes_for(self, source_id: str) -> list[tuple[int, RouteConfig]]:
        return [(i, r) for i, r in enumerate(self.routes) if r.source == source_id]
