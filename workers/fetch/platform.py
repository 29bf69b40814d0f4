"""The base of the fetchers that resolve a platform's file reference.

Telegram, Slack, Feishu and DingTalk name a file by a reference that only the source's
credentials turn into bytes. A file of such a source that carries a plain URL instead
(a generic payload posted to it, a test) is fetched as a URL, through the SSRF guard and
with no credential attached: the platform's token never goes to a host it did not name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from relay.config.models import SourceConfig
from relay.events import FileRef
from workers.fetch.base import Download
from workers.fetch.url import fetch_url


class PlatformFetcher(ABC):
    """``open`` resolves a ``ref`` with ``open_ref``; a file with only a ``url`` is
    fetched as it is."""

    @contextmanager
    def open(
        self, file: FileRef, source: SourceConfig, *, timeout: float, state: Any = None
    ) -> Iterator[Download]:
        if file.ref:
            with self.open_ref(file, file.ref, source, timeout=timeout, state=state) as fetched:
                yield fetched
            return
        with fetch_url(
            file.url or "",
            timeout=timeout,
            allow_private=bool(getattr(source.options, "allow_private", False)),
            what=f"{file.name}: download",
        ) as fetched:
            yield fetched

    @abstractmethod
    def open_ref(
        self, file: FileRef, ref: str, source: SourceConfig, *, timeout: float, state: Any
    ) -> AbstractContextManager[Download]:
        """The file ``ref`` names, fetched with the source's credentials."""
