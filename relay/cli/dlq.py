"""``relay dlq ls|show|replay|purge``: inspect and act on dead letters."""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from relay.admin.listings import Listings
from relay.admin.query import DeadLetterFilter
from relay.cli.common import load_runtime
from relay.cli.table import age, echo_json_lines, echo_shown, echo_table
from relay.config.units import parse_duration
from relay.context import WebContext
from relay.state.lifecycle import DeliveryStatus
from relay.state.records import DeadLetter
from relay.state.replicas import Replicas


class DurationType(click.ParamType):  # type: ignore[type-arg]
    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return parse_duration(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


DURATION = DurationType()


def _filters(func: Any) -> Any:
    for option in reversed(
        [
            click.option("--target", help="Only dead letters of this target id."),
            click.option("--source", help="Only dead letters of events from this source id."),
            click.option("--older-than", type=DURATION, help="Dead for at least this long (1h)."),
            click.option("--newer-than", type=DURATION, help="Dead for at most this long (30m)."),
            click.option("--config", type=click.Path(path_type=Path), help="Config file."),
        ]
    ):
        func = option(func)
    return func


def _select(
    runtime: WebContext,
    ids: tuple[str, ...],
    select_all: bool,
    target: str | None,
    source: str | None,
    older_than: float | None,
    newer_than: float | None,
) -> Iterator[DeadLetter]:
    filtered = any(v is not None for v in (target, source, older_than, newer_than))
    if ids and (select_all or filtered):
        raise click.UsageError("give delivery ids, or --all / filters, not both")
    if not ids and not (select_all or filtered):
        raise click.UsageError("give delivery ids, or --all, or a filter such as --target")
    if ids:
        for delivery_id in ids:
            delivery = runtime.store.delivery(delivery_id)
            if delivery is None or delivery.status is not DeliveryStatus.DEAD:
                click.echo(f"{delivery_id}: not in the dead-letter queue", err=True)
                continue
            yield DeadLetter(delivery, delivery.dead_at or 0.0)
        return
    yield from runtime.store.dead_letters(
        target=target, source=source, older_than=older_than, newer_than=newer_than
    )


def _summary(letter: DeadLetter) -> dict[str, Any]:
    d = letter.delivery
    return {
        "id": letter.id,
        "event_id": d.event_id,
        "source": d.source,
        "target": d.target,
        "attempts": d.attempts or 0,
        "dead_at": letter.dead_at,
        "reason": d.dead_reason,
        "last_error": d.last_error,
    }


@click.group()
def dlq() -> None:
    """Dead letters: deliveries that failed for good, kept until replayed or purged."""


@dlq.command("ls")
@_filters
@click.option(
    "--limit", type=click.IntRange(min=0), default=100, show_default=True, help="0 for all."
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def ls(
    target: str | None,
    source: str | None,
    older_than: float | None,
    newer_than: float | None,
    config: Path | None,
    limit: int,
    as_json: bool,
) -> None:
    """List dead letters, newest first (as the API and the dashboard do)."""
    runtime = load_runtime(config, resolve_secrets=False)
    now = time.time()
    found = DeadLetterFilter(
        source=source,
        target=target,
        since=now - newer_than if newer_than is not None else None,
        until=now - older_than if older_than is not None else None,
    )
    views, total = Listings(runtime).dead_letters_counted(found, limit=limit or None)
    letters = [_row(view) for view in views]
    if as_json:
        echo_json_lines(letters)
        echo_shown(len(letters), total, "dead letters", always=False)
        return
    if not letters:
        click.echo("no dead letters" + (" match" if found.describe() != "all" else ""))
        return
    echo_table(
        ("delivery", "target", "source", "tries", "age", "reason"),
        (
            (
                s["id"],
                s["target"],
                s["source"],
                s["attempts"],
                age(s["dead_at"], now),
                ((s["reason"] or "") + (f": {s['last_error']}" if s["last_error"] else ""))[:100],
            )
            for s in letters
        ),
    )
    echo_shown(len(letters), total, "dead letters")


def _row(view: dict[str, Any]) -> dict[str, Any]:
    """A dead letter as ``dlq ls --json`` prints it (the names ``dlq show`` uses)."""
    return {
        "id": view["id"],
        "event_id": view["event_id"],
        "source": view["source"],
        "target": view["target"],
        "attempts": view["attempts"],
        "dead_at": view["dead_at"],
        "reason": view["dead_reason"],
        "last_error": view["last_error"],
    }


@dlq.command()
@click.argument("delivery_id")
@click.option("--config", type=click.Path(path_type=Path), help="Config file.")
@click.option("--json", "as_json", is_flag=True)
def show(delivery_id: str, config: Path | None, as_json: bool) -> None:
    """Show one dead letter: its event, target and every attempt."""
    runtime = load_runtime(config, resolve_secrets=False)
    delivery = runtime.store.delivery(delivery_id)
    if delivery is None or delivery.status is not DeliveryStatus.DEAD:
        click.echo(f"{delivery_id}: not in the dead-letter queue", err=True)
        raise SystemExit(1)
    letter = DeadLetter(delivery, delivery.dead_at or 0.0)
    detail = {
        **_summary(letter),
        "event": json.loads(delivery.event or "null"),
        "attempts_log": runtime.store.attempts(delivery_id),
    }
    if as_json:
        click.echo(json.dumps(detail, indent=2))
        return
    for key in ("id", "event_id", "source", "target", "attempts", "reason", "last_error"):
        click.echo(f"{key:11} {detail[key]}")
    click.echo("attempts:")
    for a in detail["attempts_log"]:
        click.echo(
            f"  #{a.get('n')} {a.get('outcome'):9} status={a.get('status', '-')} "
            f"{a.get('duration_ms', 0):.0f}ms {a.get('error', '')}"
        )
    click.echo("event:")
    click.echo(json.dumps(detail["event"], indent=2))


def _selected(func: Callable[..., None]) -> Callable[..., None]:
    """Give a command delivery ids or ``--all``/filters, and hand it the dead letters."""

    @functools.wraps(func)
    def command(
        ids: tuple[str, ...],
        select_all: bool,
        target: str | None,
        source: str | None,
        older_than: float | None,
        newer_than: float | None,
        config: Path | None,
        **rest: Any,
    ) -> None:
        runtime = load_runtime(config, resolve_secrets=False)
        letters = list(_select(runtime, ids, select_all, target, source, older_than, newer_than))
        func(runtime, letters, ids, **rest)

    command = _filters(command)
    command = click.option(
        "--all", "select_all", is_flag=True, help="Every dead letter, or all matching."
    )(command)
    return click.argument("ids", nargs=-1)(command)


def _count(n: int) -> str:
    return f"{n} dead letter{'s' if n != 1 else ''}"


@dlq.command()
@_selected
@click.option("--dry-run", is_flag=True, help="Only count what would be replayed.")
def replay(
    runtime: WebContext, letters: list[DeadLetter], ids: tuple[str, ...], dry_run: bool
) -> None:
    """Send dead letters again under their same delivery ids (targets can dedupe)."""
    if dry_run:
        click.echo(f"would replay {_count(len(letters))}")
        return
    replicas = Replicas.of(runtime.settings)  # RELAY_REDIS_MIN_REPLICAS: a replay survives
    replayed = sum(
        runtime.outbox.replay(letter.id, letter.delivery.queue or "", replicas=replicas)
        for letter in letters
    )
    click.echo(f"replayed {_count(replayed)}")
    if ids and replayed < len(ids):
        raise SystemExit(1)


@dlq.command()
@_selected
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def purge(runtime: WebContext, letters: list[DeadLetter], ids: tuple[str, ...], yes: bool) -> None:
    """Delete dead letters for good."""
    if not letters:
        click.echo("nothing to purge")
        return
    if not yes:
        click.confirm(f"purge {_count(len(letters))} for good?", abort=True)
    purged = sum(runtime.store.purge(letter.id) for letter in letters)
    click.echo(f"purged {_count(purged)}")


COMMANDS = [dlq]
