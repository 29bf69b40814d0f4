"""``relay queues`` and ``relay events ls|show``: what is waiting, and what happened to an event."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from relay.cli.common import load_runtime

_config = click.option("--config", type=click.Path(path_type=Path), help="Config file.")
_json = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


@click.command()
@_config
@_json
def queues(config: Path | None, as_json: bool) -> None:
    """Depth of each queue, scheduled retries and their lag, in-flight tasks, dead letters."""
    stats = load_runtime(config).store.queue_stats()
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
@click.option("--limit", type=int, default=20, show_default=True)
@_json
def ls(config: Path | None, limit: int, as_json: bool) -> None:
    """The most recent events, newest first."""
    runtime = load_runtime(config)
    for event_id in runtime.store.recent_events(limit):
        record = runtime.store.event(event_id)
        if record is None:
            continue
        event = record["event"]
        row = {
            "id": event_id,
            "source": event["source"],
            "type": event["type"],
            "status": record["status"],
            "received_at": record["received_at"],
        }
        if as_json:
            click.echo(json.dumps(row))
        else:
            age = time.time() - record["received_at"]
            click.echo(
                f"{event_id:40} {row['source']:12} {row['type']:16} "
                f"{row['status']:9} {age:7.0f}s ago"
            )


@events.command()
@click.argument("event_id")
@_config
@_json
def show(event_id: str, config: Path | None, as_json: bool) -> None:
    """One event with each delivery and its attempts."""
    runtime = load_runtime(config)
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
    detail = {**record, "deliveries": deliveries}
    if as_json:
        click.echo(json.dumps(detail, indent=2))
        return
    click.echo(json.dumps(record["event"], indent=2))
    click.echo(f"status: {record['status']}")
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
