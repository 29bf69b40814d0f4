"""``relay check [FILE]``: validate the config and name every problem by its path.

It also says which kinds come from plugins (packages other than the relay that declare
``group_relay.sources`` or ``group_relay.targets`` entry points), with their versions,
and refuses an installation the relay cannot run reliably: a kind declared by two
packages (which one loads depends on the order of ``sys.path``), or a plugin class that
lacks what the relay calls (it would fail on the first event instead of here).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import click
from pydantic import BaseModel, ValidationError

from relay.cli.table import echo_table
from relay.config.kinds import (
    InstalledKind,
    build_targets,
    installed_kinds,
    source_kinds,
    target_kinds,
)
from relay.config.limits import attempt_problems
from relay.config.loader import load_config
from relay.config.rates import parse_rates
from relay.config.route_diff import route_changes, routes_of, save_routes, saved_routes
from relay.errors import ConfigError
from relay.settings import load_settings
from relay.state.keys import FAMILIES

SOURCE_METHODS = ("handshake", "verify", "parse", "reply", "refusal_headers", "sample")


@click.command()
@click.argument("file", required=False, type=click.Path(path_type=Path))
@click.option(
    "--kinds",
    "every_kind",
    is_flag=True,
    help="List every source and target kind: its package, version, built in or plugin.",
)
@click.option(
    "--against",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Say how the routes change from this config (default: the last checked routes).",
)
def check(file: Path | None, every_kind: bool, against: Path | None) -> None:
    """Validate FILE (default: $RELAY_CONFIG or relay.yaml); exit 1 listing each problem."""
    settings = load_settings()
    path = file or settings.config
    installed = installed_kinds()
    try:
        kinds_wrong = kind_problems(installed)
        if kinds_wrong:
            raise ConfigError(kinds_wrong)
        config = load_config(path)
        before = routes_of(against) if against else saved_routes(settings.state_dir)
        adapters = build_targets(config)  # they check what options alone cannot (paths, URLs)
        too_long = attempt_problems(
            config,
            adapters,
            task_time_limit=settings.task_time_limit,
            default_timeout=settings.http_timeout,
        )
        if too_long:
            raise ConfigError(too_long)
    except ConfigError as exc:
        echo_kinds(installed, every=every_kind)
        for problem in exc.problems:
            click.echo(problem, err=True)
        count = len(exc.problems)
        click.echo(f"{path}: {count} problem{'s' if count != 1 else ''}", err=True)
        raise SystemExit(1) from None
    click.echo(
        f"{path}: ok ({len(config.sources)} sources, {len(config.targets)} targets, "
        f"{len(config.routes)} routes)"
    )
    echo_kinds(installed, every=every_kind)
    for line in route_changes(before, config.routes) if before is not None else []:
        click.echo(f"change: {line}")
    save_routes(config.routes, settings.state_dir)


def echo_kinds(installed: Iterable[InstalledKind], *, every: bool) -> None:
    """A line per plugin kind; with ``every``, a table of all kinds, built-in ones marked."""
    if every:
        rows = [
            (k.kind, k.group, k.distribution, k.version, "built in" if k.builtin else "plugin")
            for k in installed
        ]
        echo_table(("kind", "group", "package", "version", "origin"), rows)
        return
    for k in installed:
        if not k.builtin:
            click.echo(
                f"plugin: {k.group} kind {k.kind!r} from {k.distribution or '(unknown package)'} "
                f"{k.version or ''}".rstrip()
            )


def kind_problems(installed: Sequence[InstalledKind]) -> list[str]:
    """Kinds declared twice, plugins that fail to import, classes missing what the relay
    calls; each problem names the kind and the package it comes from."""
    problems = []
    declared: dict[tuple[str, str], list[InstalledKind]] = {}
    for k in installed:
        declared.setdefault((k.group, k.kind), []).append(k)
    for (group, kind), owners in declared.items():
        if len({k.distribution for k in owners}) > 1:
            names = " and ".join(f"{k.distribution} {k.version}" for k in owners)
            problems.append(
                f"{group} kind {kind!r} is declared by {names}; uninstall one of them "
                "(which one loads depends on the order of sys.path)"
            )
    values: dict[tuple[str, str], str] = {(k.group, k.kind): k.value for k in installed}
    shapes: tuple[tuple[str, Callable[[], dict[str, Any]], Callable[[Any], list[str]]], ...] = (
        ("source", source_kinds, _source_gaps),
        ("target", target_kinds, _target_gaps),
    )
    for group, load, gaps in shapes:
        try:
            loaded = load()
        except ConfigError as exc:  # a plugin that fails to import, named by _load
            problems.extend(exc.problems)
            continue
        for kind, cls in sorted(loaded.items()):
            missing = gaps(cls)
            if missing:
                problems.append(
                    f"{group} kind {kind!r} ({values.get((group, kind), '?')}) does not "
                    f"implement the {group.title()} protocol: {'; '.join(missing)}"
                )
    return problems


def _options_gap(cls: Any) -> list[str]:
    options = getattr(cls, "Options", None)
    if isinstance(options, type) and issubclass(options, BaseModel):
        return []
    return ["Options is not a pydantic model of its options"]


def _source_gaps(cls: Any) -> list[str]:
    """What a source class lacks of ``relay.intake.sources.base.Source``."""
    if not isinstance(cls, type):
        return [f"the entry point names {type(cls).__name__!r}, not a class"]
    gaps = _options_gap(cls)
    ttl = getattr(cls, "default_dedupe_ttl", None)
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or ttl <= 0:
        gaps.append("default_dedupe_ttl is not a positive number of seconds")
    gaps += [f"no {name}()" for name in SOURCE_METHODS if not callable(getattr(cls, name, None))]
    return gaps


def _target_gaps(cls: Any) -> list[str]:
    """What a target class lacks of ``workers.targets.base.Target``."""
    if not isinstance(cls, type):
        return [f"the entry point names {type(cls).__name__!r}, not a class"]
    gaps = _options_gap(cls)
    family = getattr(cls, "family", None)
    if family not in FAMILIES:
        gaps.append(f"family is {family!r}, not one of {', '.join(FAMILIES)}")
    if not callable(getattr(cls, "deliver", None)):
        gaps.append("no deliver()")
    try:
        parse_rates(getattr(cls, "default_rate_limits", ()))
    except (ValidationError, ValueError, TypeError):
        gaps.append("default_rate_limits is not a list of rates such as '20/min'")
    return gaps


COMMANDS = [check]
