"""``relay keys``: create, list, rotate and revoke API keys (recorded in the audit log)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from relay.cli.common import load_runtime
from relay.config.units import parse_duration
from relay.state.apikeys import SCOPES, ApiKeys, UnknownKey
from relay.state.audit import AuditLog

_config = click.option("--config", type=click.Path(path_type=Path), help="Config file.")


def _stores(config: Path | None) -> tuple[ApiKeys, AuditLog]:
    runtime = load_runtime(config)
    return ApiKeys(runtime.redis), AuditLog(runtime.redis)


@click.group()
def keys() -> None:
    """API keys of the management API and the dashboard."""


@keys.command()
@click.argument("name")
@click.option("--scope", type=click.Choice(SCOPES), default="read", show_default=True)
@_config
def create(name: str, scope: str, config: Path | None) -> None:
    """Create a key; its secret is printed once and stored only as a hash."""
    store, audit = _stores(config)
    key, token = store.create(name, scope)
    audit.record("key.create", actor="cli", target=key.id, detail=f"{name} ({scope})")
    click.echo(f"created {key.id} ({scope}): {name}")
    click.echo(token)
    click.echo("store it now: it cannot be shown again", err=True)


@keys.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
@_config
def list_keys(as_json: bool, config: Path | None) -> None:
    """Every key with its scope and state (never its secret)."""
    store, _ = _stores(config)
    for key in store.all():
        if as_json:
            click.echo(json.dumps(key.public()))
            continue
        state = "revoked" if key.revoked_at else "active"
        if key.active and key.previous_until and key.previous_until > time.time():
            state += f", old secret valid {key.previous_until - time.time():.0f}s more"
        used = f"used {time.time() - key.last_used_at:.0f}s ago" if key.last_used_at else "unused"
        click.echo(f"{key.id}  {key.scope:6}  {state:40}  {used:18}  {key.name}")


@keys.command()
@click.argument("key_id")
@click.option("--grace", default="24h", show_default=True, help="How long the old secret works.")
@_config
def rotate(key_id: str, grace: str, config: Path | None) -> None:
    """A new secret for KEY_ID; the old one keeps working for the grace period."""
    store, audit = _stores(config)
    try:
        seconds = parse_duration(grace)
        key, token = store.rotate(key_id, seconds)
    except (UnknownKey, ValueError) as exc:
        click.echo(str(exc), err=True)
        raise SystemExit(1) from None
    audit.record("key.rotate", actor="cli", target=key.id, detail=f"grace {seconds:g}s")
    click.echo(f"rotated {key.id}; the old secret works for {seconds:g}s more")
    click.echo(token)


@keys.command()
@click.argument("key_id")
@_config
def revoke(key_id: str, config: Path | None) -> None:
    """Revoke KEY_ID at once (its old secret too)."""
    store, audit = _stores(config)
    try:
        key = store.revoke(key_id)
    except UnknownKey as exc:
        click.echo(str(exc), err=True)
        raise SystemExit(1) from None
    audit.record("key.revoke", actor="cli", target=key.id)
    click.echo(f"revoked {key.id}")


COMMANDS = [keys]
