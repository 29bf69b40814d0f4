"""A connection whose request body the server refused is never reused.

A server may answer an upload (412, 413, 401, ...) before it has read the body, keep
the connection open, and then take the body's unread bytes for the next request on it:
that request fails (WsgiDAV answers it 400, urllib3 reports a broken answer). The
server here is a plain socket server that does exactly that, and records on which
connection each request line arrived.
"""

from __future__ import annotations

import io
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from workers.net.http import guarded_pool, send
from workers.net.stream import open_stream

BODY = b"x" * 65_536  # never read by the server: it stays in the connection


@dataclass
class EarlyRefuser:
    """Answers ``PUT`` after its headers only, with 412 and keep-alive; any other
    request (a ``GET``) is read whole and answered 200. Each request line is noted with
    the number of the connection it came on."""

    port: int = 0
    seen: list[tuple[int, bytes]] = field(default_factory=list)
    sock: socket.socket = field(default_factory=socket.socket)

    def serve(self) -> None:
        n = 0
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            n += 1
            threading.Thread(target=self.handle, args=(conn, n), daemon=True).start()

    def handle(self, conn: socket.socket, n: int) -> None:
        reader = conn.makefile("rb")
        try:
            while line := reader.readline():
                self.seen.append((n, line.strip()))
                while reader.readline() not in (b"\r\n", b""):  # the headers
                    pass
                if line.startswith(b"PUT"):
                    answer = b"HTTP/1.1 412 Precondition Failed\r\nContent-Length: 0\r\n\r\n"
                elif line.startswith(b"GET"):
                    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                else:  # the refused body's bytes, taken for a request
                    answer = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"
                conn.sendall(answer)
        except OSError:
            pass
        finally:
            conn.close()


@pytest.fixture
def refuser() -> Iterator[EarlyRefuser]:
    server = EarlyRefuser()
    server.sock.bind(("127.0.0.1", 0))
    server.sock.listen(8)
    server.port = server.sock.getsockname()[1]
    threading.Thread(target=server.serve, daemon=True).start()
    yield server
    server.sock.close()


def test_a_refused_streamed_upload_leaves_no_connection_behind(refuser: EarlyRefuser) -> None:
    url = f"http://127.0.0.1:{refuser.port}/f"
    with open_stream("PUT", url, timeout=5, allow_private=True, data=io.BytesIO(BODY)) as put:
        assert put.answer().status == 412
    got = send(guarded_pool(True), "GET", url, timeout=5)
    assert got.status == 200 and got.body == b"ok"
    assert [n for n, line in refuser.seen if line.startswith(b"GET")] == [2]  # a new one


def test_a_refused_body_leaves_no_connection_behind(refuser: EarlyRefuser) -> None:
    url = f"http://127.0.0.1:{refuser.port}/f"
    assert send(guarded_pool(True), "PUT", url, timeout=5, data=BODY).status == 412
    got = send(guarded_pool(True), "GET", url, timeout=5)
    assert got.status == 200 and got.body == b"ok"
    assert [n for n, line in refuser.seen if line.startswith(b"GET")] == [2]


def test_an_answered_request_keeps_its_connection(refuser: EarlyRefuser) -> None:
    """The control: a success is reused (so the tests above could fail)."""
    url = f"http://127.0.0.1:{refuser.port}/f"
    for _ in range(3):
        assert send(guarded_pool(True), "GET", url, timeout=5).status == 200
    assert [n for n, _ in refuser.seen] == [1, 1, 1]
