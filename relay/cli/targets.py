"""``relay targets``: breaker, pause, throttle, attempts in flight and rate-limit state;
pause, resume, reset."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from relay.cli.common import load_runtime
from relay.cli.table import echo_json_lines, echo_table
from relay.config.kinds import effective_rates, target_kinds
from relay.config.rates import Rate
from relay.context import WebContext
from relay.state.gate import TargetGate

_config = click.option("--config", type=click.Path(path_type=Path), help="Config file.")


def _rates(runtime: WebContext, target_id: str) -> list[Rate]:
    target = runtime.config.targets[target_id]
    kind = target_kinds().get(target.kind)
    return effective_rates(target, getattr(kind, "default_rate_limits", ()))[0]


def _known(runtime: WebContext, target_id: str) -> None:
    if target_id not in runtime.config.targets:
        known = ", ".join(runtime.config.targets) or "none"
        click.echo(f"unknown target {target_id!r}; configured: {known}", err=True)
        raise SystemExit(1)


def target_states(runtime: WebContext) -> list[dict[str, Any]]:
    gate = TargetGate(runtime.redis)
    return [
        {
            "id": target_id,
            "kind": target.kind,
            **gate.status(target_id, _rates(runtime, target_id), target.max_in_flight),
        }
        for target_id, target in runtime.config.targets.items()
    ]


@click.group(invoke_without_command=True)
@_config
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
@click.pass_context
def targets(ctx: click.Context, config: Path | None, as_json: bool) -> None:
    """Each target's breaker, pause flag, platform throttle, attempts in flight and
    rate-limit usage."""
    if ctx.invoked_subcommand is not None:
        return
    rows = target_states(load_runtime(config, resolve_secrets=False))
    if as_json:
        echo_json_lines(rows)
        return
    if not rows:
        click.echo("no targets configured")
        return
    now = time.time()
    echo_table(
        ("target", "kind", "state", "ok", "failed", "in-flight", "rate-limit(used)"),
        (
            (
                row["id"],
                row["kind"],
                _state(row, now),
                row["successes"],
                row["failures"],
                f"{row['in_flight']}/{row['max_in_flight'] or '-'}",
                ",".join(f"{r['rate']}({r['used']})" for r in row["rates"]) or "none",
            )
            for row in rows
        ),
    )


def _state(row: dict[str, Any], now: float) -> str:
    """``paused``, the breaker (``closed``, ``open``, ``half_open``), ``+throttled=42s``."""
    state = "paused" if row["paused"] else row["circuit"]
    if row["throttled_until"] and row["throttled_until"] > now:
        state += f",throttled={row['throttled_until'] - now:.0f}s"
    return str(state)


def _action(name: str, verb: str, doc: str) -> click.Command:
    @click.command(name, help=doc)
    @click.argument("target_id", metavar="TARGET")
    @_config
    def command(target_id: str, config: Path | None) -> None:
        runtime = load_runtime(config, resolve_secrets=False)
        _known(runtime, target_id)
        getattr(TargetGate(runtime.redis), name)(target_id)
        click.echo(f"{target_id}: {verb}")

    return command


targets.add_command(
    _action("pause", "paused", "Stop sending to TARGET; its deliveries wait, nothing is lost.")
)
targets.add_command(_action("resume", "resumed", "Send to TARGET again."))
targets.add_command(
    _action("reset", "breaker closed", "Close TARGET's breaker and forget its failure counts.")
)

COMMANDS = [targets]
