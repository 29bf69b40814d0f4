"""Registries of source and target kinds.

Sources are built into ``relay.sources`` and register by decorator. Targets live in
``workers`` (which ``relay`` never imports): they are found through the
``group_relay.targets`` entry-point group, so third-party packages can add kinds too,
and the web process never loads them.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

from relay.errors import ConfigError

if TYPE_CHECKING:
    from relay.config import RelayConfig
    from relay.sources.base import Source

TARGET_ENTRY_POINTS = "group_relay.targets"
_SOURCES: dict[str, type[Source]] = {}
S = TypeVar("S", bound=type[Any])


def register_source(cls: S) -> S:
    """Class decorator: make a source kind available under ``cls.kind``."""
    _SOURCES[cls.kind] = cls
    return cls


def source_kinds() -> dict[str, type[Source]]:
    import relay.sources  # noqa: F401 - registers the built-in kinds

    return dict(_SOURCES)


def source_option_models() -> dict[str, type[BaseModel]]:
    return {kind: cls.Options for kind, cls in source_kinds().items()}


@cache
def target_kinds() -> dict[str, type[Any]]:
    """Target adapter classes by kind, loaded from entry points on first use."""
    kinds: dict[str, type[Any]] = {}
    problems = []
    for ep in entry_points(group=TARGET_ENTRY_POINTS):
        try:
            kinds[ep.name] = ep.load()
        except Exception as exc:  # a broken plugin must be named, not crash the CLI
            problems.append(f"target kind {ep.name!r} ({ep.value}) failed to load: {exc}")
    if problems:
        raise ConfigError(problems)
    return kinds


def build_targets(config: RelayConfig) -> dict[str, Any]:
    """One adapter per configured target; every construction problem named by target."""
    kinds = target_kinds()
    targets: dict[str, Any] = {}
    problems = []
    for target_id, target in config.targets.items():
        try:
            targets[target_id] = kinds[target.kind](target)
        except (ValueError, ConfigError) as exc:
            detail = "; ".join(exc.problems) if isinstance(exc, ConfigError) else str(exc)
            problems.append(
                detail if detail.startswith("targets.") else f"targets.{target_id}: {detail}"
            )
    if problems:
        raise ConfigError(problems)
    return targets


def target_option_models() -> dict[str, type[BaseModel]]:
    return {kind: cls.Options for kind, cls in target_kinds().items()}
