"""``relay alive``: the liveness probe of a scheduler, poller or worker (``relay.liveness``)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from relay.liveness import MAX_AGE, age


@click.command()
@click.option(
    "--file",
    "path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=lambda: os.environ.get("RELAY_LIVENESS_FILE"),
    help="The process's liveness file (default: RELAY_LIVENESS_FILE).",
)
@click.option(
    "--max-age",
    type=click.FloatRange(min=1),
    default=MAX_AGE,
    show_default=True,
    help="Seconds since the last touch after which the process counts as wedged.",
)
def alive(path: Path | None, max_age: float) -> None:
    """Exit 0 if the process touched its liveness file within --max-age seconds, else 1."""
    if path is None:
        raise click.UsageError("give --file or set RELAY_LIVENESS_FILE")
    seconds = age(path)
    if seconds is None:
        click.echo(f"{path}: missing: the process has not started its loop", err=True)
        raise SystemExit(1)
    if seconds > max_age:
        click.echo(
            f"{path}: last touched {seconds:.0f}s ago (over {max_age:g}s): its loop is stuck",
            err=True,
        )
        raise SystemExit(1)
    click.echo(f"{path}: touched {seconds:.1f}s ago")


COMMANDS = [alive]
