"""Memory and CPU of each relay process, for the requests and limits in ``deploy/k8s``.

Not a test (pytest does not collect it): it starts a private Redis, the web process as
the manifests run it (gunicorn, ``WEB_CONCURRENCY=2``, 8 threads), one gevent worker
with 64 green threads, a scheduler and a loopback sink, sends signed events through
the receiver to one webhook target, and prints per process: proportional set size (PSS,
what a cgroup charges once for pages the gunicorn processes share) when idle and at its
peak under load, and CPU seconds per event. (The liveness probes are a shell line that
reads a file's age: nothing to measure.)

    .venv/bin/python -m tests.deploy.footprint [--events 3000] [--senders 16]
"""

from __future__ import annotations

import argparse
import os
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.common import (
    PY,
    base_env,
    bench_run,
    drain,
    gunicorn_command,
    new_port,
    sample_body,
    signed_request,
    start_sink,
    wait_port,
    write_config,
)

PROCESSES = ("web", "worker", "scheduler")


def pss_kib(pgid: int) -> int:
    """PSS of the live processes in process group ``pgid``, in KiB."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                if int(f.read().rpartition(")")[2].split()[2]) != pgid:
                    continue
            with open(f"/proc/{entry}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return total


def cpu_seconds(pgid: int) -> float:
    from bench.common import group_cpu_seconds

    return group_cpu_seconds(pgid)


class Sampler(threading.Thread):
    """Samples the PSS of each process group every 100 ms and keeps the peak."""

    def __init__(self, groups: dict[str, int]) -> None:
        super().__init__(daemon=True)
        self.groups = groups
        self.peak = dict.fromkeys(groups, 0)
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.1):
            for name, pgid in self.groups.items():
                self.peak[name] = max(self.peak[name], pss_kib(pgid))


def post(port: int) -> int:
    headers, body = signed_request(sample_body())
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/hooks/ops", data=body, headers=headers, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as reply:  # noqa: S310 - loopback only
        return int(reply.status)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--senders", type=int, default=16)
    args = parser.parse_args()
    with bench_run("footprint", keep=False) as run:
        sink_env = base_env(run.redis.url, Path("/dev/null"), 0)
        sink = start_sink(run.procs, sink_env)
        target = {
            "id": "sink",
            "kind": "webhook",
            "url": f"http://127.0.0.1:{sink.port}/sink",
            "allow_private": True,
        }
        config = write_config(run.tmp / "relay.yaml", [target])
        port = new_port()
        env = base_env(run.redis.url, config, port, WEB_CONCURRENCY="2", RELAY_WEB_THREADS="8")
        web, _ = gunicorn_command("relay.wsgi:app", port)
        node = f"footprint-{os.getpid()}@localhost"
        worker = [PY, "-m", "celery", "-A", "workers.celery_app", "worker", "-P", "gevent"]
        worker += ["-c", "64", "-n", node, "--without-gossip", "--without-mingle"]
        run.procs.start("web", web, env)
        run.procs.start("worker", worker, {**env, "RELAY_WORKER_CONCURRENCY": "64"})
        run.procs.start("scheduler", [PY, "-m", "relay.cli", "scheduler"], env)
        wait_port(port, procs=run.procs, name="web")
        time.sleep(8)  # the worker connects and the gunicorn workers import the app
        groups = {name: run.procs.pid(name) for name in PROCESSES}
        idle = {name: pss_kib(pgid) for name, pgid in groups.items()}
        cpu_before = {name: cpu_seconds(pgid) for name, pgid in groups.items()}
        sampler = Sampler(groups)
        sampler.start()
        began = time.monotonic()
        with ThreadPoolExecutor(args.senders) as pool:
            statuses = list(pool.map(lambda _: post(port), range(args.events)))
        drain(sink, args.events, timeout=300)
        seconds = time.monotonic() - began
        sampler.stop.set()
        sampler.join()
        cpu = {name: cpu_seconds(pgid) - cpu_before[name] for name, pgid in groups.items()}
        accepted = sum(1 for s in statuses if s == 202)
        print(f"{accepted}/{args.events} accepted, {sink.total()} delivered in {seconds:.1f} s")
        print(f"{'process':<10} {'idle PSS':>10} {'peak PSS':>10} {'CPU ms/event':>13}")
        for name in PROCESSES:
            per_event = 1000 * cpu[name] / max(1, accepted)
            print(
                f"{name:<10} {idle[name] / 1024:>8.0f} MiB {sampler.peak[name] / 1024:>6.0f} MiB"
                f" {per_event:>13.2f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
