"""``relay check [FILE]``: validate the config and name every problem by its path."""

from __future__ import annotations

from pathlib import Path

import click

from relay.config.kinds import build_targets
from relay.config.limits import attempt_problems
from relay.config.loader import load_config
from relay.errors import ConfigError
from relay.settings import load_settings


@click.command()
@click.argument("file", required=False, type=click.Path(path_type=Path))
def check(file: Path | None) -> None:
    """Validate FILE (default: $RELAY_CONFIG or relay.yaml); exit 1 listing each problem."""
    settings = load_settings()
    path = file or settings.config
    try:
        config = load_config(path)
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
        for problem in exc.problems:
            click.echo(problem, err=True)
        count = len(exc.problems)
        click.echo(f"{path}: {count} problem{'s' if count != 1 else ''}", err=True)
        raise SystemExit(1) from None
    click.echo(
        f"{path}: ok ({len(config.sources)} sources, {len(config.targets)} targets, "
        f"{len(config.routes)} routes)"
    )


COMMANDS = [check]
