"""Which Redis a command uses, and the ``relay up`` that runs in a state folder.

The order is ``RELAY_REDIS_URL``, else the Redis of a live ``relay up`` in the state
folder (``RELAY_STATE_DIR``, default ``.relay``), else the default URL. A second shell
next to ``relay up`` thus reaches the relay's Redis with nothing exported, and an
export left from an earlier run is named as such when it no longer answers.

A running ``relay up`` holds an exclusive ``flock`` on ``<state>/up.lock`` and writes
its PID, ports and URLs there (mode 0600: an external Redis URL may carry a password).
The kernel drops the lock when the process dies, however it dies, so a file left by a
killed relay never passes for a running one.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import redis

from relay.errors import RelayError
from relay.settings import Settings
from relay.state import keys

LOCK_FILE = "up.lock"
URL_FILE = Path("redis") / "url"  # written by ``EmbeddedRedis`` in the state folder
DEFAULT_URL: str = Settings.model_fields["redis_url"].default
Origin = Literal["RELAY_REDIS_URL", "relay up", "default"]


class StateInUse(RelayError):
    """Another live ``relay up`` holds the state folder."""


_PASSWORD_IN_NETLOC = re.compile(r"^([a-z+]+://[^:@/]*):[^@/]*@")


def masked(url: str) -> str:
    """The URL with its password replaced by ``***``: safe for a banner or an error."""
    if "," in url.partition("://")[2].partition("/")[0]:  # several hosts: a Sentinel set
        return _PASSWORD_IN_NETLOC.sub(r"\1:***@", url, count=1)
    try:
        parts = urlsplit(url)
        password, host, port = parts.password, parts.hostname, parts.port
    except ValueError:
        return "<an unparsable URL>"
    if password is None:
        return url
    host = f"[{host}]" if host and ":" in host else host or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{port}" if port else "")
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass(frozen=True)
class UpInfo:
    """A live ``relay up``: what it published in its lock file."""

    state_dir: Path
    pid: int | None = None
    web: str | None = None  # base URL of the web process
    redis_url: str | None = None
    embedded: bool = True
    started_at: float | None = None
    config: str | None = None

    @property
    def who(self) -> str:
        return f"PID {self.pid}" if self.pid else "PID unknown"

    def public(self) -> dict[str, Any]:
        """Everything but the Redis password, for ``relay status --json``."""
        return {
            "pid": self.pid,
            "web": self.web,
            "dashboard": f"{self.web}/dashboard/" if self.web else None,
            "api": f"{self.web}/api/v1" if self.web else None,
            "redis": masked(self.redis_url) if self.redis_url else None,
            "embedded_redis": self.embedded,
            "started_at": self.started_at,
            "config": self.config,
            "state_dir": str(self.state_dir),
        }


def _held(fd: int) -> bool:
    """Whether another process holds a lock on ``fd``'s file (probing takes none)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return True
        raise
    fcntl.flock(fd, fcntl.LOCK_UN)
    return False


def _read_record(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def running_up(state_dir: Path) -> UpInfo | None:
    """The ``relay up`` running in ``state_dir``, or None if none holds its lock."""
    path = state_dir / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        if not _held(fd):
            return None
    finally:
        os.close(fd)
    record = _read_record(path)  # empty for a moment while relay up starts
    embedded = bool(record.get("embedded", True))
    url = record.get("redis_url") if not embedded else published_url(state_dir)
    return UpInfo(
        state_dir=state_dir,
        pid=record.get("pid"),
        web=record.get("web"),
        redis_url=url,
        embedded=embedded,
        started_at=record.get("started_at"),
        config=record.get("config"),
    )


def published_url(state_dir: Path) -> str | None:
    """The URL of the last embedded Redis started in ``state_dir`` (running or not)."""
    try:
        return (state_dir / URL_FILE).read_text().strip() or None
    except OSError:
        return None


class UpLock:
    """The exclusive lock of a ``relay up`` on its state folder, held until it exits."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / LOCK_FILE
        self.fd: int | None = None

    def acquire(self, wait: float = 1.0) -> UpLock:
        """Take the lock or raise ``StateInUse`` naming the holder's PID. ``wait`` covers a
        command that probes the lock at that very moment (it holds it for microseconds)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                os.close(fd)
                holder = _read_record(self.path)
                pid = holder.get("pid")
                web = f", web on {holder['web']}" if holder.get("web") else ""
                raise StateInUse(
                    f"{self.state_dir} is in use by another relay up (PID {pid or 'unknown'}"
                    f"{web}): stop it first, or run this one with another RELAY_STATE_DIR"
                ) from None
        os.fchmod(fd, 0o600)
        self.fd = fd
        return self

    def publish(self, **record: Any) -> None:
        """Write what other commands need to find this relay (PID, URLs) into the lock."""
        if self.fd is None:
            raise RuntimeError("publish() before acquire()")
        data = json.dumps({"pid": os.getpid(), **record}).encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the flock
            self.fd = None


@dataclass(frozen=True)
class RedisChoice:
    """The Redis a command uses and why: for ``--verbose``, ``relay status`` and errors."""

    url: str
    origin: Origin
    state_dir: Path
    up: UpInfo | None = None  # the live relay up in the state folder, if any
    stale_url: str | None = field(default=None, repr=False)  # URL file of a stopped one

    @property
    def why(self) -> str:
        if self.origin == "RELAY_REDIS_URL":
            return "from RELAY_REDIS_URL"
        if self.origin == "relay up" and self.up is not None:
            return f"the relay up running in {self.state_dir}, {self.up.who}"
        return f"the default: RELAY_REDIS_URL is unset and no relay up runs in {self.state_dir}"

    def line(self) -> str:
        return f"redis: {masked(self.url)} ({self.why})"

    def hint(self) -> str:
        """What to do when this Redis does not answer or holds no relay."""
        if self.origin == "RELAY_REDIS_URL":
            if self.up is not None and self.up.redis_url != self.url:
                return (
                    f"a relay up is running in {self.state_dir} ({self.up.who}): unset "
                    "RELAY_REDIS_URL to use its Redis"
                )
            if self.up is None and self.stale_url == self.url:
                return (
                    f"it is the Redis of an earlier relay up in {self.state_dir}, which is no "
                    "longer running: unset RELAY_REDIS_URL (commands find a running relay up "
                    "by themselves)"
                )
            return "check RELAY_REDIS_URL"
        if self.origin == "relay up":
            who = self.up.who if self.up else "PID unknown"
            return f"check the relay up running in {self.state_dir} ({who})"
        return (
            "start `relay up` in this folder (or set RELAY_STATE_DIR to its state folder), "
            "or set RELAY_REDIS_URL to your relay's Redis"
        )


def choose_redis(state_dir: Path, env: dict[str, str] | None = None) -> RedisChoice:
    """``RELAY_REDIS_URL``, else a live ``relay up`` in ``state_dir``, else the default."""
    environ = os.environ if env is None else env
    up = running_up(state_dir)
    stale = None if up is not None else published_url(state_dir)
    given = environ.get("RELAY_REDIS_URL")
    if given:
        return RedisChoice(given, "RELAY_REDIS_URL", state_dir, up, stale)
    if up is not None and up.redis_url:
        return RedisChoice(up.redis_url, "relay up", state_dir, up)
    return RedisChoice(DEFAULT_URL, "default", state_dir, up, stale)


def reason(exc: BaseException) -> str:
    """The first line of a Redis error, without redis-py's ``Error 111 connecting to``."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text.rstrip(".") or type(exc).__name__


def unreachable(choice: RedisChoice, exc: BaseException) -> str:
    """One line: the URL tried (masked), why this one, why it failed, what to do."""
    verb = "cannot reach" if isinstance(exc, redis.ConnectionError) else "error from"
    return f"{verb} Redis at {masked(choice.url)} ({choice.why}): {reason(exc)}; {choice.hint()}"


def never_used(choice: RedisChoice) -> str:
    return (
        f"Redis at {masked(choice.url)} ({choice.why}) has never been used by a relay, so "
        f"there is nothing to show; {choice.hint()}"
    )


def used_by_relay(client: redis.Redis) -> bool:
    """Whether any relay has written to this Redis (raises the Redis error if unreachable)."""
    return int(client.exists(*keys.USED_BY_RELAY)) > 0


def mark_used(client: redis.Redis) -> None:
    """Record that a relay runs on this Redis (the first time only)."""
    client.set(keys.SEEN, f"{time.time():.0f}", nx=True)
