"""What a store is asked to do and what it answers.

A ``Store`` writes create-only: ``put`` raises ``AlreadyExists`` when something is at
the path, and the shared flow decides (``skip_same`` compares size and SHA-256,
``rename`` tries ``name (2).ext``, ``overwrite`` writes with ``create_only=False``,
``fail`` dead-letters). Errors follow the delivery error classes: retryable for what
may pass, permanent with the store's own message for what will not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class AlreadyExists(Exception):  # noqa: N818 - an answer, not a crash
    """Something is already stored at the path."""

    def __init__(self, path: str, existing: StoredObject | None = None) -> None:
        self.path = path
        self.existing = existing
        super().__init__(path)


@dataclass(frozen=True)
class StoredObject:
    """A file in the store. ``sha256`` is None when the store cannot tell."""

    path: str
    size: int | None = None
    sha256: str | None = None
    url: str | None = None  # where a person opens it, when the store has such a place
    id: str | None = None  # the store's own id (Feishu file token, ...)


class Source(Protocol):
    """The bytes to store: ``read(n)`` returns at most ``n`` bytes, ``b""`` at the end.
    The flow hands stores a reader that hashes and counts on the way through and
    enforces ``max_size``; when the store ``needs_size`` the reader is a seekable spool
    and ``size`` is exact."""

    def read(self, n: int = -1) -> bytes: ...


class Store(Protocol):
    """One store's API, as the shared flow uses it."""

    needs_size: bool  # must know the size before the first byte (spool unknown sizes)
    max_segment: int  # bytes a path segment may take in this store
    max_path: int  # bytes the whole path may take
    windows_names: bool  # refuse Windows-reserved names (CON, aux.txt, trailing dots)

    def stat(self, path: str) -> StoredObject | None:
        """What is at ``path``, or None."""
        ...

    def put(
        self,
        path: str,
        data: Source,
        *,
        size: int | None,
        mime: str | None,
        sha256: str | None = None,
        create_only: bool = True,
        upload_id: str | None = None,
    ) -> StoredObject:
        """Write ``data`` at ``path``; ``AlreadyExists`` if ``create_only`` and the path
        is taken. ``sha256`` is given when known before the upload (a spool);
        ``upload_id`` is stable per delivery and file, for stores that keep upload
        sessions or need a ledger key."""
        ...

    def link(self, obj: StoredObject, lifetime: float) -> str | None:
        """A link to share in the group (a presigned URL, a share link), or None."""
        ...

    def cleanup(self, upload_id: str, path: str | None = None) -> None:
        """Abort what an interrupted upload left (multipart parts, spool files)."""
        ...
