"""``relay queues`` and ``relay events ls|show``: what is waiting, and what happened to an event."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from relay.admin.listings import Listings
from relay.admin.query import EventFilter
from relay.cli.common import load_runtime
from relay.cli.table import age, echo_json_lines, echo_shown, echo_table
from relay.state.records import event_status

_config = click.option("--config", type=click.Path(path_type=Path), help="Config file.")
_json = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


@click.command()
@_config
@_json
def queues(config: Path | None, as_json: bool) -> None:
    """Depth of each queue, scheduled retries and their lag, in-flight tasks, dead letters."""
    stats = load_runtime(config, resolve_secrets=False).store.queue_stats()
    if as_json:
        click.echo(json.dumps(stats))
        return
    for name, depth in stats["queues"].items():
        click.echo(f"{name:24} {depth:>8}")
    click.echo(
        f"{'scheduled':24} {stats['scheduled']:>8}  ({stats['scheduled_due']} due, "
        f"oldest due {stats['schedule_lag_seconds']}s ago)"
    )
    click.echo(f"{'in flight':24} {stats['in_flight']:>8}")
    click.echo(f"{'dead letters':24} {stats['dead_letters']:>8}")


@click.group()
def events() -> None:
    """Recent events and what became of them."""


@events.command("ls")
@_config
@click.option(
    "--limit", type=click.IntRange(min=0), default=20, show_default=True, help="0 for all."
)
@_json
def ls(config: Path | None, limit: int, as_json: bool) -> None:
    """The most recent events, newest first; STATUS is what became of each (its
    deliveries): delivered, partly_delivered, failed, waiting, unrouted."""
    runtime = load_runtime(config, resolve_secrets=False)
    total = runtime.store.event_count()
    page = Listings(runtime).events(EventFilter(), limit=limit or max(total, 1))
    if as_json:
        echo_json_lines(page.items)
        echo_shown(len(page.items), total, "events", always=False)
        return
    if not page.items:
        click.echo("no events")
        return
    now = time.time()
    echo_table(
        ("event", "source", "type", "status", "age"),
        (
            (e["id"], e["source"], e["type"], e["delivery_status"], age(e["received_at"], now))
            for e in page.items
        ),
    )
    echo_shown(len(page.items), total, "events")


@events.command()
@click.argument("event_id")
@_config
@_json
def show(event_id: str, config: Path | None, as_json: bool) -> None:
    """One event with each delivery and its attempts."""
    runtime = load_runtime(config, resolve_secrets=False)
    record = runtime.store.event(event_id)
    if record is None:
        click.echo(f"{event_id}: no such event (or past retention)", err=True)
        raise SystemExit(1)
    deliveries: list[dict[str, Any]] = []
    for delivery_id in runtime.store.event_delivery_ids(event_id):
        found = runtime.store.delivery(delivery_id)
        delivery: dict[str, Any] = found.to_fields() if found else {}
        delivery.pop("event", None)
        deliveries.append({**delivery, "attempts_log": runtime.store.attempts(delivery_id)})
    status = event_status(record["status"], (d.get("status") for d in deliveries))
    detail = {**record, "delivery_status": status.value, "deliveries": deliveries}
    if as_json:
        click.echo(json.dumps(detail, indent=2))
        return
    click.echo(json.dumps(record["event"], indent=2))
    click.echo(f"status: {status.value} (fan-out: {record['status']})")
    for d in deliveries:
        click.echo(
            f"- {d.get('id')} → {d.get('target')}: {d.get('status')} "
            f"after {d.get('attempts')} attempt(s)"
        )
        for a in d["attempts_log"]:
            click.echo(
                f"    #{a.get('n')} {a.get('outcome'):9} status={a.get('status', '-')} "
                f"{a.get('duration_ms', 0):.0f}ms {a.get('error', '')}"
            )


COMMANDS = [queues, events]
