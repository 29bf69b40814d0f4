"""The ``Fetcher`` protocol and the ``Download`` it opens."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from relay.config.models import SourceConfig
from relay.events import FileRef


@dataclass
class Download:
    """An open download. ``read(n)`` returns at most ``n`` bytes, ``b""`` at the end;
    ``size`` is what the platform says (None if it does not), ``mime`` its content
    type. Closing is the context manager's job."""

    reader: Any  # an object with read(n) -> bytes
    size: int | None = None
    mime: str | None = None

    def read(self, n: int = -1) -> bytes:
        data: bytes = self.reader.read(n)
        return data

    def chunks(self, size: int = 1 << 20) -> Iterator[bytes]:
        while chunk := self.read(size):
            yield chunk


class Fetcher(Protocol):
    """Opens one file of an event. Raises ``RetryableDeliveryError`` for what may pass
    (5xx, timeouts, an expired temporary URL) and ``PermanentDeliveryError`` with the
    platform's own message for what will not (too large for the Bot API, a missing
    scope, a revoked token). Never puts a token-bearing URL into an error."""

    def open(
        self, file: FileRef, source: SourceConfig, *, timeout: float, state: Any = None
    ) -> AbstractContextManager[Download]: ...
