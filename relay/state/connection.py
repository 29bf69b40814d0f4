"""The Redis clients relay processes open: one for answering a caller, one for loops.

``caller_client`` serves whoever waits for an answer (intake, the poller, the API, the
dashboard, the CLI): it never retries (a timed-out write may have been applied, and the
caller's own retry is the safe one), opens no nested health-check ``PING`` and waits at
most ``RELAY_REDIS_TIMEOUT`` per call. Once a call times out, every call through the
same client fails at once (``RedisStalled``) for a short pause; then one caller tries
Redis again while the others still fail fast. A stalled Redis thus costs one caller the
timeout and the rest nothing, so requests do not queue behind threads that wait on it.

``redis_client`` serves background loops (workers' records, the scheduler), which
answer nobody: each call may retry twice, and still ends (about three timeouts on an
open connection, more when it must open one), so a loop logs the error and goes on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry

from relay.settings import Settings

T = TypeVar("T")
MAX_PAUSE = 1.0  # seconds callers fail fast after a timeout before one tries Redis again


class RedisStalled(redis.ConnectionError):  # type: ignore[misc]  # redis is untyped here
    """Redis timed out a moment ago: refused without asking it, until the pause ends."""


class FailFast:
    """Whether callers may ask Redis now; shared by every connection of one client.

    Closed: everyone may. After a timeout: nobody until ``pause`` has passed, then one
    thread at a time (the probe) while the others keep failing fast; any answer from
    Redis closes it again."""

    def __init__(self, timeout: float, pause: float) -> None:
        self.timeout = timeout
        self.pause = pause
        self._lock = threading.Lock()
        self._until = 0.0  # monotonic time the pause ends; 0.0 when closed
        self._probe: int | None = None  # thread ident of the caller trying Redis again

    def __deepcopy__(self, memo: dict[int, Any]) -> FailFast:
        return self  # redis-py deep-copies its Retry per connection: the state is shared

    @property
    def open(self) -> bool:
        return self._until != 0.0

    def admit(self) -> None:
        """Return if this thread may call Redis now, else raise ``RedisStalled``."""
        if not self._until:
            return
        me = threading.get_ident()
        with self._lock:
            if not self._until or self._probe == me:
                return
            if self._probe is None and time.monotonic() >= self._until:
                self._probe = me
                return
        raise RedisStalled(
            f"Redis did not answer within {self.timeout:g}s moments ago; not asking it again yet"
        )

    def timed_out(self) -> None:
        with self._lock:
            self._until = time.monotonic() + self.pause
            if self._probe == threading.get_ident():
                self._probe = None

    def answered(self) -> None:
        if self._until:
            with self._lock:
                self._until, self._probe = 0.0, None

    def abandoned(self) -> None:
        """The probe ended without a verdict (interrupted): let the next caller try."""
        if self._probe == threading.get_ident():
            with self._lock:
                self._probe = None


class CallerRetry(Retry):  # type: ignore[misc]
    """No retries, and the ``FailFast`` check around every operation of a connection
    (commands, pipelines, connecting): redis-py runs each through ``call_with_retry``."""

    def __init__(self, gate: FailFast) -> None:
        super().__init__(NoBackoff(), 0)
        self.gate = gate

    def __deepcopy__(self, memo: dict[int, Any]) -> CallerRetry:
        return self  # stateless apart from the shared gate

    def call_with_retry(
        self, do: Callable[[], T], fail: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> T:
        self.gate.admit()
        try:
            result: T = super().call_with_retry(do, fail, *args, **kwargs)
        except (redis.TimeoutError, TimeoutError):
            self.gate.timed_out()
            raise
        except redis.ConnectionError:
            self.gate.abandoned()  # refused or reset: fast on its own, no need to pause
            raise
        except redis.RedisError:
            self.gate.answered()  # an error reply is an answer: Redis is there
            raise
        except BaseException:
            self.gate.abandoned()
            raise
        self.gate.answered()
        return result


def caller_client(settings: Settings) -> redis.Redis:
    """A client for callers waiting on an answer: at most ``RELAY_REDIS_TIMEOUT`` per
    call (connecting included), no retries, and fast failures while Redis stalls."""
    timeout = settings.redis_timeout
    return redis.Redis.from_url(
        settings.redis_url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        socket_keepalive=True,
        health_check_interval=0,  # the pool already drops connections the server closed
        retry=CallerRetry(FailFast(timeout, pause=min(MAX_PAUSE, timeout))),
    )


def redis_client(settings: Settings) -> redis.Redis:
    """A client for background loops: a call may retry twice before it raises."""
    return redis.Redis.from_url(
        settings.redis_url,
        socket_timeout=settings.redis_timeout,
        socket_connect_timeout=settings.redis_timeout,
        socket_keepalive=True,
        health_check_interval=30,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=2),
    )


def gate_of(client: redis.Redis) -> FailFast | None:
    """The ``FailFast`` of a ``caller_client``, for health reports and tests."""
    retry = client.get_connection_kwargs().get("retry")
    return retry.gate if isinstance(retry, CallerRetry) else None
