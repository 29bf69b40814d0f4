"""Read deadlines for request bodies: a socket still being read when its deadline passes
is shut for reading, which ends the blocked read at once.

A socket timeout cannot do this: it bounds each ``recv``, and a client that sends a
byte every second never trips it, while the server's body reader loops until it has
the whole ``Content-Length``. One daemon thread per process (a greenlet under gevent)
watches every deadline from a heap; starting and cancelling a watch costs a lock and a
heap push, so the intake path pays next to nothing for it.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import socket
import threading
import time


class ReadDeadlines:
    """``watch(sock, seconds)`` → a ticket; ``cancel(ticket)`` once the read is done."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, socket.socket]] = []
        self._live: set[int] = set()
        self._seq = itertools.count()
        self._pid = 0  # the process whose thread watches; a forked child starts its own

    def watch(self, sock: socket.socket, seconds: float) -> int:
        due = time.monotonic() + seconds
        with self._cond:
            if self._pid != os.getpid():
                self._start()
            ticket = next(self._seq)
            self._live.add(ticket)
            first = not self._heap or due < self._heap[0][0]
            heapq.heappush(self._heap, (due, ticket, sock))
            if first:
                self._cond.notify()
        return ticket

    def cancel(self, ticket: int) -> bool:
        """End the watch; False if the deadline had already passed (the socket is shut)."""
        with self._cond:
            if ticket in self._live:
                self._live.discard(ticket)
                return True
            return False

    def _start(self) -> None:
        self._pid = os.getpid()
        self._heap.clear()
        self._live.clear()
        threading.Thread(target=self._run, name="relay-read-deadlines", daemon=True).start()

    def _run(self) -> None:
        cond, heap = self._cond, self._heap
        while True:
            with cond:
                while not heap:
                    cond.wait()
                due, ticket, sock = heap[0]
                wait = due - time.monotonic()
                if ticket in self._live and wait > 0:
                    cond.wait(wait)
                    continue
                heapq.heappop(heap)
                expired = ticket in self._live
                self._live.discard(ticket)
            if expired:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RD)


DEADLINES = ReadDeadlines()
