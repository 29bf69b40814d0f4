"""A small, fast HTTP/1.1 sink for the end-to-end benchmark (standard library only).

Every ``POST /<target>`` is recorded as ``(event id, target, arrival time)`` — the event
id is the ``id`` field of the JSON body — and answered ``200 ok`` after ``delay_ms``
(keep-alive, concurrent: replies are timers on one asyncio loop, no thread per request).

Control endpoints: ``GET /_records?since=N`` (JSON records from index N),
``POST /_config?delay_ms=100``, ``POST /_reset``; ``SinkClient`` calls them.

    python bench/sink.py --port 8099 --delay-ms 100
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time
import urllib.request
from typing import Any
from urllib.parse import parse_qs, urlsplit

OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"


class State:
    def __init__(self, delay_ms: float) -> None:
        self.delay = delay_ms / 1000
        self.records: list[tuple[str | None, str, float]] = []


def _json_reply(payload: object) -> bytes:
    body = json.dumps(payload, separators=(",", ":")).encode()
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


class SinkProtocol(asyncio.Protocol):
    def __init__(self, state: State) -> None:
        self.state = state
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].decode("latin-1").split("\r\n")
            length = 0
            for line in head[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            method, target, _ = head[0].split(" ", 2)
            self.handle(method, target, body)

    def handle(self, method: str, target: str, body: bytes) -> None:
        assert self.transport is not None
        arrived = time.time()
        if target.startswith("/_"):
            self.transport.write(self.control(method, target))
            return
        try:
            event_id = json.loads(body).get("id")
        except (ValueError, AttributeError):
            event_id = None
        self.state.records.append((event_id, target.lstrip("/"), arrived))
        if self.state.delay > 0:
            asyncio.get_running_loop().call_later(self.state.delay, self._reply)
        else:
            self.transport.write(OK)

    def _reply(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(OK)

    def control(self, method: str, target: str) -> bytes:
        url = urlsplit(target)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if url.path == "/_records":
            since = int(query.get("since", 0))
            return _json_reply(
                {"total": len(self.state.records), "records": self.state.records[since:]}
            )
        if url.path == "/_config" and "delay_ms" in query:
            self.state.delay = float(query["delay_ms"]) / 1000
            return _json_reply({"delay_ms": self.state.delay * 1000})
        if url.path == "/_reset":
            self.state.records.clear()
            return _json_reply({"total": 0})
        return b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def serve(port: int, delay_ms: float) -> None:
    state = State(delay_ms)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SinkProtocol(state), "127.0.0.1", port, backlog=1024)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


class SinkClient:
    """The driver's side: read the records (``(event id, target, arrival time)``, arrival
    as ``time.time()`` in the sink's process), reset them, set the reply delay."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.base = f"http://127.0.0.1:{port}"

    def _call(self, method: str, path: str) -> Any:
        req = urllib.request.Request(
            self.base + path, method=method, data=b"" if method == "POST" else None
        )
        with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 - loopback only
            return json.loads(resp.read())

    def records(self, since: int = 0) -> list[tuple[str | None, str, float]]:
        rows = self._call("GET", f"/_records?since={since}")["records"]
        return [(r[0], str(r[1]), float(r[2])) for r in rows]

    def arrivals(self) -> list[float]:
        """Arrival times of every recorded delivery, sorted."""
        return sorted(r[2] for r in self.records())

    def total(self) -> int:
        return int(self._call("GET", "/_records?since=1000000000")["total"])

    def reset(self) -> None:
        self._call("POST", "/_reset")

    def delay(self, ms: float) -> None:
        self._call("POST", f"/_config?delay_ms={ms:g}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.delay_ms))


if __name__ == "__main__":
    main()
