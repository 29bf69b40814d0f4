"""``relay scheduler``: the process that releases due retries and redoes lost tasks."""

from __future__ import annotations

import signal
import threading
from types import FrameType

import click

from relay.cli.common import load_settings
from relay.errors import ConfigError
from relay.liveness import LivenessFile
from relay.logging import configure_logging
from relay.state.connection import redis_client
from relay.state.outbox import Outbox
from relay.state.scheduler import Scheduler


@click.command()
def scheduler() -> None:
    """Run the scheduler until SIGTERM or Ctrl-C (several may run at once)."""
    settings = load_settings()
    configure_logging(settings)
    try:
        client = redis_client(settings)
    except ConfigError as exc:  # a malformed Sentinel URL
        for problem in exc.problems:
            click.echo(problem, err=True)
        raise SystemExit(2) from None
    outbox = Outbox(client, lease=settings.visibility_timeout, retention=settings.retention)
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    Scheduler(
        client, outbox, interval=settings.scheduler_interval, retention=settings.retention
    ).run(stop, LivenessFile(settings.liveness_file))


COMMANDS = [scheduler]
