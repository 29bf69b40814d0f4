"""The ``relay`` command: run, check, send, inspect and replay."""

from __future__ import annotations

import click

from relay import __version__
from relay.cli.common import RelayGroup, add_verbose


@click.group(cls=RelayGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="relay")
def main() -> None:
    """group-relay: verified chat-group events, fanned out to your tools with retries."""


def _register() -> None:
    from relay.cli import (
        alive,
        check,
        dlq,
        init,
        inspect,
        keys,
        poll,
        routes,
        scheduler,
        schema,
        send,
        status,
        targets,
        up,
    )

    modules = (
        alive,
        check,
        dlq,
        init,
        inspect,
        keys,
        poll,
        routes,
        scheduler,
        schema,
        send,
        status,
        targets,
        up,
    )
    for module in modules:
        for command in module.COMMANDS:
            main.add_command(command)
    add_verbose(main)  # `relay --verbose CMD` and `relay CMD --verbose` alike


_register()
