"""The routing config: one YAML file of ``sources``, ``targets`` and ``routes``.

Strings may reference environment variables as ``${NAME}`` (``$${`` writes a literal
``${``). Loading collects *every* problem, each named by its path in the file
(``routes[2].targets[0]: unknown target 'jria'``), and raises one ``ConfigError``.
Kind-specific options of sources and targets are validated by the kind's own
``Options`` model from the registry.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from relay.config.circuit import CircuitPolicy
from relay.config.loader import path_of, read_yaml, split_path, substitute_env
from relay.config.people import Person
from relay.config.rates import Rate, rates_value
from relay.config.units import Duration
from relay.errors import ConfigError
from relay.events import EVENT_TYPES
from relay.templates import check_template

ID_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"


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
    template: str | None = Field(None, description="Jinja2 template of the message.")
    options: Any = None

    @field_validator("rate_limit", mode="before")
    @classmethod
    def _rates(cls, value: object) -> object:
        return rates_value(value)

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


class RouteConfig(_Strict):
    source: str
    when: RouteFilter = RouteFilter()
    targets: list[str] = Field(min_length=1)
    template: str | None = Field(None, description="Overrides each target's template.")

    @field_validator("template")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        return None if value is None else check_template(value)


_COMMON_SOURCE_KEYS = set(SourceConfig.model_fields) - {"options"}
_COMMON_TARGET_KEYS = set(TargetConfig.model_fields) - {"options"}


@dataclass(frozen=True)
class RelayConfig:
    """The validated config, with lookups by id."""

    sources: dict[str, SourceConfig]
    targets: dict[str, TargetConfig]
    routes: list[RouteConfig]
    secrets: frozenset[str] = field(default=frozenset(), repr=False)
    people: dict[str, Person] = field(default_factory=dict)
    """Every value pulled from the environment, so logs and records can redact them."""

    def routes_for(self, source_id: str) -> list[tuple[int, RouteConfig]]:
        return [(i, r) for i, r in enumerate(self.routes) if r.source == source_id]


def validation_problems(exc: ValidationError, prefix: str = "") -> list[str]:
    problems = []
    for err in exc.errors():
        loc = [p for p in err["loc"] if p not in ("function-after", "function-before")]
        where = path_of([*(split_path(prefix)), *loc]) if prefix else path_of(loc)
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        elif err["type"] == "missing":
            message = "required key is missing"
        else:
            message = err["msg"].removeprefix("Value error, ")
        problems.append(f"{where}: {message}" if where else message)
    return problems


def parse_config(
    data: Any,
    *,
    env: Mapping[str, str] | None = None,
    source_options: Mapping[str, type[BaseModel]] | None = None,
    target_options: Mapping[str, type[BaseModel]] | None = None,
    base_dir: Path | None = None,
) -> RelayConfig:
    """Validate already-loaded YAML data. Kinds missing from the option maps are unknown.

    ``base_dir`` (the config file's folder) is handed to option models as validation
    context, so relative paths mean the same whichever directory a process runs in.

    ``target_options=None`` skips target kinds entirely (the web process does not
    load target adapters); the CLI and workers pass the full registry.
    """
    if source_options is None:
        from relay.config.kinds import source_option_models

        source_options = source_option_models()
    problems: list[str] = []
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(["the config must be a mapping with sources, targets and routes"])
    found: set[str] = set()
    data = substitute_env(data, os.environ if env is None else env, "", problems, found)
    for key in data:
        if key not in ("sources", "targets", "routes", "people"):
            problems.append(f"{key}: unknown key (expected sources, targets, routes, people)")
    people = _parse_people(data.get("people") or {}, problems)

    declared: set[str] = set()  # ids written in the file, valid or not
    sources = _parse_items(
        data.get("sources") or [],
        "sources",
        SourceConfig,
        _COMMON_SOURCE_KEYS,
        source_options,
        problems,
        declared,
        base_dir,
    )
    targets = _parse_items(
        data.get("targets") or [],
        "targets",
        TargetConfig,
        _COMMON_TARGET_KEYS,
        target_options,
        problems,
        declared,
        base_dir,
    )
    routes: list[RouteConfig] = []
    raw_routes = data.get("routes") or []
    if not isinstance(raw_routes, list):
        problems.append("routes: must be a list")
        raw_routes = []
    for i, raw in enumerate(raw_routes):
        try:
            route = RouteConfig.model_validate(raw)
        except ValidationError as exc:
            problems.extend(validation_problems(exc, f"routes[{i}]"))
            continue
        if route.source not in sources and f"sources:{route.source}" not in declared:
            problems.append(
                f"routes[{i}].source: unknown source {route.source!r}"
                + _did_you_mean(route.source, sources)
            )
        for j, target in enumerate(route.targets):
            if target not in targets and f"targets:{target}" not in declared:
                problems.append(
                    f"routes[{i}].targets[{j}]: unknown target {target!r}"
                    + _did_you_mean(target, targets)
                )
        routes.append(route)
    if problems:
        raise ConfigError(_root_causes(problems))
    return RelayConfig(sources, targets, routes, frozenset(s for s in found if len(s) >= 4), people)


def _parse_people(raw: Any, problems: list[str]) -> dict[str, Person]:
    if not isinstance(raw, dict):
        problems.append("people: must be a mapping of name to ids")
        return {}
    people = {}
    for name, ids in raw.items():
        try:
            people[str(name)] = Person.model_validate(ids)
        except ValidationError as exc:
            problems.extend(validation_problems(exc, f"people.{name}"))
    return people


def _parse_items(
    items: Any,
    section: str,
    model: type[SourceConfig] | type[TargetConfig],
    common_keys: set[str],
    option_models: Mapping[str, type[BaseModel]] | None,
    problems: list[str],
    declared: set[str],
    base_dir: Path | None,
) -> dict[str, Any]:
    parsed: dict[str, Any] = {}
    if not isinstance(items, list):
        problems.append(f"{section}: must be a list")
        return parsed
    for i, raw in enumerate(items):
        where = f"{section}[{i}]"
        if not isinstance(raw, dict):
            problems.append(f"{where}: must be a mapping")
            continue
        if isinstance(raw.get("id"), str):
            declared.add(f"{section}:{raw['id']}")
        common = {k: v for k, v in raw.items() if k in common_keys}
        extra = {k: v for k, v in raw.items() if k not in common_keys}
        item = None
        try:
            item = model.model_validate(common)
        except ValidationError as exc:
            problems.extend(validation_problems(exc, where))
        options: Any = extra
        kind = raw.get("kind")
        if option_models is not None and isinstance(kind, str):
            options_model = option_models.get(kind)
            if options_model is None:
                problems.append(
                    f"{where}.kind: unknown kind {kind!r}; one of "
                    + ", ".join(sorted(option_models))
                )
                continue
            try:
                context = {"allow_private": raw.get("allow_private") is True, "base_dir": base_dir}
                options = options_model.model_validate(extra, context=context)
            except ValidationError as exc:
                problems.extend(validation_problems(exc, where))
                continue
        if item is None:
            continue
        if item.id in parsed:
            problems.append(f"{where}.id: {item.id!r} is used twice")
            continue
        parsed[item.id] = item.model_copy(update={"options": options})
    return parsed


def _root_causes(problems: list[str]) -> list[str]:
    """Drop follow-on complaints about a value whose environment variable is missing."""
    unset = {p.split(": ", 1)[0] for p in problems if ": environment variable " in p}
    return [
        p for p in problems if ": environment variable " in p or p.split(": ", 1)[0] not in unset
    ]


def _did_you_mean(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def load_config(
    path: Path, *, with_targets: bool = True, env: Mapping[str, str] | None = None
) -> RelayConfig:
    """Read and validate the config file; ``with_targets`` also checks target options."""
    target_options = None
    if with_targets:
        from relay.config.kinds import target_option_models

        target_options = target_option_models()
    return parse_config(
        read_yaml(path), env=env, target_options=target_options, base_dir=path.resolve().parent
    )
