"""The bytes on their way to a store: counted, hashed, capped, sniffed and spooled."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay.errors import PermanentDeliveryError, RetryableDeliveryError
from workers.storage.stream import (
    HEAD_BYTES,
    ContentHash,
    HashingReader,
    sniff_mime,
    spool,
    type_allowed,
)

PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452") + b"\x00" * 64
PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< >>\nendobj\n"
ELF = b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 56


class Chunks:
    """A non-seekable reader over ``chunks``; counts what was taken from it."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks = chunks
        self.pending = b""
        self.taken = 0

    def read(self, n: int = -1) -> bytes:
        if not self.pending:
            self.pending = next(self.chunks, b"")
        if n < 0:
            data, self.pending = self.pending + b"".join(self.chunks), b""
        else:
            data, self.pending = self.pending[:n], self.pending[n:]
        self.taken += len(data)
        return data


def endless(chunk: bytes = b"x" * 4096) -> Iterator[bytes]:
    while True:
        yield chunk


def drain(reader: HashingReader, size: int = 1000) -> bytes:
    out = bytearray()
    while chunk := reader.read(size):
        out += chunk
    return bytes(out)


def test_hashing_reader_counts_and_hashes_what_passes() -> None:
    body = os.urandom(100_000)
    reader = HashingReader(Chunks(iter([body[:30_000], body[30_000:]])))
    first = reader.read(10)
    assert first == body[:10]
    assert reader.sha256 is None  # not at the end yet
    assert drain(reader, 7777) == body[10:]
    assert reader.size == len(body)
    assert reader.sha256 == hashlib.sha256(body).hexdigest()
    assert reader.head == body[:HEAD_BYTES]
    assert reader.read(10) == b""  # stays at the end


def test_a_short_body_keeps_its_whole_head() -> None:
    reader = HashingReader(Chunks(iter([b"abc"])), declared_size=3)
    assert drain(reader) == b"abc"
    assert reader.head == b"abc" and reader.size == 3 and reader.eof


def test_max_size_stops_the_transfer_at_the_read_that_crosses_it() -> None:
    source = Chunks(endless())
    reader = HashingReader(source, max_size=10_000, name="movie.mkv")
    with pytest.raises(PermanentDeliveryError, match="movie.mkv is larger than max_size 10000"):
        drain(reader, 4096)
    assert source.taken <= 10_000 + 4096  # not one read more than needed


def test_exactly_max_size_passes() -> None:
    reader = HashingReader(Chunks(iter([b"x" * 100])), max_size=100)
    assert len(drain(reader)) == 100 and reader.sha256


def test_more_bytes_than_declared_is_permanent() -> None:
    reader = HashingReader(Chunks(iter([b"x" * 150])), declared_size=100)
    with pytest.raises(PermanentDeliveryError, match="more than the 100 bytes"):
        drain(reader)


def test_fewer_bytes_than_declared_is_retryable() -> None:
    reader = HashingReader(Chunks(iter([b"x" * 60])), declared_size=100)
    with pytest.raises(RetryableDeliveryError, match=r"ended early \(got 60 of 100 bytes\)"):
        drain(reader)
    assert reader.sha256 is None  # never a hash of a truncated file


@pytest.mark.parametrize(
    ("head", "name", "mime"),
    [
        (PNG, "photo.png", "image/png"),
        (PNG, "notes.txt", "image/png"),  # the bytes decide, not the name
        (PDF, "report.pdf", "application/pdf"),
        (ELF, "report.pdf", "application/x-executable"),
        (b"hello, world\n", "readme", "text/plain"),
        (b"a,b\n1,2\n", "table.csv", "text/csv"),
        (b'{"a": 1}', "data.json", "application/json"),
        (b'<svg xmlns="http://www.w3.org/2000/svg"/>', "x.svg", "text/plain"),
        ("中文".encode() * 3000, "long.txt", "text/plain"),  # cut mid-character at 8 KiB
        (b"ab\x00cd", "x.txt", "application/octet-stream"),
        (b"\xff\xfe\xfa", "x.txt", "application/octet-stream"),
        (b"", "empty.txt", "application/octet-stream"),
    ],
)
def test_sniff_mime_reads_the_bytes(head: bytes, name: str, mime: str) -> None:
    assert sniff_mime(head[:HEAD_BYTES], name) == mime


def test_an_executable_named_pdf_is_not_an_allowed_pdf() -> None:
    assert not type_allowed(sniff_mime(ELF, "invoice.pdf"), ["application/pdf", "image/*"])


def test_an_svg_does_not_pass_as_an_image() -> None:
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>'
    assert not type_allowed(sniff_mime(svg, "cat.svg"), ["image/*"])


@pytest.mark.parametrize(
    ("mime", "patterns", "allowed"),
    [
        ("image/png", ["image/*"], True),
        ("image/png", ["IMAGE/PNG"], True),
        ("text/plain; charset=utf-8", ["text/plain"], True),
        ("application/pdf", ["*/*"], True),
        ("application/pdf", ["image/*", "text/*"], False),
        ("imagex/png", ["image/*"], False),
        ("image/png", [], False),
    ],
)
def test_type_allowed(mime: str, patterns: list[str], allowed: bool) -> None:
    assert type_allowed(mime, patterns) is allowed


def test_spool_copies_a_stream_to_disk_above_max_memory(tmp_path: Path) -> None:
    body = os.urandom(3 * 1024 * 1024 + 17)
    parts = iter([body[i : i + 65536] for i in range(0, len(body), 65536)])
    with spool(Chunks(parts), max_memory=1024 * 1024, dir=str(tmp_path)) as spooled:
        assert spooled.on_disk
        assert spooled.size == len(body)
        assert spooled.sha256 == hashlib.sha256(body).hexdigest()
        assert spooled.tell() == 0
        assert b"".join(spooled.chunks(100_000)) == body
        spooled.seek(5)
        assert spooled.read(3) == body[5:8]
        file = spooled.file
    assert file.closed


def test_a_small_spool_stays_in_memory() -> None:
    with spool(Chunks(iter([b"abc", b"def"]))) as spooled:
        assert not spooled.on_disk
        assert spooled.read() == b"abcdef" and spooled.size == 6


def test_a_failing_stream_leaves_no_spool(tmp_path: Path) -> None:
    reader = HashingReader(Chunks(iter([b"x" * 2048])), declared_size=4096)
    with pytest.raises(RetryableDeliveryError):
        with spool(reader, max_memory=1024, dir=str(tmp_path)):
            pytest.fail("a failed copy must not be handed out")
    assert list(tmp_path.iterdir()) == []


def test_content_hash_reuses_a_hashing_reader_on_the_way() -> None:
    body = os.urandom(50_000)

    class Wrapper:  # as the shared flow hands a store its reader: head first, then the rest
        def __init__(self, reader: HashingReader) -> None:
            self.reader = reader

        def read(self, n: int = -1) -> bytes:
            return self.reader.read(n)

    for source in (
        HashingReader(Chunks(iter([body]))),
        Wrapper(HashingReader(Chunks(iter([body])))),
    ):
        digest = ContentHash(source)
        assert digest.own is None
        while chunk := source.read(4096):
            digest.update(chunk)
        assert digest.hexdigest() == hashlib.sha256(body).hexdigest()
    plain = Chunks(iter([body]))
    digest = ContentHash(plain)
    while chunk := plain.read(4096):
        digest.update(chunk)
    assert digest.own is not None and digest.hexdigest() == hashlib.sha256(body).hexdigest()
