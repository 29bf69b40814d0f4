"""``relay poll SOURCE``: receive a ``telegram`` source's updates by long polling.

For bots that cannot (or, like SafeW's, are documented not to) deliver webhooks. One
process per bot: Telegram lets one ``getUpdates`` client poll a bot at a time.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from types import FrameType

import click
import structlog

from relay.cli.common import load_runtime
from relay.intake.poller import Poller, PollError, PollInterrupted, PollRetryLater
from relay.liveness import LivenessFile
from relay.logging import configure_logging


@click.command()
@click.argument("source_id", metavar="SOURCE", envvar="RELAY_POLL_SOURCE", required=False)
@click.option("--once", is_flag=True, help="Fetch and queue one batch of updates, then exit.")
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    help="The routing config (default: $RELAY_CONFIG or relay.yaml).",
)
def poll(source_id: str | None, once: bool, config_path: Path | None) -> None:
    """Long-poll getUpdates for SOURCE (kind telegram) and queue every update.

    SOURCE defaults to $RELAY_POLL_SOURCE. Runs until SIGTERM or Ctrl-C, finishing the
    batch in progress. Exits 1 if the source cannot be polled (no bot_token, token
    refused, a webhook is set). With no source at all it idles until stopped, so a
    Procfile's ``poller`` line does not take down a deployment that polls nothing.
    """
    runtime = load_runtime(config_path, check_used=False)  # a relay process: may be first
    configure_logging(runtime.settings)
    if not source_id:
        if once:
            click.echo("no SOURCE given and RELAY_POLL_SOURCE is not set", err=True)
            raise SystemExit(1)
        _idle(LivenessFile(runtime.settings.liveness_file))
        return
    # urllib3 would name the request path, which holds the bot token, in its warnings.
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    try:
        poller = Poller(runtime.intake, source_id)
    except PollError as exc:
        click.echo(str(exc), err=True)
        raise SystemExit(1) from None
    if once:
        try:
            _once(poller)
        finally:
            poller.close()
        return
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()
        if poller.waiting:  # a long poll in flight: abandon it, its updates stay unconfirmed
            raise PollInterrupted

    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        poller.run(stop, LivenessFile(runtime.settings.liveness_file))
    except PollError as exc:
        click.echo(str(exc), err=True)
        raise SystemExit(1) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        poller.close()


def _idle(alive: LivenessFile) -> None:
    """Nothing to poll: say so once and wait for the stop signal (alive all the while)."""
    structlog.get_logger("relay.poller").info(
        "poller.idle", reason="RELAY_POLL_SOURCE is not set; nothing to poll"
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stop.set())
    while not stop.is_set():
        alive.touch()
        stop.wait(alive.every)


def _once(poller: Poller) -> None:
    try:
        count = poller.poll_once()
    except PollError as exc:
        click.echo(str(exc), err=True)
        raise SystemExit(1) from None
    except PollRetryLater as retry:
        resume = "the first unconfirmed update" if poller.offset is None else poller.offset
        click.echo(f"{retry.reason}; the next run resumes at offset {resume}", err=True)
        raise SystemExit(1) from None
    click.echo(f"queued {count} update(s); next offset {poller.offset}")


COMMANDS = [poll]
