"""``relay keys``: create, list, rotate and revoke API keys (recorded in the audit log)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import click

from relay.cli.common import load_runtime, redis_choice
from relay.cli.discovery import masked, used_by_relay
from relay.cli.table import age, echo_json_lines, echo_table
from relay.config.units import parse_duration
from relay.state.apikeys import SCOPES, ApiKeys, UnknownKey
from relay.state.audit import AuditLog

_config = click.option("--config", type=click.Path(path_type=Path), help="Config file.")


def _stores(config: Path | None, *, provisioning: bool = False) -> tuple[ApiKeys, AuditLog]:
    """The key store on the relay's Redis. ``provisioning``: creating a key before the
    relay's first start is legitimate when the operator named the Redis
    (``RELAY_REDIS_URL``), so an unused one is noted, not refused; the mere default is
    refused, since a key there would land in a Redis that is not the relay's."""
    named = bool(os.environ.get("RELAY_REDIS_URL"))
    runtime = load_runtime(config, resolve_secrets=False, check_used=not (provisioning and named))
    choice = redis_choice()
    if provisioning and named and choice is not None and not used_by_relay(runtime.redis):
        click.echo(
            f"relay: note: no relay has used Redis at {masked(choice.url)} ({choice.why}) "
            "yet; the key is stored there for the relay you start on it",
            err=True,
        )
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
    store, audit = _stores(config, provisioning=True)
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
    found = list(store.all())
    if as_json:
        echo_json_lines(key.public() for key in found)
        return
    if not found:
        click.echo("no API keys (create one: relay keys create NAME --scope admin)")
        return
    now = time.time()
    rows = []
    for key in found:
        state = "revoked" if key.revoked_at else "active"
        if key.active and key.previous_until and key.previous_until > now:
            state += f",old-secret-valid={key.previous_until - now:.0f}s"
        used = age(key.last_used_at, now) if key.last_used_at else "never"
        rows.append((key.id, key.scope, state, used, key.name))
    echo_table(("id", "scope", "state", "last-used", "name"), rows)


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
