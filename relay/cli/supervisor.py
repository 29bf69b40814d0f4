"""Run a few named processes as one tree, like a tiny foreman, for ``relay up``.

Each child gets its own session (so a terminal's Ctrl-C reaches only us, and we
decide the order of shutdown) and, on Linux, ``PR_SET_PDEATHSIG`` so that even a
SIGKILLed supervisor leaves no orphans. Output is merged line by line with a name
prefix (``web       | ...``). Stopping, on request or because one child exited on
its own, is the same: SIGTERM to every child's process group, a grace period (celery
finishes running tasks in a warm shutdown), then SIGKILL to whatever remains.

``run()`` installs its signal handlers, so call it from the main thread; children
are spawned from the calling thread, which must outlive them (the kernel sends the
death signal when the *thread* that forked a child ends).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any, TextIO

PR_SET_PDEATHSIG = 1
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_POLL = 0.1


@dataclass(frozen=True)
class Child:
    """One process to run: a name for its log prefix, argv, and optionally env and cwd."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str] | None = None
    cwd: Path | None = None


@dataclass
class _Running:
    child: Child
    proc: subprocess.Popen[bytes]
    reader: threading.Thread = field(init=False)


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGTERM when this process dies (Linux).

    ``None`` where ``prctl`` is unavailable. The function is resolved here, before any
    fork, so the child only makes one foreign call between fork and exec.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(0)

    return preexec


class Supervisor:
    """``Supervisor(children).run()`` → 0 after a requested stop, 1 if a child died."""

    def __init__(
        self, children: Sequence[Child], *, grace: float = 20.0, out: TextIO | None = None
    ) -> None:
        self.children = list(children)
        self.grace = grace
        self.out = out or sys.stdout
        self.width = max([len(c.name) for c in children] + [len("supervisor")])
        self.running: list[_Running] = []
        self._stop = threading.Event()
        self._hurry = threading.Event()
        self._signal: int | None = None
        self._lock = threading.Lock()

    def run(self) -> int:
        previous = self._install_handlers()
        try:
            code = self._start_all()
            if code is None:
                code = self._watch()
            self._shutdown()
            self.say("supervisor", "all stopped")
            return code
        finally:
            self._close()
            for signum, handler in previous.items():
                if handler is not None:  # None: set outside Python, cannot be restored
                    signal.signal(signum, handler)

    def say(self, name: str, text: str) -> None:
        """Write one prefixed line; the lock keeps lines of different children whole.

        A closed output (``relay up | head``) drops lines instead of raising: readers
        must keep draining the pipes, or a child blocks on a full one and never stops.
        """
        with self._lock:
            try:
                self.out.write(f"{name.ljust(self.width)} | {text}\n")
                self.out.flush()
            except (OSError, ValueError):
                pass

    def _install_handlers(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {signum: signal.signal(signum, self._on_signal) for signum in STOP_SIGNALS}

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._stop.is_set():
            self._hurry.set()  # a second Ctrl-C: do not wait for the grace period
        self._signal = self._signal or signum
        self._stop.set()

    def _start_all(self) -> int | None:
        preexec = die_with_parent()
        for child in self.children:
            if self._stop.is_set():
                return 0
            try:
                proc = subprocess.Popen(
                    list(child.argv),
                    env=dict(child.env) if child.env is not None else None,
                    cwd=child.cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=preexec,
                )
            except OSError as exc:
                self.say("supervisor", f"cannot start {child.name}: {exc}")
                return 1
            running = _Running(child, proc)
            running.reader = threading.Thread(
                target=self._pump,
                args=(child.name, proc.stdout),
                daemon=True,
                name=f"log-{child.name}",
            )
            running.reader.start()
            self.running.append(running)
        return None

    def _pump(self, name: str, stream: IO[bytes] | None) -> None:
        if stream is None:
            return
        for line in iter(stream.readline, b""):
            self.say(name, line.decode("utf-8", "replace").rstrip("\r\n"))

    def _watch(self) -> int:
        """Block until a stop is requested (0) or some child exits on its own (1)."""
        while not self._stop.wait(_POLL):
            for item in self.running:
                code = item.proc.poll()
                if code is not None:
                    self.say(
                        "supervisor",
                        f"{item.child.name} exited on its own "
                        f"({_describe(code)}); stopping everything",
                    )
                    return 1
        name = signal.Signals(self._signal).name if self._signal else "stop"
        self.say("supervisor", f"{name} received; stopping (up to {self.grace:g}s)")
        return 0

    def _shutdown(self) -> None:
        self._signal_groups(signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        while self._anything_alive():
            if self._hurry.is_set() or time.monotonic() > deadline:
                left = [r.child.name for r in self.running if r.proc.poll() is None]
                self.say("supervisor", "killing " + (", ".join(left) or "leftover processes"))
                self._signal_groups(signal.SIGKILL)
                break
            time.sleep(_POLL)
        for item in self.running:
            item.proc.wait()
            item.reader.join(timeout=5)  # their last lines come before ours

    def _signal_groups(self, signum: int) -> None:
        # Every group, also of children already gone: their own children may remain.
        for item in self.running:
            try:
                os.killpg(item.proc.pid, signum)
            except (ProcessLookupError, PermissionError):
                pass

    def _anything_alive(self) -> bool:
        alive = False
        for item in self.running:
            if item.proc.poll() is None:
                alive = True
            else:
                try:
                    os.killpg(item.proc.pid, 0)
                    alive = True
                except (ProcessLookupError, PermissionError):
                    pass
        return alive

    def _close(self) -> None:
        for item in self.running:
            if item.proc.poll() is None:  # only after an unexpected error in run()
                _kill_group(item.proc.pid)
                item.proc.wait()
            item.reader.join(timeout=5)
            # A reader still blocked means some escaped process holds the pipe open;
            # closing under it would wait on the reader's lock, so leave it to exit.
            if item.proc.stdout is not None and not item.reader.is_alive():
                item.proc.stdout.close()


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
