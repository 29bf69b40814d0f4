"""``relay status``: which Redis the commands here use and why, the ``relay up`` running
in this folder, and a summary of the queues: the first thing to run in a second shell.

It needs no config file and never fails with a traceback: an unreachable Redis or one
no relay has used is reported, with exit 1, next to everything else it knows.
"""

from __future__ import annotations

import json
import time
from typing import Any

import click
import redis

from relay.cli.common import load_settings, redis_choice
from relay.cli.discovery import RedisChoice, choose_redis, masked, reason, used_by_relay
from relay.errors import ConfigError
from relay.state import keys
from relay.state.connection import caller_client
from relay.state.deliveries import Store


def _probe(choice: RedisChoice, client: redis.Redis, retention: float) -> dict[str, Any]:
    """What this Redis says: reachable, used by a relay, since when, its queues."""
    try:
        used = used_by_relay(client)
        first = client.get(keys.SEEN)
        stats = Store(client, retention=retention).queue_stats() if used else None
    except redis.RedisError as exc:
        return {"reachable": False, "error": reason(exc), "hint": choice.hint()}
    return {
        "reachable": True,
        "used_by_relay": used,
        "first_used_at": float(first) if first else None,
        "queues": stats,
        **({} if used else {"hint": choice.hint()}),
    }


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def status(as_json: bool) -> None:
    """Which Redis commands here use and why, the relay up in this folder, the queues."""
    settings = load_settings()
    choice = redis_choice() or choose_redis(settings.state_dir)
    try:
        client = caller_client(settings)
    except ConfigError as exc:  # a malformed Sentinel URL
        for problem in exc.problems:
            click.echo(problem, err=True)
        raise SystemExit(2) from None
    try:
        found = _probe(choice, client, settings.retention)
    finally:
        client.close()
    report = {
        "redis": {"url": masked(choice.url), "origin": choice.origin, "why": choice.why, **found},
        "relay_up": choice.up.public() if choice.up else None,
        "state_dir": str(choice.state_dir),
    }
    ok = found["reachable"] and found["used_by_relay"]
    if as_json:
        click.echo(json.dumps(report))
    else:
        _print(choice, found)
    if not ok:
        raise SystemExit(1)


def _print(choice: RedisChoice, found: dict[str, Any]) -> None:
    up = choice.up
    if up is None:
        click.echo(f"relay up:  not running in {choice.state_dir}")
    else:
        since = f", up {_age(time.time() - up.started_at)}" if up.started_at else ""
        click.echo(f"relay up:  running in {choice.state_dir} ({up.who}{since})")
        if up.web:
            click.echo(f"  web:       {up.web}  (hooks: {up.web}/hooks/<source>)")
            click.echo(f"  dashboard: {up.web}/dashboard/")
            click.echo(f"  api:       {up.web}/api/v1")
        kind = "embedded" if up.embedded else "RELAY_REDIS_URL"
        click.echo(f"  redis:     {masked(up.redis_url or '?')} ({kind})")
    click.echo(choice.line())
    if not found["reachable"]:
        click.echo(f"  unreachable: {found['error']}; {found['hint']}")
        return
    if not found["used_by_relay"]:
        click.echo(f"  reachable, but no relay has ever used it; {found['hint']}")
        return
    first = found["first_used_at"]
    click.echo("  reachable, holds relay data" + (f" (since {_when(first)})" if first else ""))
    stats = found["queues"]
    waiting = sum(stats["queues"].values())
    click.echo(
        f"queues:    {waiting} waiting, {stats['scheduled']} scheduled "
        f"({stats['scheduled_due']} due), {stats['in_flight']} in flight, "
        f"{stats['dead_letters']} dead letters"
    )


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"


def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


COMMANDS = [status]
