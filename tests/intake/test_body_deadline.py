"""A trickling body is cut off by the receiver itself, on the real gunicorn settings.

Without a buffering proxy in front, gunicorn's request threads read a body in blocking
mode with no limit: a client that sends its headers and then a byte now and then holds
a thread for as long as it likes. The receiver bounds the read (``BODY_DEADLINE``):
the client gets a 408 with a JSON body while it still has most of its body to send,
and the thread serves the next event.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay.intake.route import BODY_DEADLINE
from tests.web_support import Gunicorn, post, read_response, slow_head


@pytest.fixture
def web(tmp_path: Path, redis_url: str) -> Iterator[Gunicorn]:
    # One process with one thread: a slow client that held it would stall every event.
    server = Gunicorn(tmp_path, redis_url, WEB_CONCURRENCY="1", RELAY_WEB_THREADS="1")
    yield server
    server.stop()


def trickle(sock: socket.socket, stop: threading.Event, sent: list[int]) -> None:
    """A byte a quarter second until told to stop or the server hangs up."""
    while not stop.wait(0.25):
        try:
            sock.sendall(b" ")
        except OSError:
            return
        sent.append(1)


def test_a_trickling_body_gets_408_with_json_and_frees_the_thread(web: Gunicorn) -> None:
    length = 4096  # the client would need over 15 minutes at its pace
    sock = socket.create_connection(("127.0.0.1", web.port), timeout=BODY_DEADLINE * 4)
    stop, sent = threading.Event(), list[int]()
    try:
        sock.sendall(slow_head("127.0.0.1", web.port, length))
        feeder = threading.Thread(target=trickle, args=(sock, stop, sent), daemon=True)
        feeder.start()
        status, headers, body = read_response(sock)
        stop.set()
        feeder.join()
    finally:
        sock.close()

    assert status == 408
    assert headers["content-type"] == "application/json"
    answer = json.loads(body)
    assert answer["error"] == "request_timeout"
    assert f"within {BODY_DEADLINE:g}s" in answer["detail"]
    assert len(sent) < length - 1  # answered long before the body could have been complete

    # The only request thread is free again: a signed event is accepted.
    status, body = post("127.0.0.1", web.port)
    assert status == 202, body
    assert "event_id" in json.loads(body)


def test_a_body_cut_short_by_the_client_is_a_400_not_a_500(web: Gunicorn) -> None:
    with socket.create_connection(("127.0.0.1", web.port), timeout=30) as sock:
        sock.sendall(slow_head("127.0.0.1", web.port, 4096))
        sock.shutdown(socket.SHUT_WR)  # the client gives up; its answer goes nowhere
        status, _, body = read_response(sock)
    assert status == 400
    assert json.loads(body)["error"] == "bad_request"
    assert "intake.unexpected_error" not in web.log()
