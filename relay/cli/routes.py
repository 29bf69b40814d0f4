"""``relay routes try SOURCE``: which routes a sample event matches and exactly what each
of their targets would receive, without sending anything.

The event is a ``GroupEvent`` JSON file, a platform's own body (``--raw``, normalised by
the source exactly as the receiver would: signed as ``relay send`` signs, verified and
parsed), or the source kind's sample. The rendering runs the real target adapters in a
dry run, in ``python -m workers.tryout``: target code runs in a worker's process, never
in ``relay``'s (see ``workers.tryout``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import click
from pydantic import ValidationError

from relay.cli.common import load_settings
from relay.config.kinds import source_kinds
from relay.config.loader import load_config
from relay.config.models import RelayConfig, UnresolvedOptions
from relay.errors import ConfigError, IntakeError
from relay.events import GroupEvent
from relay.intake.sources.base import InboundRequest

TRY_TIMEOUT = 120.0  # seconds for the worker-side rendering (imports included)
_MODES = {
    "live": "live",
    "shadow": "shadow: recorded, never sent",
    "test": "test: to its test_targets",
}


def _fail(*lines: str) -> SystemExit:
    for line in lines:
        click.echo(line, err=True)
    return SystemExit(1)


def sample_event(config: RelayConfig, source_id: str, body: bytes | None, raw: bool) -> GroupEvent:
    """The event to try: ``body`` as a GroupEvent, or as the platform's body (``raw``),
    or the source kind's sample; its ``source`` is always ``source_id``."""
    if body is not None and not raw:
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise _fail(f"the file is not JSON: {exc} (a platform's body needs --raw)") from None
        if not isinstance(data, dict):
            raise _fail("the file must hold one GroupEvent object (a platform's body: --raw)")
        try:
            return GroupEvent.model_validate({**data, "source": source_id})
        except ValidationError as exc:
            problems = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
            problems.append("the file is not a GroupEvent (a platform's own body needs --raw)")
            raise _fail(*problems) from None
    source_config = config.sources[source_id]
    if isinstance(source_config.options, UnresolvedOptions):
        unset = source_config.options.problems
        raise _fail(*(f"{p} (the source signs and parses the sample)" for p in unset))
    source = source_kinds()[source_config.kind](source_config)
    signed = source.sample(body)
    query = signed.path_suffix.partition("?")[2]
    request = InboundRequest(
        method="POST",
        headers={k.lower(): [v] for k, v in signed.headers.items()},
        body=signed.body,
        args=parse_qs(query, keep_blank_values=True),
    )
    try:
        source.verify(request)
        parsed = source.parse(request)
    except IntakeError as exc:
        raise _fail(f"{source_id} refuses the body ({exc.status} {exc.code}): {exc}") from None
    return parsed.event.model_copy(update={"source": source_id})


def render(config_path: Path, event: GroupEvent) -> list[dict[str, Any]]:
    """The worker-side dry run's answer (``workers.tryout``)."""
    try:
        done = subprocess.run(  # noqa: S603 - our own module, with our interpreter
            [sys.executable, "-m", "workers.tryout", "--config", str(config_path)],
            input=event.to_json().encode(),
            capture_output=True,
            timeout=TRY_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise _fail(f"rendering took longer than {TRY_TIMEOUT:g}s") from None
    try:
        answer = json.loads(done.stdout)
    except ValueError:
        raise _fail("rendering failed:", done.stderr.decode(errors="replace").strip()) from None
    if done.returncode != 0:
        raise _fail(*answer.get("problems", ["rendering failed"]))
    routes: list[dict[str, Any]] = answer["routes"]
    return routes


def _echo_request(request: dict[str, Any]) -> None:
    click.echo(f"    {request['method']} {request['url']}")
    for name, value in request["headers"].items():
        click.echo(f"    {name}: {value}")
    body = request["body"]
    if body is None:
        click.echo(f"    ({request['size']} bytes, not text)")
    elif body:
        click.echo("")
        for line in body.splitlines():
            click.echo(f"    {line}")
        if request["truncated"]:
            click.echo(f"    … ({request['size']} bytes in all)")
    click.echo("")


def echo_trials(event: GroupEvent, routes: list[dict[str, Any]]) -> None:
    """The routes in config order: matched or the condition that failed; for a match,
    every request of every target."""
    where = f", group {event.group.id}" if event.group else ""
    click.echo(f"event {event.id} ({event.type}) from {event.source}{where}")
    if not routes:
        click.echo(f"no route has source {event.source!r}")
    for trial in routes:
        head = f"routes[{trial['route']}] ({_MODES.get(trial['mode'], trial['mode'])})"
        if not trial["matches"]:
            click.echo(f"{head}: no match ({trial['failed']} does not hold)")
            continue
        click.echo(f"{head}: matches")
        for target in trial["targets"]:
            click.echo(f"  → {target['target']} ({target['kind']})")
            for request in target["requests"]:
                _echo_request(request)
            if target.get("skipped"):
                click.echo(f"    not rendered: {target['skipped']}")
            if target.get("error"):
                click.echo(f"    would fail: {target['error']}")
            if not target["requests"] and not target.get("skipped") and not target.get("error"):
                click.echo(f"    sends no request: {target.get('result') or 'nothing to send'}")


@click.group()
def routes() -> None:
    """Try routes before they go live."""


@routes.command("try")
@click.argument("source_id", metavar="SOURCE")
@click.option(
    "--file",
    "event_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A GroupEvent JSON file (with --raw: the platform's own body). "
    "Default: the source kind's sample event.",
)
@click.option("--raw", is_flag=True, help="FILE is the platform's body, parsed by the source.")
@click.option("--config", "config_path", type=click.Path(path_type=Path), help="Config file.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def try_routes(
    source_id: str, event_file: Path | None, raw: bool, config_path: Path | None, as_json: bool
) -> None:
    """Show which routes of SOURCE a sample event matches and exactly what each target
    would receive (secrets redacted). Nothing is sent and nothing is written."""
    path = config_path or load_settings().config
    try:
        config = load_config(path, with_targets=False, resolve_secrets=False)
    except ConfigError as exc:
        raise _fail(*exc.problems) from None
    if source_id not in config.sources:
        known = ", ".join(config.sources) or "none"
        raise _fail(f"unknown source {source_id!r}; configured in {path}: {known}")
    if raw and event_file is None:
        raise _fail("--raw needs --file: the platform's body to parse")
    body = event_file.read_bytes() if event_file else None
    event = sample_event(config, source_id, body, raw)
    trials = render(path, event)
    if as_json:
        click.echo(json.dumps({"event": json.loads(event.to_json()), "routes": trials}, indent=2))
        return
    echo_trials(event, trials)


COMMANDS = [routes]
