"""``relay schema``: print the JSON Schema of ``GroupEvent``."""

from __future__ import annotations

import click

from relay.events import schema_text


@click.command()
def schema() -> None:
    """Print the JSON Schema of the GroupEvent that every target receives."""
    click.echo(schema_text(), nl=False)


COMMANDS = [schema]
