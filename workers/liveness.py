"""This worker's liveness file (``relay.liveness``), touched from its gevent hub.

The touch runs in a greenlet, not a thread: a greenlet runs only when the hub does, so
a task that keeps the hub (a CPU loop, a call that blocks without yielding) stops the
touches, and the probe sees the worker as wedged. The Redis heartbeat
(``workers.heartbeat``) beats from a native thread on purpose and would not show that.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from relay.liveness import LivenessFile
from workers.concurrency import gevent_patched

log = structlog.get_logger("relay.worker")
TURN = 1.0  # seconds between looks; the file itself is touched every TOUCH_EVERY


def start(path: Path | None) -> None:
    """Touch ``path`` from this worker's hub (or a thread, without gevent) until it exits."""
    if path is None:
        return
    alive = LivenessFile(path)

    def turn(sleep: Callable[[float], None]) -> None:
        while True:
            alive.touch()
            if alive.error is not None:  # reported by the file itself: stop trying
                return
            sleep(TURN)

    if gevent_patched():
        import gevent

        gevent.spawn(turn, gevent.sleep)
    else:
        threading.Thread(
            target=turn, args=(time.sleep,), name="relay-liveness", daemon=True
        ).start()
    log.info("worker.liveness_file", path=str(path))
