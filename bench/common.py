"""Shared pieces of the benchmarks: owned subprocesses, a private Redis, configs, signing,
the run's set-up and clean-up, tables.

Every child runs in its own process group (``start_new_session``) and ``Procs.stop_all``
kills the groups, so an interrupted benchmark leaves nothing behind. Nothing here
talks to anything but 127.0.0.1, and never to the machine's shared Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import yaml

from bench.sink import SinkClient
from relay import signing
from relay.cli.embedded import EmbeddedRedis, free_port

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
KEY = signing.decode_secret(SECRET)
DEPLOY_GUNICORN_CONF = ROOT / "deploy" / "gunicorn.conf.py"

SAMPLE_BODY = {
    "type": "message.created",
    "data": {
        "group": {"id": "ops-room", "name": "Ops"},
        "sender": {"id": "u-42", "name": "Ada"},
        "text": "Deploy finished: relay is live",
    },
}


class Procs:
    """Children started in their own sessions; ``stop_all`` ends each group it started."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, command: Sequence[str], env: dict[str, str]) -> None:
        with open(self.log_dir / f"{name}.log", "ab") as log:
            self.procs[name] = subprocess.Popen(
                list(command),
                env=env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def pid(self, name: str) -> int:
        return self.procs[name].pid

    def alive(self, name: str) -> bool:
        return name in self.procs and self.procs[name].poll() is None

    def stop(self, name: str, timeout: float = 15.0) -> None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        # Whatever the leader left in its group (gunicorn/celery children) goes too.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)

    def log_tail(self, name: str, chars: int = 3000) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""


def interrupt_on_signals() -> None:
    """SIGINT, SIGTERM and SIGHUP raise ``KeyboardInterrupt`` in the driver, so its
    ``finally`` stops every child (also when started in the background, where SIGINT
    is inherited as ignored, or ended by ``timeout``/``kill``)."""

    def _raise(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise)


def ignore_signals() -> None:
    """For the clean-up: a second Ctrl-C must not cut ``Procs.stop_all`` short (every
    stop is bounded by its own timeouts)."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)


@dataclass
class Run:
    """What one benchmark run owns: a temp dir (logs, configs), its children, a private Redis."""

    tmp: Path
    procs: Procs
    redis: EmbeddedRedis

    @property
    def redis_pid(self) -> int:
        assert self.redis.process is not None
        return self.redis.process.pid


@contextmanager
def bench_run(name: str, keep: bool, *, stop_on_signals: bool = False) -> Iterator[Run]:
    """A run's temp dir, ``Procs`` and Redis; on leaving, every child and Redis are stopped
    and the dir removed (unless ``keep``: its path is printed). ``stop_on_signals``: SIGTERM
    and SIGHUP end the run like Ctrl-C, and no signal can cut the clean-up short."""
    if stop_on_signals:
        interrupt_on_signals()
    tmp = Path(tempfile.mkdtemp(prefix=f"relay-bench-{name}-"))
    procs = Procs(tmp)
    server = None
    try:
        server = start_redis(tmp)
        yield Run(tmp, procs, server)
    finally:
        if stop_on_signals:
            ignore_signals()
        procs.stop_all()
        if server is not None:
            server.stop()
        if keep:
            print(f"logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def exit_quietly_on_interrupt(main: Callable[[], int]) -> NoReturn:
    """``sys.exit(main())`` for a script run with ``stop_on_signals``: a run ended by a
    signal exits 130 with one line, not a traceback (its children are already stopped)."""
    try:
        sys.exit(main())
    except KeyboardInterrupt as stopped:
        print(f"interrupted ({stopped}); every child stopped", file=sys.stderr)
        sys.exit(130)


def bench_parser(doc: str | None) -> argparse.ArgumentParser:
    """A script's parser; its docstring is the help text, line breaks kept."""
    return argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )


def add_output_args(parser: argparse.ArgumentParser, *, json_file: bool = True) -> None:
    """The options every script ends its help with: ``--json FILE`` (where it writes one)
    and ``--keep``."""
    if json_file:
        parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")


def write_json(path: str | None, results: Any) -> None:
    """``--json FILE``: the results as JSON, if a file was asked for."""
    if path:
        Path(path).write_text(json.dumps(results, indent=1))


def wait_port(port: int, timeout: float = 30.0, procs: Procs | None = None, name: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if procs is not None and name and not procs.alive(name):
            raise RuntimeError(f"{name} exited early:\n{procs.log_tail(name)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def start_redis(tmp: Path) -> EmbeddedRedis:
    """A private redis-server with AOF (appendfsync everysec), as production runs it."""
    return EmbeddedRedis(tmp / "redis", appendonly=True).start()


def gunicorn_command(
    app: str, port: int, threads: int | None = None, workers: int | None = None
) -> tuple[list[str], str]:
    """The gunicorn command line and a description of the config it uses.

    ``deploy/gunicorn.conf.py`` when it exists, else ``-w 2 -k gthread --threads 8``;
    bound to 127.0.0.1 only. The access log (if the config has one) goes to the log file.
    """
    base = [PY, "-m", "gunicorn", "-b", f"127.0.0.1:{port}"]
    if DEPLOY_GUNICORN_CONF.exists():
        overrides: list[str] = []
        if workers:
            overrides += ["-w", str(workers)]
        if threads:
            overrides += ["--threads", str(threads)]
        what = "deploy/gunicorn.conf.py"
        if overrides:
            what += f" (overridden: {' '.join(overrides)})"
        return [*base, "-c", str(DEPLOY_GUNICORN_CONF), *overrides, app], what
    command = [*base, "-w", str(workers or 2), "-k", "gthread", "--threads", str(threads or 8), app]
    return command, f"-w {workers or 2} -k gthread --threads {threads or 8} (no deploy config)"


def gunicorn_effective(env: dict[str, str]) -> str:
    """Workers × threads that ``deploy/gunicorn.conf.py`` resolves to under ``env``."""
    if not DEPLOY_GUNICORN_CONF.exists():
        return ""
    code = (
        "import runpy,json,sys; g=runpy.run_path(sys.argv[1]);"
        "print(json.dumps({k: g.get(k) for k in ('workers','threads','worker_class',"
        "'accesslog','keepalive')}))"
    )
    out = subprocess.run(
        [PY, "-c", code, str(DEPLOY_GUNICORN_CONF)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.strip() or out.stderr.strip()[-300:]


def write_config(path: Path, targets: list[dict[str, Any]]) -> Path:
    """A ``standard_webhooks`` source ``ops`` routed to ``targets``."""
    config = {
        "sources": [{"id": "ops", "kind": "standard_webhooks", "secrets": [SECRET]}],
        "targets": targets,
        "routes": [{"source": "ops", "targets": [t["id"] for t in targets]}],
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def base_env(redis_url: str, config: Path, port: int, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "RELAY_REDIS_URL": redis_url,
        "RELAY_CONFIG": str(config),
        "RELAY_LOG_LEVEL": "WARNING",
        "RELAY_LOG_FORMAT": "json",
        "RELAY_BIND": f"127.0.0.1:{port}",
        "BENCH_REDIS_URL": redis_url,
        "PYTHONPATH": str(ROOT),
    }
    env.update(extra)
    return env


def signed_request(
    body: bytes, msg_id: str | None = None, stamp: int | None = None
) -> tuple[dict[str, str], bytes]:
    """Standard Webhooks headers for ``body`` under a fresh (or given) webhook-id."""
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    ts = str(stamp if stamp is not None else int(time.time()))
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": ts,
        "webhook-signature": signing.sign_header([KEY], msg_id, ts, body),
    }, body


def raw_request(
    path: str, port: int, headers: dict[str, str], body: bytes, method: str = "POST"
) -> bytes:
    """A complete HTTP/1.1 keep-alive request as bytes."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass
class Exchange:
    """One request of ``send_paced``: when it was due and when it left, what came back."""

    due: float  # time.perf_counter() at which the schedule wanted it sent
    sent_at: float = 0.0  # time.time() when it was written
    status: int = 0
    body: bytes = b""
    latency: float = 0.0  # written → response read, seconds
    total: float = 0.0  # due → response read (includes waiting for a free connection)
    error: str | None = None


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """Status, body (``Content-Length`` framed) and whether the server keeps the
    connection open."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length, keep = 0, True
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value.strip())
        elif name == "connection" and value.strip().lower() == "close":
            keep = False
    return status, await reader.readexactly(length), keep


async def send_paced(
    port: int,
    requests: Sequence[bytes],
    rate: float,
    max_connections: int = 64,
    idle_timeout: float = 4.0,
) -> list[Exchange]:
    """Open-loop: request i is due at t0 + i/rate and goes out on an idle keep-alive
    connection (a new one if none is idle, up to ``max_connections``; one idle for more
    than ``idle_timeout`` s is closed first, as gunicorn's keepalive of 5 s would).
    Results are in request order."""
    idle: list[tuple[float, asyncio.StreamReader, asyncio.StreamWriter]] = []
    slots = asyncio.Semaphore(max_connections)
    opened: list[asyncio.StreamWriter] = []
    loop = asyncio.get_running_loop()

    async def one(exchange: Exchange, raw: bytes) -> None:
        async with slots:
            exchange.sent_at = time.time()
            t0 = time.perf_counter()
            try:
                reader = writer = None
                while idle:
                    last_used, reader, writer = idle.pop()
                    if loop.time() - last_used < idle_timeout:
                        break
                    writer.close()
                    reader = writer = None
                if reader is None or writer is None:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    opened.append(writer)
                writer.write(raw)
                exchange.status, exchange.body, keep = await read_response(reader)
                done = time.perf_counter()
                exchange.latency = done - t0
                exchange.total = done - exchange.due
                if keep:
                    idle.append((loop.time(), reader, writer))
                else:
                    writer.close()
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                exchange.error = type(exc).__name__

    start = time.perf_counter() + 0.05
    exchanges = [Exchange(start + i / rate) for i in range(len(requests))]
    tasks = []
    for exchange, raw in zip(exchanges, requests, strict=True):
        delay = exchange.due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(exchange, raw)))
    await asyncio.gather(*tasks)
    for writer in opened:
        writer.close()
    return exchanges


def start_sink(procs: Procs, env: dict[str, str], name: str = "sink") -> SinkClient:
    """``bench/sink.py`` on a free loopback port, answering at once."""
    port = new_port()
    procs.start(name, [PY, str(ROOT / "bench" / "sink.py"), "--port", str(port)], env)
    wait_port(port, procs=procs, name=name)
    return SinkClient(port)


def drain(sink: SinkClient, expected: int, timeout: float, settle: float = 0.5) -> float:
    """Wait until the sink has ``expected`` records (or ``timeout`` s), then ``settle`` s
    more for late duplicates; returns the seconds waited."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if sink.total() >= expected:
            break
        time.sleep(0.2)
    time.sleep(settle)
    return time.monotonic() - began


def sample_body() -> bytes:
    return json.dumps(SAMPLE_BODY).encode()


def pct(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (``p`` in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(round(p / 100 * len(ordered) + 0.5))))
    return ordered[rank - 1]


def steady_rate(times: Sequence[float], otherwise: float = math.nan) -> float:
    """Arrivals/s over the middle 80 % of (sorted) ``times``, free of start-up and tail;
    ``otherwise`` when there are too few to tell."""
    lo, hi = int(len(times) * 0.1), int(len(times) * 0.9)
    if hi <= lo or times[hi] <= times[lo]:
        return otherwise
    return (hi - lo) / (times[hi] - times[lo])


class Table:
    """Fixed-width columns whose header and rows line up because both come from one spec.

    ``Table("app:6, req/s:>9.0f, ...")``: per column, its title and the format spec of its
    values as an f-string has them; a title takes its column's alignment and width.
    """

    def __init__(self, columns: str) -> None:
        titled = [column.rpartition(":") for column in columns.split(", ")]
        self.titles = [title for title, _, _ in titled]
        self.specs = [spec for _, _, spec in titled]

    def header(self) -> str:
        return " ".join(
            format(title, spec.split(".")[0].rstrip("bcdeEfFgGnosxX%"))
            for title, spec in zip(self.titles, self.specs, strict=True)
        )

    def row(self, *values: object) -> str:
        return " ".join(format(v, spec) for v, spec in zip(values, self.specs, strict=True))


def start_py_spy(pid: int, out: Path, seconds: float, fmt: str = "raw") -> subprocess.Popen[bytes]:
    """``py-spy record`` (``pip install py-spy``) of ``pid`` and its children into ``out``
    for ``seconds``; non-blocking, so the profiled processes are not paused."""
    spy = shutil.which("py-spy") or str(Path(PY).parent / "py-spy")
    out.parent.mkdir(parents=True, exist_ok=True)
    command = [spy, "record", "--pid", str(pid), "--subprocesses", "--rate", "100"]
    command += ["--nonblocking", "--duration", str(int(seconds)), "--format", fmt, "-o", str(out)]
    return subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )


def new_port() -> int:
    return free_port()


_TICK = os.sysconf("SC_CLK_TCK")


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds of the live processes in process group ``pgid``."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        # After "(comm)": state ppid pgrp ... utime is field 14, stime 15 (1-based).
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / _TICK


def pid_cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (/proc/stat: all but idle and iowait)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / _TICK


class ForeignLoad:
    """How much CPU processes other than ours used during a phase (other engineers'
    tests on a shared machine make figures unreliable; this says when)."""

    def __init__(self, procs: Procs, extra_pids: Sequence[int] = ()) -> None:
        self.procs = procs
        self.extra_pids = list(extra_pids)

    def _ours(self) -> float:
        import resource

        own = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        total = own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
        total += sum(group_cpu_seconds(p.pid) for p in self.procs.procs.values())
        return total + sum(pid_cpu_seconds(p) for p in self.extra_pids)

    def __enter__(self) -> ForeignLoad:
        self.t0, self.busy0, self.ours0 = time.monotonic(), machine_busy_seconds(), self._ours()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = max(1e-9, time.monotonic() - self.t0)
        self.cores = (
            max(0.0, (machine_busy_seconds() - self.busy0) - (self._ours() - self.ours0)) / wall
        )
