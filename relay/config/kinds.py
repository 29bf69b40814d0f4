"""Registries of source and target kinds, found through entry points.

Source kinds are the ``group_relay.sources`` entry points (the built-in ones live in
``relay.intake.sources``); target kinds are the ``group_relay.targets`` entry points
(in ``workers``, which ``relay`` never imports). Both are loaded on first use, so the
config package imports no adapter, the web process loads no target code, and a
package of your own can add either kind.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from pydantic import BaseModel

from relay.config.rates import Rate, parse_rates
from relay.errors import ConfigError

if TYPE_CHECKING:
    from relay.config.models import RelayConfig, TargetConfig
    from relay.intake.sources.base import Source

SOURCE_ENTRY_POINTS = "group_relay.sources"
TARGET_ENTRY_POINTS = "group_relay.targets"
BUILTIN_DISTRIBUTION = "group-relay"  # the relay's own kinds come from its own package

# The built-in target kinds' platform limits, for processes that do not load target code
# (the web process shows them); each adapter declares its own ``default_rate_limits``
# and a test checks that the two agree.
BUILTIN_TARGET_RATES: dict[str, tuple[str, ...]] = {
    "dingtalk_robot": ("20/min",),
    "dingtalk_app": ("20/min",),
    "wecom_bot": ("20/min",),
    "feishu_bot": ("100/min", "5/s"),
    "feishu_app": ("5/s",),
    "slack": ("1/s",),
    "telegram": ("20/min", "1/s"),
    "webhook": (),
    "file": (),
    "email": (),
    "apprise": (),
    "jira": ("100/min",),
    "github_issues": ("80/min", "500/h"),
    "gitlab_issues": ("60/min",),
    "linear": ("80/min",),
    "feishu_task": ("10/s", "100/min"),
    "dingtalk_todo": ("20/s",),
    "s3": (),
    "webdav": (),
    "local": (),
    "feishu_drive": ("5/s", "10000/day"),
}
RateOrigin = Literal["config", "kind", "unknown"]


def _load(group: str, what: str) -> dict[str, type[Any]]:
    """Every entry point of ``group`` loaded; a broken plugin is named, not a traceback."""
    kinds: dict[str, type[Any]] = {}
    problems = []
    for ep in entry_points(group=group):
        try:
            kinds[ep.name] = ep.load()
        except Exception as exc:  # a broken plugin must be named, not crash the CLI
            problems.append(f"{what} kind {ep.name!r} ({ep.value}) failed to load: {exc}")
    if problems:
        raise ConfigError(problems)
    return kinds


@cache
def source_kinds() -> dict[str, type[Source]]:
    """Source classes by kind, loaded from entry points on first use."""
    return _load(SOURCE_ENTRY_POINTS, "source")


def source_option_models() -> dict[str, type[BaseModel]]:
    return {kind: cls.Options for kind, cls in source_kinds().items()}


@cache
def target_kinds() -> dict[str, type[Any]]:
    """Target adapter classes by kind, loaded from entry points on first use."""
    return _load(TARGET_ENTRY_POINTS, "target")


class InstalledKind(NamedTuple):
    """One kind's entry point and the installed package (distribution) declaring it."""

    kind: str
    group: Literal["source", "target"]
    distribution: str | None  # None only for an entry point without package metadata
    version: str | None
    value: str  # module:attribute, what loading the kind imports

    @property
    def builtin(self) -> bool:
        return _normalized(self.distribution or "") == BUILTIN_DISTRIBUTION


def _normalized(name: str) -> str:
    """A distribution name as package indexes compare them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


_GROUPS: tuple[tuple[str, Literal["source", "target"]], ...] = (
    (SOURCE_ENTRY_POINTS, "source"),
    (TARGET_ENTRY_POINTS, "target"),
)


def installed_kinds() -> list[InstalledKind]:
    """Every source and target entry point with its package and version, read from the
    metadata alone, so a plugin that fails to import is listed all the same. A kind
    declared by two packages appears twice: only one of them can be loaded."""
    found = []
    for group, role in _GROUPS:
        for ep in entry_points(group=group):
            dist = ep.dist
            found.append(
                InstalledKind(
                    kind=ep.name,
                    group=role,
                    distribution=dist.name if dist is not None else None,
                    version=dist.version if dist is not None else None,
                    value=ep.value,
                )
            )
    return sorted(found, key=lambda k: (k.group, k.kind, k.distribution or ""))


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


def effective_rates(
    config: TargetConfig, kind_defaults: Sequence[str] | None = None
) -> tuple[list[Rate], RateOrigin]:
    """The rates the workers enforce for a target, and where they come from: ``config``
    (its ``rate_limit``), ``kind`` (the adapter's ``kind_defaults`` when the caller has
    loaded it, else the built-in table) or ``unknown`` (a plugin kind the caller has not
    loaded)."""
    if config.rate_limit is not None:
        return list(config.rate_limit), "config"
    if kind_defaults is None:
        kind_defaults = BUILTIN_TARGET_RATES.get(config.kind)
    if kind_defaults is None:
        return [], "unknown"
    return parse_rates(kind_defaults), "kind"
