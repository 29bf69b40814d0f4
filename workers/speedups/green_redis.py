"""redis-py's idle-connection check without a trip through the gevent hub.

Before every command, redis-py checks that the pooled connection it hands out holds no
stray bytes: a ``poll`` with a zero timeout, which never waits. Under gevent's monkey
patching that poll is gevent's cooperative one, which builds hub watchers and switches
greenlets each time: a visible share of a busy worker's CPU (bench/README.md). A
zero-timeout poll
cannot block, so the operating system's own poll gives the same answer for a fraction
of the cost. Polls that may wait still go through gevent.
"""

from __future__ import annotations

import select
import types
from typing import Any


class ZeroWaitPoll:
    """A ``select.poll`` that answers zero-timeout polls with the OS's poll."""

    def __init__(self, os_poll: Any, green_poll: Any) -> None:
        self._os_poll = os_poll
        self._green_poll = green_poll
        self._registered: list[tuple[Any, int]] = []

    def register(self, fd: Any, eventmask: int = select.POLLIN) -> None:
        self._registered.append((fd, eventmask))

    def poll(self, timeout: float | None = None) -> list[tuple[int, int]]:
        poller = self._os_poll() if timeout == 0 else self._green_poll()
        for fd, mask in self._registered:
            poller.register(fd, mask)
        return list(poller.poll(timeout))


def use_os_poll_for_idle_checks() -> bool:
    """Point redis-py's hiredis readiness checks at ``ZeroWaitPoll``.

    True when that was done: gevent has patched ``select`` and this redis-py checks
    readiness through ``select.poll`` in its hiredis parser. Anything else is left as it is.
    """
    try:
        from gevent import monkey
        from redis._parsers import hiredis
    except ImportError:
        return False
    if not monkey.is_module_patched("select"):
        return False
    module = getattr(hiredis, "select", None)
    if module is None or not hasattr(hiredis, "_socket_can_read"):
        return False
    if isinstance(module, types.SimpleNamespace):  # done already in this process
        return True
    os_poll = monkey.get_original("select", "poll")
    green_poll = select.poll
    namespace = types.SimpleNamespace(**{k: v for k, v in vars(select).items() if k.isupper()})
    namespace.poll = lambda: ZeroWaitPoll(os_poll, green_poll)
    namespace.error = select.error
    hiredis.select = namespace
    return True
