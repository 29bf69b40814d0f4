"""Bytes on their way from a source to a store: counted, hashed, capped, sniffed, spooled.

A download may be larger than memory and its declared size may be wrong, so the
checks happen on the bytes as they pass: ``HashingReader`` stops the transfer the
moment ``max_size`` is crossed (not after the whole file landed), notices a download
that ends early or runs past what the platform declared, and keeps the first bytes
for ``sniff_mime``, which decides the type from content rather than from the name (a
``.pdf`` name on an executable is not a PDF). ``spool`` is for stores that must know
the size before the first byte: it copies the stream to a temporary file (memory
below ``max_memory``, disk above) and hands back a seekable reader with exact size
and SHA-256.
"""

from __future__ import annotations

import codecs
import hashlib
import mimetypes
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import IO, Any, Protocol

import filetype  # type: ignore[import-untyped]

from relay.errors import PermanentDeliveryError, RetryableDeliveryError

HEAD_BYTES = 8192  # kept for sniffing: every signature filetype knows sits in the first 8 KiB
SPOOL_MEMORY = 8 * 1024 * 1024
COPY_CHUNK = 1024 * 1024
OCTET_STREAM = "application/octet-stream"
# Besides text/*, the types a name may refine text bytes into. Never image/svg+xml: it
# is text, but it would pass an ``image/*`` filter while able to carry script.
_TEXT_TYPES_FROM_NAME = {"application/json", "application/xml", "application/x-yaml"}


class Reader(Protocol):
    """What a download looks like to this module: ``read(n)``, ``b""`` at the end."""

    def read(self, n: int = -1) -> bytes: ...


class HashingReader:
    """Counts and hashes the bytes read through it, and enforces the size rules.

    ``max_size``: more bytes than that is a permanent error, raised by the read that
    crosses it. ``declared_size``: what the platform said; more bytes than declared is
    permanent (the source is not what it claimed), fewer at the end is retryable (the
    connection dropped). ``sha256`` is known once the end was read.
    """

    def __init__(
        self,
        reader: Reader,
        *,
        max_size: int | None = None,
        declared_size: int | None = None,
        name: str = "the file",
    ) -> None:
        self.reader = reader
        self.max_size = max_size
        self.declared_size = declared_size
        self.name = name
        self._hash = hashlib.sha256()
        self._size = 0
        self._head = bytearray()
        self._eof = False

    def read(self, n: int = -1) -> bytes:
        if self._eof or n == 0:
            return b""
        data = bytes(self.reader.read(n))
        if not data:
            self._finish()
            return b""
        self._size += len(data)
        if self.max_size is not None and self._size > self.max_size:
            raise PermanentDeliveryError(f"{self.name} is larger than max_size {self.max_size}")
        if self.declared_size is not None and self._size > self.declared_size:
            raise PermanentDeliveryError(
                f"{self.name}: the download sent more than the {self.declared_size} bytes "
                "its source declared"
            )
        self._hash.update(data)
        if len(self._head) < HEAD_BYTES:
            self._head += data[: HEAD_BYTES - len(self._head)]
        return data

    def _finish(self) -> None:
        if self.declared_size is not None and self._size < self.declared_size:
            raise RetryableDeliveryError(
                f"{self.name}: the download ended early "
                f"(got {self._size} of {self.declared_size} bytes)"
            )
        self._eof = True

    @property
    def size(self) -> int:
        """Bytes read so far (all of them once ``eof``)."""
        return self._size

    @property
    def eof(self) -> bool:
        return self._eof

    @property
    def sha256(self) -> str | None:
        """Hex SHA-256 of the whole stream; None until its end was read."""
        return self._hash.hexdigest() if self._eof else None

    @property
    def head(self) -> bytes:
        """The first ``HEAD_BYTES`` bytes read, for sniffing."""
        return bytes(self._head)


def sniff_mime(head: bytes, name: str) -> str:
    """The MIME type of a file from its first bytes.

    Magic numbers first (``filetype``); bytes without one that decode as UTF-8 and hold
    no NUL are text (``text/plain``, or the name's text type such as ``text/csv``);
    anything else is ``application/octet-stream``. The name alone never makes bytes an
    image or a PDF.
    """
    if not head:
        return OCTET_STREAM
    kind = filetype.guess(head)
    if kind is not None:
        return str(kind.mime)
    if b"\x00" in head or not _utf8(head):
        return OCTET_STREAM
    guessed, _ = mimetypes.guess_type(name, strict=False)
    if guessed and (guessed.startswith("text/") or guessed in _TEXT_TYPES_FROM_NAME):
        return guessed
    return "text/plain"


def _utf8(head: bytes) -> bool:
    """Valid UTF-8, allowing a character cut in two at the end of the sniffed bytes."""
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return False
    return True


def type_allowed(mime: str, patterns: Iterable[str]) -> bool:
    """Whether ``mime`` matches one of ``patterns`` (``image/png``, ``image/*``, ``*/*``);
    parameters (``; charset=...``) and case are ignored."""
    kind = mime.split(";", 1)[0].strip().lower()
    major = kind.split("/", 1)[0]
    for pattern in patterns:
        wanted = pattern.split(";", 1)[0].strip().lower()
        if wanted in ("*", "*/*") or wanted == kind:
            return True
        if wanted.endswith("/*") and wanted[:-2] == major:
            return True
    return False


class SpooledFile:
    """A whole stream on local disk (or in memory when small): seekable, read from the
    start, with exact ``size`` and ``sha256``."""

    def __init__(self, file: IO[bytes], size: int, sha256: str) -> None:
        self.file = file
        self.size = size
        self.sha256 = sha256

    def read(self, n: int = -1) -> bytes:
        return self.file.read(n)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.file.seek(offset, whence)

    def tell(self) -> int:
        return self.file.tell()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    @property
    def on_disk(self) -> bool:
        """Whether the copy went past ``max_memory`` to a temporary file."""
        return bool(getattr(self.file, "_rolled", True))

    def chunks(self, size: int = COPY_CHUNK) -> Iterator[bytes]:
        while chunk := self.read(size):
            yield chunk


@contextmanager
def spool(
    reader: Reader, *, max_memory: int = SPOOL_MEMORY, dir: str | None = None
) -> Iterator[SpooledFile]:
    """Copy ``reader`` to its end into a temporary file (kept in memory up to
    ``max_memory`` bytes); yield it rewound. The file is deleted on exit, also when the
    copy fails half-way."""
    file: Any = tempfile.SpooledTemporaryFile(max_size=max_memory, dir=dir)
    try:
        digest = hashlib.sha256()
        size = 0
        while chunk := reader.read(COPY_CHUNK):
            digest.update(chunk)
            size += len(chunk)
            file.write(chunk)
        file.seek(0)
        yield SpooledFile(file, size, digest.hexdigest())
    finally:
        file.close()


class ContentHash:
    """The SHA-256 of the bytes a store reads from ``source``. When they already pass
    through a ``HashingReader`` (``source`` is one, or wraps one as ``source.reader``, as
    the shared flow's readers do), its digest is used and nothing is hashed twice: at
    1 GiB that is over half a second of CPU saved."""

    def __init__(self, source: object) -> None:
        inner = getattr(source, "reader", None)
        self.upstream = next((c for c in (source, inner) if isinstance(c, HashingReader)), None)
        self.own = None if self.upstream is not None else hashlib.sha256()

    def update(self, data: bytes | bytearray | memoryview) -> None:
        if self.own is not None:
            self.own.update(data)

    def hexdigest(self) -> str | None:
        """The digest once the source was read to its end (None before, upstream)."""
        if self.upstream is not None:
            return self.upstream.sha256
        assert self.own is not None
        return self.own.hexdigest()
