"""``relay targets``: breaker, pause, throttle, attempts in flight and rate-limit state;
pause, resume, reset."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from relay.cli.common import load_runtime
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
    for row in target_states(load_runtime(config)):
        if as_json:
            click.echo(json.dumps(row))
            continue
        state = "paused" if row["paused"] else row["circuit"]
        if row["throttled_until"]:
            state += f", throttled {row['throttled_until'] - time.time():.0f}s"
        rates = ", ".join(f"{r['used']}/{r['limit']} per {r['per']:g}s" for r in row["rates"])
        cap = row["max_in_flight"]
        in_flight = f"{row['in_flight']}/{cap}" if cap else f"{row['in_flight']}/-"
        click.echo(
            f"{row['id']:20} {row['kind']:14} {state:24} ok {row['successes']:<6} "
            f"failed {row['failures']:<6} in flight {in_flight:<7} {rates or 'no rate limit'}"
        )


def _action(name: str, verb: str, doc: str) -> click.Command:
    @click.command(name, help=doc)
    @click.argument("target_id", metavar="TARGET")
    @_config
    def command(target_id: str, config: Path | None) -> None:
        runtime = load_runtime(config)
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
