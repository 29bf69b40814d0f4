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

Both take ``RELAY_REDIS_URL``: one server (``redis://``, ``rediss://``, ``unix://``,
read by redis-py), or a Sentinel set and the name of the master it guards
(``redis+sentinel://[[user]:password@]host:26379[,host:26379...]/<master>[/<db>]``,
read by ``SentinelUrl``; ``rediss+sentinel://…?ssl_ca_certs=…`` speaks TLS, verified as
for ``rediss://``, to the Sentinels and to the master alike). One variable keeps every
process, ``relay up`` and the CLI's choice of Redis on the same single value. A
Sentinel-backed client asks the Sentinels where the master is whenever it opens a
connection and, at most once a second, when it hands one out (``FollowingPool``), so
after a failover it reaches the new master without a restart.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool

from relay.errors import ConfigError
from relay.settings import Settings
from relay.state.redis_tls import check_url, tls_params

T = TypeVar("T")
MAX_PAUSE = 1.0  # seconds callers fail fast after a timeout before one tries Redis again
SENTINEL_SCHEME = "redis+sentinel"
SENTINEL_TLS_SCHEME = "rediss+sentinel"
SENTINEL_PORT = 26379
SENTINEL_FORM = (
    "redis+sentinel://[[user]:password@]host:26379[,host:26379...]/<master>[/<db>], "
    "or rediss+sentinel://…?ssl_ca_certs=… for TLS"
)
# A Sentinel answers where the master is at once; one that takes longer is skipped for the
# next, so a stalled Sentinel costs a caller this much, not a whole RELAY_REDIS_TIMEOUT.
SENTINEL_TIMEOUT = 0.5


@dataclass(frozen=True)
class SentinelUrl:
    """A ``redis+sentinel://`` URL taken apart: the Sentinels to ask, the master's name,
    and the database and credentials of the data servers (the master and its replicas)."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: dict[str, str] | None = None  # rediss+sentinel: its ssl_* parameters

    def tls_options(self) -> dict[str, Any]:
        """redis-py's connection options for TLS (certificate verification unless the
        URL says ``ssl_cert_reqs=none``); empty without TLS."""
        if self.tls is None:
            return {}
        return {"ssl": True, "ssl_cert_reqs": "required", **self.tls}

    @classmethod
    def parse(cls, url: str) -> SentinelUrl | None:
        """The parts of a Sentinel URL; None for any other URL (one server).

        A malformed one is a ``ConfigError`` naming ``RELAY_REDIS_URL`` and never quoting
        the URL, which may hold a password."""
        scheme, sep, rest = url.partition("://")
        if not sep or scheme.lower() not in (SENTINEL_SCHEME, SENTINEL_TLS_SCHEME):
            return None
        try:
            parts = urlsplit(f"{SENTINEL_SCHEME}://{rest}")
        except ValueError:  # unbalanced IPv6 brackets
            raise _bad_url("cannot be parsed") from None
        tls = None
        if scheme.lower() == SENTINEL_TLS_SCHEME:
            check_url(f"rediss://{rest}")  # TLS options that cannot work, named
            tls = tls_params(url)
            if len(tls) != len(parse_qsl(parts.query)):
                raise _bad_url("takes only ssl_* query options")
        elif parts.query:
            raise _bad_url("takes no query options (use rediss+sentinel:// for TLS)")
        if parts.fragment:
            raise _bad_url("takes no fragment")
        userinfo, _, hosts = parts.netloc.rpartition("@")
        username, has_password, password = userinfo.partition(":")
        sentinels = tuple(_sentinel_address(host) for host in hosts.split(","))
        master, _, db = parts.path.strip("/").partition("/")
        if not master:
            raise _bad_url("names no master after the Sentinels")
        if db and not (db.isascii() and db.isdigit()):
            raise _bad_url("has a database that is not a number")
        return cls(
            sentinels=sentinels,
            master=unquote(master),
            db=int(db or 0),
            username=unquote(username) or None,
            password=unquote(password) if has_password else None,
            tls=tls,
        )


def _sentinel_address(text: str) -> tuple[str, int]:
    host, port = text, ""
    if text.startswith("["):  # [IPv6]:port
        host, _, port = text[1:].partition("]")
        port = port.removeprefix(":")
    elif ":" in text:
        host, _, port = text.rpartition(":")
    if not host:
        raise _bad_url("has an empty Sentinel address")
    if port and not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        raise _bad_url("has a Sentinel port that is not a number from 1 to 65535")
    return host, int(port or SENTINEL_PORT)


def _bad_url(what: str) -> ConfigError:
    return ConfigError([f"RELAY_REDIS_URL: the Sentinel URL {what} (expected {SENTINEL_FORM})"])


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


class FollowingPool(SentinelConnectionPool):  # type: ignore[misc]
    """A Sentinel master's pool that also asks where the master is when it hands out a
    connection, at most every ``recheck`` seconds, not only when it opens one.

    A failover that leaves the old primary running (an operator's ``SENTINEL FAILOVER``,
    a healed partition) does not break pooled connections: they would go on writing to
    the old primary until Sentinel demotes it at its next look (up to 10 s later), and
    those writes are dropped when it resyncs. Asking closes the idle connections to a
    former master (redis-py does so when the answer changes) and the busy ones when they
    come back. A Sentinel that cannot be asked leaves the connections as they are."""

    recheck = 1.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._due = 0.0  # monotonic time of the next look
        self._asking = threading.Lock()

    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        now = time.monotonic()
        if now >= self._due and self._asking.acquire(blocking=False):
            try:
                self._due = now + self.recheck
                self.get_master_address()
            except redis.RedisError:
                pass
            finally:
                self._asking.release()
        return super().get_connection(*args, **kwargs)


def client_for(url: str, *, sentinel_password: str | None = None, **options: Any) -> redis.Redis:
    """A client of the Redis ``url`` names, with redis-py connection ``options``.

    For a Sentinel URL, the client of the master: the Sentinels are asked in turn until
    one answers, each for at most ``SENTINEL_TIMEOUT`` (or the client's own timeout if
    shorter), with ``sentinel_password`` if they require one."""
    found = SentinelUrl.parse(url)
    if found is None:
        check_url(url)  # TLS options that cannot work: one line naming the setting
        return redis.Redis.from_url(url, **options)
    asking = {k: v for k, v in options.items() if k.startswith("socket_")}
    for name in ("socket_timeout", "socket_connect_timeout"):
        asking[name] = min(asking.get(name) or SENTINEL_TIMEOUT, SENTINEL_TIMEOUT)
    if sentinel_password:
        asking["password"] = sentinel_password
    tls = found.tls_options()  # the Sentinels and the data servers alike
    sentinels = Sentinel(list(found.sentinels), sentinel_kwargs={**asking, **tls})
    credentials = {"username": found.username, "password": found.password}
    return sentinels.master_for(
        found.master,
        connection_pool_class=FollowingPool,
        db=found.db,
        **{k: v for k, v in credentials.items() if v is not None},
        **tls,
        **options,
    )


def caller_client(settings: Settings) -> redis.Redis:
    """A client for callers waiting on an answer: at most ``RELAY_REDIS_TIMEOUT`` per
    call (connecting included), no retries, and fast failures while Redis stalls."""
    timeout = settings.redis_timeout
    return client_for(
        settings.redis_url,
        sentinel_password=settings.redis_sentinel_password,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        socket_keepalive=True,
        health_check_interval=0,  # the pool already drops connections the server closed
        retry=CallerRetry(FailFast(timeout, pause=min(MAX_PAUSE, timeout))),
    )


def redis_client(settings: Settings) -> redis.Redis:
    """A client for background loops: a call may retry twice before it raises."""
    return client_for(
        settings.redis_url,
        sentinel_password=settings.redis_sentinel_password,
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
