"""What ``relay routes try`` shows: the routes a sample event matches and the exact
requests each of their targets would receive, rendered by the real adapters in a dry run
(``workers.net.dryrun``), so nothing is sent and no state is written.

It runs as ``python -m workers.tryout --config FILE`` with the event's JSON on stdin and
answers JSON on stdout: the ``relay`` command starts it, as it starts workers, because
the ``relay`` package never imports target code.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from relay.config.kinds import target_kinds
from relay.config.loader import load_config
from relay.config.models import (
    DRY_RUN_KINDS,
    RelayConfig,
    RouteConfig,
    RouteMode,
    TargetConfig,
    UnresolvedOptions,
)
from relay.config.people import People
from relay.errors import ConfigError, DeliveryError
from relay.events import GroupEvent
from relay.redact import redact
from workers.net import dryrun
from workers.routing import delivery_id, mismatch
from workers.targets.base import DeliveryContext

TIMEOUT = 15.0  # what a request would be given; a dry run never waits on one


def try_event(config: RelayConfig, event: GroupEvent) -> list[dict[str, Any]]:
    """Each route of the event's source: whether it matches (else the first condition it
    fails) and, if it does, what each of its targets would be sent."""
    people = People(config.people)
    found = []
    for index, route in config.routes_for(event.source):
        failed = mismatch(route.when, event)
        trial: dict[str, Any] = {
            "route": index,
            "mode": route.mode.value,
            "matches": failed is None,
            "failed": failed,
            "targets": [],
        }
        if failed is None:
            trial["targets"] = [
                _render(config, route, index, target_id, event, people)
                for target_id in route.delivery_targets
            ]
        found.append(trial)
    return found


def _render(
    config: RelayConfig,
    route: RouteConfig,
    index: int,
    target_id: str,
    event: GroupEvent,
    people: People,
) -> dict[str, Any]:
    """One target's dry run: its requests, what it would answer, or why it cannot run."""
    target = config.targets[target_id]
    shown: dict[str, Any] = {"target": target_id, "kind": target.kind, "requests": []}
    adapter_class = target_kinds().get(target.kind)
    if adapter_class is None:
        shown["skipped"] = f"unknown target kind {target.kind!r}"
        return shown
    if target.kind not in DRY_RUN_KINDS and getattr(adapter_class, "dry_run", False) is not True:
        shown["skipped"] = f"a {target.kind} target acts outside the dry run"
        return shown
    if isinstance(target.options, UnresolvedOptions):
        shown["skipped"] = "; ".join(target.options.problems)
        return shown
    secrets = config.secrets | dryrun.option_secrets(target.options)
    try:
        adapter = adapter_class(target)
    except (ConfigError, ValueError) as exc:
        detail = "; ".join(exc.problems) if isinstance(exc, ConfigError) else str(exc)
        shown["error"] = redact(detail, secrets)
        return shown
    run = dryrun.DryRun(secrets=secrets)
    with dryrun.dry_run(run):
        try:
            result = adapter.deliver(_context(config, route, index, target, event, people))
        except DeliveryError as exc:
            shown["error"] = redact(exc.message, secrets)
        except Exception as exc:  # an adapter bug is shown, not a traceback
            shown["error"] = redact(f"unexpected {type(exc).__name__}: {exc}", secrets)
        else:
            shown["result"] = redact(result.excerpt, secrets)
    shown["requests"] = [r.public() for r in run.requests]
    return shown


def _context(
    config: RelayConfig,
    route: RouteConfig,
    index: int,
    target: TargetConfig,
    event: GroupEvent,
    people: People,
) -> DeliveryContext:
    """The context a worker would build (as ``workers.delivery`` does), without Redis."""
    source = config.sources.get(event.source)
    return DeliveryContext(
        delivery_id=delivery_id(event.id, index, target.id),
        attempt=1,
        event_json=event.to_json(),
        timeout=target.timeout or TIMEOUT,
        template=route.template or target.template,
        source_kind=source.kind if source else None,
        people=people,
        source=source,
        shadow=route.mode is RouteMode.SHADOW,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.tryout")
    parser.add_argument("--config", required=True)
    args = parser.parse_args(argv)
    try:
        config = load_config(Path(args.config), resolve_secrets=False)
        event = GroupEvent.from_json(sys.stdin.buffer.read())
    except ConfigError as exc:
        json.dump({"problems": exc.problems}, sys.stdout)
        return 1
    except ValidationError as exc:
        json.dump({"problems": [f"the event is not a GroupEvent: {exc}"]}, sys.stdout)
        return 1
    json.dump({"routes": try_event(config, event)}, sys.stdout, ensure_ascii=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
