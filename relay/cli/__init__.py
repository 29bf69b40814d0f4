"""The ``relay`` command: run, check, send, inspect and replay."""

from __future__ import annotations

import click

from relay import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="relay")
def main() -> None:
    """group-relay: verified chat-group events, fanned out to your tools with retries."""


def _register() -> None:
    from relay.cli import (
        check,
        dlq,
        init,
        inspect,
        keys,
        poll,
        scheduler,
        schema,
        send,
        targets,
        up,
    )

    for module in (check, dlq, init, inspect, keys, poll, scheduler, schema, send, targets, up):
        for command in module.COMMANDS:
            main.add_command(command)


_register()
