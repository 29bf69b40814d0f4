"""``relay send SOURCE``: sign a sample event as the platform would and post it.

The quickest end-to-end check of a running relay: the request goes through the same
verification, dedupe and queue as a real one.
"""

from __future__ import annotations

import os
from pathlib import Path

import click
import requests

from relay.cli.discovery import running_up
from relay.config.kinds import source_kinds
from relay.config.loader import load_config
from relay.config.models import UnresolvedOptions
from relay.errors import ConfigError

TIMEOUT = 10.0


def default_base() -> str:
    """``RELAY_PORT`` if set, else the web of a ``relay up`` running in the state folder,
    else port 8000."""
    if port := os.environ.get("RELAY_PORT"):
        return f"http://127.0.0.1:{port}"
    up = running_up(Path(os.environ.get("RELAY_STATE_DIR") or ".relay"))
    if up is not None and up.web:
        return up.web
    return "http://127.0.0.1:8000"


@click.command()
@click.argument("source_id", metavar="SOURCE")
@click.option(
    "--file",
    "body_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Body to send (default: the source kind's sample event).",
)
@click.option(
    "--url",
    "base",
    help="Base URL of the relay (default: $RELAY_PORT, else the relay up running here, "
    "else :8000).",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    help="The routing config (default: $RELAY_CONFIG or relay.yaml).",
)
def send(
    source_id: str, body_file: Path | None, base: str | None, config_path: Path | None
) -> None:
    """Post a correctly signed sample event to /hooks/SOURCE; exit 0 on a 2xx answer."""
    from relay.cli.common import load_settings

    path = config_path or load_settings().config
    try:
        # Only this source's own secret is needed (it signs); others may be unset here.
        config = load_config(path, with_targets=False, resolve_secrets=False)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(problem, err=True)
        raise SystemExit(1) from None
    source_config = config.sources.get(source_id)
    if source_config is None:
        known = ", ".join(config.sources) or "none"
        click.echo(f"unknown source {source_id!r}; configured in {path}: {known}", err=True)
        raise SystemExit(1)
    if isinstance(source_config.options, UnresolvedOptions):
        for problem in source_config.options.problems:
            click.echo(f"{problem} (relay send signs with {source_id!r}'s secret)", err=True)
        raise SystemExit(1)
    source = source_kinds()[source_config.kind](source_config)
    signed = source.sample(body_file.read_bytes() if body_file else None)
    url = f"{(base or default_base()).rstrip('/')}/hooks/{source_id}{signed.path_suffix}"
    try:
        response = requests.post(url, data=signed.body, headers=signed.headers, timeout=TIMEOUT)
    except requests.ConnectionError:
        click.echo(f"cannot connect to {url}: is `relay up` running?", err=True)
        raise SystemExit(1) from None
    except requests.RequestException as exc:
        click.echo(f"POST {url} failed: {exc}", err=True)
        raise SystemExit(1) from None
    click.echo(f"POST {url} -> {response.status_code} {response.reason}")
    if response.text:
        click.echo(response.text.rstrip("\n"))
    raise SystemExit(0 if 200 <= response.status_code < 300 else 1)


COMMANDS = [send]
