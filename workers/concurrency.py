"""Run a few calls at once in the worker's own concurrency model.

A task message may carry several deliveries (one fan-out's share of a queue). They
run side by side: under the gevent pool as greenlets, under any other pool on threads,
so one slow target does not hold up the others for its whole timeout.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def gevent_patched() -> bool:
    """True under ``-P gevent`` (Celery patches the standard library before tasks load)."""
    try:
        from gevent import monkey
    except ImportError:
        return False
    return bool(monkey.is_module_patched("socket"))


def run_side_by_side(call: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """``[call(item) for item in items]``, run at once; the first error is raised
    after every call has finished, so no call is abandoned half way."""
    if len(items) <= 1:
        return [call(item) for item in items]
    if gevent_patched():
        import gevent

        greenlets = [gevent.spawn(call, item) for item in items]
        gevent.joinall(greenlets)
        for greenlet in greenlets:
            if greenlet.exception is not None:
                raise greenlet.exception
        return [greenlet.value for greenlet in greenlets]
    with ThreadPoolExecutor(max_workers=len(items)) as pool:
        futures = [pool.submit(call, item) for item in items]
    return [future.result() for future in futures]
