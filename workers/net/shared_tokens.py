"""Platform access tokens shared by every worker: DingTalk and WeCom app tokens, Feishu
tenant tokens, GitHub App installation tokens.

Each platform limits how often a token may be asked for and hands out the same one while
it is valid, so one token serves all workers: it is cached in Redis until shortly before
it expires. One worker fetches (a ``SET NX`` lock) while the others wait for its result;
a worker that waits longer than ``LOCK_WAIT`` fetches too (a rare double fetch is
harmless). A token the platform refuses early (revoked, rotated) is forgotten, unless
another worker has already replaced it, and fetched again. Without Redis the token is
cached in the process.
"""

from __future__ import annotations

import secrets
import time
from abc import ABC, abstractmethod
from typing import Any

from relay.state.lua import load_script

EARLY = 300  # seconds: a cached token is dropped this long before the platform expires it
LOCK_WAIT = 5.0  # seconds a worker waits for another worker's token fetch
DEFAULT_LIFE = 7200  # seconds, when the platform does not say


def cache_life(life: Any, *, default: int = DEFAULT_LIFE) -> int:
    """Seconds to cache a token the platform says lives ``life`` seconds: ``EARLY`` less,
    or half of it for a token that short."""
    seconds = life if isinstance(life, int) and life > 0 else default
    return seconds - EARLY if seconds > 2 * EARLY else max(1, seconds // 2)


class SharedToken(ABC):
    """One app's token under ``key``; a subclass says how to ``fetch`` a new one."""

    def __init__(self, key: str) -> None:
        self.key = key
        self._local: tuple[str, float] | None = None

    @abstractmethod
    def fetch(self, timeout: float) -> tuple[str, int]:
        """A new token from the platform and how long (s) it may be cached."""

    def get(self, state: Any, timeout: float, *, rejected: str | None = None) -> str:
        """A valid token; ``rejected`` is one the platform just refused (never returned)."""
        if state is None:
            local = self._local
            if local and local[0] != rejected and local[1] > time.monotonic():
                return local[0]
            token, ttl = self.fetch(timeout)
            self._local = (token, time.monotonic() + ttl)
            return token
        cached = _text(state.get(self.key))
        if cached and cached != rejected:
            return cached
        if cached and rejected:  # forget it, unless another worker already replaced it
            _compare_and_delete(state, self.key, rejected)
        lock, mine = f"{self.key}:lock", secrets.token_hex(8)
        locked = state.set(lock, mine, nx=True, px=int((timeout + LOCK_WAIT) * 1000))
        if not locked:
            deadline = time.monotonic() + min(LOCK_WAIT, timeout)
            while time.monotonic() < deadline:
                time.sleep(0.05)
                cached = _text(state.get(self.key))
                if cached and cached != rejected:
                    return cached
        try:
            token, ttl = self.fetch(timeout)
            state.set(self.key, token, ex=ttl)
        finally:
            if locked:
                _compare_and_delete(state, lock, mine)
        return token


def _compare_and_delete(state: Any, key: str, value: str) -> None:
    """Delete ``key`` only if it still holds ``value`` (relay/state/lua/compare_and_delete.lua)."""
    load_script(state, "compare_and_delete.lua")(keys=[key], args=[value])


def _text(value: Any) -> str | None:
    return value.decode() if isinstance(value, bytes) else value
