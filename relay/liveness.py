"""A liveness file: a process's main loop touches it as it turns, a probe reads its age.

The scheduler, the poller and every worker touch ``RELAY_LIVENESS_FILE`` (when set)
from the loop whose progress matters: the scheduler and the poller once per turn, also
while Redis is away (they are waiting as they should, not wedged), a worker from a
greenlet of its gevent hub, which runs only while no task holds the hub. A stale file
therefore means a wedged process, and nothing else: a probe needs neither Redis nor the
broker, so it works the same with one Redis, behind Sentinel, or during an outage
(when restarting everything would only add a crash loop to it).

A probe is ``relay alive`` or, with no Python to start, the shell line of
``PROBE_COMMAND`` (what the Kubernetes manifests run).
"""

from __future__ import annotations

import time
from pathlib import Path

import structlog

TOUCH_EVERY = 5.0  # seconds between touches; a probe allows many times this
MAX_AGE = 60.0  # seconds: older, and the process counts as wedged
log = structlog.get_logger("relay.liveness")
PROBE_COMMAND = (
    'test -n "$(find "$RELAY_LIVENESS_FILE" '
    '-newermt "-${RELAY_LIVENESS_MAX_AGE:-60} seconds" 2>/dev/null)"'
)


class LivenessFile:
    """Touches ``path`` at most every ``every`` seconds; does nothing without a path. A
    file that cannot be written is reported once, never raised: the loop goes on."""

    def __init__(self, path: Path | None, every: float = TOUCH_EVERY) -> None:
        self.path = path
        self.every = every
        self._last = float("-inf")
        self.error: str | None = None

    def touch(self) -> None:
        now = time.monotonic()
        if self.path is None or now - self._last < self.every:
            return
        self._last = now
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.touch()  # an existing file's time is set too
        except OSError as exc:
            if self.error is None:
                self.error = f"{self.path}: {exc.strerror or exc}"
                log.warning("liveness.file_unwritable", error=self.error)


def age(path: Path) -> float | None:
    """Seconds since ``path`` was touched, or ``None`` if it does not exist."""
    try:
        return max(0.0, time.time() - path.stat().st_mtime)
    except FileNotFoundError:
        return None
