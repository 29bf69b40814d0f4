"""``relay keys``: create, list, rotate and revoke API keys (recorded in the audit log);
make a data key and re-seal stored records under the newest one (``rotate-data``)."""

from __future__ import annotations

import base64
import os
import time
from pathlib import Path

import click

from relay.cli.common import load_runtime, redis_choice
from relay.cli.discovery import masked, used_by_relay
from relay.cli.table import age, echo_json_lines, echo_table
from relay.config.units import parse_duration
from relay.errors import ConfigError
from relay.state.apikeys import SCOPES, ApiKeys, UnknownKey
from relay.state.audit import AuditLog
from relay.state.reseal import Busy, Progress, Resealer
from relay.state.sealing import Sealer, key_id, new_key

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
    """API keys of the management API and the dashboard; data keys (RELAY_ENCRYPTION_KEYS)."""


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


@keys.command("new-data-key")
def new_data_key() -> None:
    """Print a new key for RELAY_ENCRYPTION_KEYS (32 random bytes, URL-safe base64)."""
    key = new_key()
    click.echo(key)
    kid = key_id(base64.urlsafe_b64decode(key))
    click.echo(
        f"key id {kid}: put it first in RELAY_ENCRYPTION_KEYS (newest first, comma-separated) "
        "for every web, worker, scheduler and CLI process, restart them, then run "
        "`relay keys rotate-data`",
        err=True,
    )


def _line(p: Progress, *, dry_run: bool) -> str:
    c = p.counts
    verb = "would re-seal" if dry_run else "re-sealed"
    where = "done" if p.done else f"{p.phase} at cursor {p.cursor}"
    return (
        f"{where}: {c['records']} records; {verb} {c['resealed']}, "
        f"{'would seal' if dry_run else 'sealed'} {c['sealed']} plain, {c['current']} current, "
        f"{c['changed']} rewritten meanwhile, {c['unreadable']} unreadable"
    )


@keys.command("rotate-data")
@click.option("--dry-run", is_flag=True, help="Count what would be re-sealed; write nothing.")
@click.option("--restart", is_flag=True, help="Walk from the start, not from a saved position.")
@click.option("--batch", default=500, show_default=True, help="Keys per SCAN batch.")
@_config
def rotate_data(dry_run: bool, restart: bool, batch: int, config: Path | None) -> None:
    """Re-seal stored events, deliveries and attempts under the newest data key.

    Runs beside intake and workers; each value is replaced only if unchanged since it
    was read. Stopped or crashed, it resumes where it was."""
    runtime = load_runtime(config, resolve_secrets=False)
    try:
        sealer = Sealer.of(runtime.settings)
        resealer = Resealer(runtime.redis, sealer, batch=batch, dry_run=dry_run)
    except ConfigError as exc:
        click.echo("\n".join(exc.problems), err=True)
        raise SystemExit(2) from None
    except ValueError as exc:
        click.echo(str(exc), err=True)
        raise SystemExit(2) from None
    ids = ", ".join(k.id for k in sealer.keys)
    try:
        progress = resealer.start(restart=restart)
    except Busy as exc:
        click.echo(str(exc), err=True)
        raise SystemExit(1) from None
    resumed = (
        f", resuming at {progress.phase} (cursor {progress.cursor})" if progress.resumed else ""
    )
    click.echo(f"sealing under key {resealer.target} (configured: {ids}){resumed}")
    shown = [time.monotonic()]

    def report(p: Progress) -> None:
        if p.done or time.monotonic() - shown[0] >= 1.0:
            shown[0] = time.monotonic()
            click.echo(_line(p, dry_run=dry_run))

    try:
        resealer.run(progress, on_batch=report)
    except Busy as exc:
        click.echo(str(exc), err=True)
        raise SystemExit(1) from None
    found = ", ".join(f"{kid}: {n}" for kid, n in sorted(progress.by_key.items()))
    click.echo(f"values found by key: {found or 'none'}")
    if not dry_run:
        AuditLog(runtime.redis).record(
            "data.rotate",
            actor="cli",
            target=resealer.target,
            detail=_line(progress, dry_run=False),
        )
    for example in progress.examples:
        click.echo(f"unreadable: {example}", err=True)
    if progress.counts["unreadable"]:
        click.echo(
            f"{progress.counts['unreadable']} values could not be opened and were left as "
            "they are; add their key to RELAY_ENCRYPTION_KEYS (after the newest) and run again",
            err=True,
        )
        raise SystemExit(1)


COMMANDS = [keys]
