"""The capacity model: what an accepted event and a delivery cost Redis, the web process
and the workers, and how many events per second one Redis primary core carries.

Redis runs every command on one thread, so one primary is the ceiling of a relay
deployment: web processes and workers scale out, Redis does not. For each count of
targets per event (``--targets``, default 1 and 3; ``webhook`` targets on a loopback sink
that answers at once), on a private redis-server (AOF, ``appendfsync everysec``):

1. intake: gunicorn ``relay.wsgi:app`` (``deploy/gunicorn.conf.py``) and ``relay
   scheduler``, no worker; ``--events`` signed events at ``--rate``/s through the
   receiver. Per accepted event: web CPU, Redis CPU, round trips, commands.
2. pipeline: the same plus the Procfile's worker (``celery -A workers.celery_app worker
   -P gevent -c 64``); the same load, until the sink has every delivery and nothing is in
   flight. Per event and per delivery: web, worker, scheduler and Redis CPU, round trips.

Each phase is preceded by ``--idle`` seconds of the same processes without traffic
(worker polls, heartbeats, the scheduler's sweeps); that background, per second, is
subtracted from the phase. Redis is read through ``INFO`` (no ``MONITOR``): CPU from
``used_cpu_*`` (the whole process, and its main thread, the one that runs commands),
round trips as ``total_reads_processed`` (one socket read per request or pipeline),
commands as ``total_commands_processed`` (those run inside scripts included), scripts as
the ``EVALSHA``/``EVAL`` calls of ``commandstats``. The driver's own ``INFO`` and polling
calls are counted and taken off.

With two counts of targets, the workers' share splits into a per-event part (the fan-out
and the event's two Celery messages) and a per-delivery part (a straight line through
both); calls per command name show where the commands go. The projection: one Redis main thread at
100 % carries 1 / (its CPU seconds per event) events/s; the web and worker cores that
rate needs follow from their CPU per event. ``--replica`` attaches a replica to the
private Redis, so the primary also feeds a replication stream, as it does under Sentinel.

    python bench/scale.py                                  # 1 and 3 targets, 50 ev/s × 20 s
    python bench/scale.py --targets 1,3 --rate 80 --events 2000 --replica
    python bench/scale.py --env RELAY_REDIS_MIN_REPLICAS=1 --replica
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # ``python bench/scale.py`` from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis

from bench.common import (
    PY,
    SECRET,
    ForeignLoad,
    Procs,
    Run,
    Table,
    add_output_args,
    base_env,
    bench_parser,
    bench_run,
    exit_quietly_on_interrupt,
    group_cpu_seconds,
    gunicorn_command,
    new_port,
    raw_request,
    sample_body,
    send_paced,
    signed_request,
    start_sink,
    wait_port,
    write_config,
    write_json,
)
from bench.sink import SinkClient
from relay.cli.embedded import EmbeddedRedis
from relay.cli.up import worker_command
from relay.redact import redact
from relay.state import keys

SCRIPT_COMMANDS = ("cmdstat_evalsha", "cmdstat_eval", "cmdstat_evalsha_ro", "cmdstat_eval_ro")
ROLES = ("web", "worker", "scheduler")


# --- counting -------------------------------------------------------------------------


@dataclass
class Counters:
    """What Redis and the relay's processes had done at one instant (cumulative)."""

    redis_cpu: float = 0.0  # s, the whole redis-server process (AOF fsync threads too)
    redis_main: float = 0.0  # s, its main thread: the one that runs every command
    reads: float = 0.0  # socket reads: one per request or pipeline, i.e. round trips
    commands: float = 0.0  # commands, those run inside scripts included
    scripts: float = 0.0  # EVALSHA / EVAL calls
    web: float = 0.0  # s of CPU, gunicorn master and workers
    worker: float = 0.0  # s, the Celery worker's process group
    scheduler: float = 0.0  # s
    wall: float = 0.0  # s, monotonic

    by_command: dict[str, float] = field(default_factory=dict)  # calls, from commandstats

    def __sub__(self, other: Counters) -> Counters:
        names = self.by_command.keys() | other.by_command.keys()
        return Counters(
            **{n: getattr(self, n) - getattr(other, n) for n in NUMBERS},
            by_command={n: self.by_command.get(n, 0) - other.by_command.get(n, 0) for n in names},
        )

    def scaled(self, factor: float) -> Counters:
        return Counters(
            **{n: getattr(self, n) * factor for n in NUMBERS},
            by_command={n: calls * factor for n, calls in self.by_command.items()},
        )


NUMBERS = [f.name for f in fields(Counters) if f.name != "by_command"]


class Meter:
    """Takes ``Counters`` snapshots; counts the driver's own Redis calls so they can be
    taken off (each is one read and one command)."""

    def __init__(self, client: redis.Redis, procs: Procs, redis_pids: list[int]) -> None:
        self.client = client
        self.procs = procs
        self.redis_pids = redis_pids  # ours, though not started through ``procs``
        self.own_calls: dict[str, int] = {}

    def call(self, command: str, fn: Callable[[], Any]) -> Any:
        self.own_calls[command] = self.own_calls.get(command, 0) + 1
        return fn()

    def snapshot(self) -> Counters:
        info = self.call("info", lambda: self.client.info("stats", "commandstats", "cpu"))
        cpu = {role: self._group(role) for role in ROLES}
        return Counters(
            redis_cpu=float(info["used_cpu_sys"]) + float(info["used_cpu_user"]),
            redis_main=float(info["used_cpu_sys_main_thread"])
            + float(info["used_cpu_user_main_thread"]),
            reads=float(info["total_reads_processed"]),
            commands=float(info["total_commands_processed"]),
            scripts=float(sum(int(info[k]["calls"]) for k in SCRIPT_COMMANDS if k in info)),
            wall=time.monotonic(),
            by_command={
                name.removeprefix("cmdstat_"): float(stats["calls"])
                for name, stats in info.items()
                if name.startswith("cmdstat_")
            },
            **cpu,
        )

    def _group(self, role: str) -> float:
        return group_cpu_seconds(self.procs.pid(role)) if self.procs.alive(role) else 0.0

    @contextmanager
    def window(self) -> Iterator[Window]:
        """Counters over the block, less the driver's own Redis calls in it."""
        window = Window()
        with ForeignLoad(self.procs, self.redis_pids) as foreign:
            start = self.snapshot()
            calls0 = dict(self.own_calls)
            yield window
            end = self.snapshot()
        # The opening INFO's read is counted before `start` answers, its command after: so
        # the window holds one INFO and every poll, once each as a read and as a command.
        own = {n: calls - calls0.get(n, 0) for n, calls in self.own_calls.items()}
        own["info"] = own.get("info", 0)  # the closing one counted its read, not itself
        delta = end - start
        delta.reads -= sum(own.values())
        delta.commands -= sum(own.values())
        for name, calls in own.items():
            delta.by_command[name] = delta.by_command.get(name, 0) - calls
        window.used, window.foreign_cores = delta, foreign.cores


@dataclass
class Window:
    used: Counters = field(default_factory=Counters)
    foreign_cores: float = 0.0

    def less(self, idle: Window) -> Counters:
        """This window's counters less the idle background for as long as it lasted."""
        rate = idle.used.scaled(1 / max(1e-9, idle.used.wall))
        background = rate.scaled(self.used.wall)
        background.wall = 0.0
        return self.used - background


# --- the stack ------------------------------------------------------------------------


@dataclass
class Stack:
    procs: Procs
    env: dict[str, str]
    port: int
    concurrency: int

    def start_web(self) -> str:
        command, desc = gunicorn_command("relay.wsgi:app", self.port)
        self.procs.start("web", command, self.env)
        self.procs.start("scheduler", [PY, "-m", "relay.cli", "scheduler"], self.env)
        wait_port(self.port, procs=self.procs, name="web")
        return desc

    def start_worker(self) -> None:
        hostname = f"bench-scale-{time.time_ns()}@%h"
        self.procs.start(
            "worker", worker_command(self.concurrency, "--hostname", hostname), self.env
        )

    def stop(self) -> None:
        for name in ("worker", "web", "scheduler"):
            self.procs.stop(name)


def send(port: int, count: int, rate: float) -> list[str]:
    """``count`` freshly signed events at ``rate``/s; the ids of the accepted ones."""
    body = sample_body()
    stamp = int(time.time())
    raws = [
        raw_request("/hooks/ops", port, *signed_request(body, stamp=stamp)) for _ in range(count)
    ]
    accepted = []
    for exchange in asyncio.run(send_paced(port, raws, rate)):
        if 200 <= exchange.status < 300:
            accepted.append(str(json.loads(exchange.body)["event_id"]))
    return accepted


def check_answers(procs: Procs, phase: str, accepted: list[str], refused: int) -> None:
    """A phase whose events were refused measured something else: say so; with none
    accepted, stop (the web process is not taking events, and its log says why)."""
    if not accepted:
        raise RuntimeError(f"{phase}: no event was accepted; web log:\n{procs.log_tail('web')}")
    if refused:
        print(f"{phase}: {refused} events not accepted (the figures are per accepted event)")


def settle(meter: Meter, sink: SinkClient, expected: int, timeout: float) -> None:
    """Until the sink has ``expected`` deliveries and nothing is in flight (each finish
    script runs just after its POST), or ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and sink.total() < expected:
        time.sleep(0.2)
    while time.monotonic() < deadline:
        if meter.call("zcard", lambda: meter.client.zcard(keys.INFLIGHT)) == 0:
            return
        time.sleep(0.2)


# --- one count of targets -------------------------------------------------------------


@dataclass
class PerUnit:
    """Costs per accepted event (``per='event'``) or per delivery."""

    web_ms: float
    worker_ms: float
    scheduler_ms: float
    redis_ms: float
    redis_main_ms: float
    round_trips: float
    commands: float
    scripts: float

    @classmethod
    def of(cls, used: Counters, units: int) -> PerUnit:
        n = max(1, units)
        return cls(
            web_ms=used.web * 1000 / n,
            worker_ms=used.worker * 1000 / n,
            scheduler_ms=used.scheduler * 1000 / n,
            redis_ms=used.redis_cpu * 1000 / n,
            redis_main_ms=used.redis_main * 1000 / n,
            round_trips=used.reads / n,
            commands=used.commands / n,
            scripts=used.scripts / n,
        )


@dataclass
class Result:
    targets: int
    intake_accepted: int
    intake: PerUnit  # per event, receiver and Redis only
    pipeline_accepted: int
    deliveries: int
    missing: int
    duplicates: int
    refused: int  # events not answered 2xx, both phases
    pipeline: PerUnit  # per event, everything
    worker_side: PerUnit  # per event: pipeline less intake (fan-out and deliveries)
    foreign_cores: dict[str, float]
    intake_commands: dict[str, float]  # calls per accepted event, by command
    pipeline_commands: dict[str, float]

    @property
    def ceiling(self) -> float:
        """Events/s at which the Redis main thread would be busy all the time."""
        return 1000 / self.pipeline.redis_main_ms if self.pipeline.redis_main_ms > 0 else 0.0


def one_count(
    run: Run, sink: SinkClient, targets: int, args: argparse.Namespace, redis_pids: list[int]
) -> Result:
    client = redis.Redis.from_url(run.redis.url)
    client.flushall()
    sink.reset()
    names = [f"t{i + 1}" for i in range(targets)]
    config = write_config(
        run.tmp / f"relay-{targets}.yaml",
        [
            {"id": t, "kind": "webhook", "url": f"http://127.0.0.1:{sink.port}/{t}",
             "allow_private": True, "secret": SECRET}
            for t in names
        ],
    )  # fmt: skip
    port = new_port()
    env = base_env(run.redis.url, config, port, **dict(args.env))
    stack = Stack(run.procs, env, port, args.concurrency)
    meter = Meter(client, run.procs, redis_pids)
    foreign: dict[str, float] = {}
    try:
        stack.start_web()
        send(port, args.warmup, args.rate)  # connections, script loads, imports
        time.sleep(1)
        client.flushall()

        with meter.window() as idle:
            time.sleep(args.idle)
        with meter.window() as intake:
            accepted = send(port, args.events, args.rate)
            time.sleep(0.5)  # the last answers' access-log lines
        refused = args.events - len(accepted)
        check_answers(run.procs, "intake", accepted, refused)
        foreign.update(idle_intake=idle.foreign_cores, intake=intake.foreign_cores)
        intake_used = intake.less(idle)
        print(f"{targets} target(s), intake: {len(accepted)} accepted", flush=True)

        client.flushall()  # the queued fan-outs go: the pipeline phase starts empty
        sink.reset()
        stack.start_worker()
        warm = send(port, args.warmup, args.rate)
        settle(meter, sink, len(warm) * targets, 60)
        time.sleep(2)
        sink.reset()

        with meter.window() as idle:
            time.sleep(args.idle)
        with meter.window() as pipeline:
            ids = send(port, args.events, args.rate)
            settle(meter, sink, len(ids) * targets, args.drain_timeout)
        refused += args.events - len(ids)
        check_answers(run.procs, "pipeline", ids, args.events - len(ids))
        foreign.update(idle_pipeline=idle.foreign_cores, pipeline=pipeline.foreign_cores)
        pipeline_used = pipeline.less(idle)
    finally:
        stack.stop()
        client.close()

    wanted = set(ids)
    seen: set[tuple[str | None, str]] = set()
    duplicates = 0
    for event_id, target, _ in sink.records():
        if event_id not in wanted:
            continue
        if (event_id, target) in seen:
            duplicates += 1
        seen.add((event_id, target))
    worker_side = pipeline_used.scaled(1 / max(1, len(ids))) - intake_used.scaled(
        1 / max(1, len(accepted))
    )
    worker_side.web = worker_side.scheduler = 0.0  # those are read from the pipeline row
    result = Result(
        targets=targets,
        intake_accepted=len(accepted),
        intake=PerUnit.of(intake_used, len(accepted)),
        pipeline_accepted=len(ids),
        deliveries=len(seen),
        missing=len(ids) * targets - len(seen),
        duplicates=duplicates,
        refused=refused,
        pipeline=PerUnit.of(pipeline_used, len(ids)),
        worker_side=PerUnit.of(worker_side, 1),
        foreign_cores=foreign,
        intake_commands=per_event(intake_used.by_command, len(accepted)),
        pipeline_commands=per_event(pipeline_used.by_command, len(ids)),
    )
    print(
        f"{targets} target(s), pipeline: {len(ids)} accepted, {len(seen)} delivered, "
        f"missing {result.missing}, duplicates {duplicates}",
        flush=True,
    )
    return result


def per_event(calls: dict[str, float], events: int) -> dict[str, float]:
    """Calls per event by command, the most first; those under 0.05 per event left out."""
    rates = {name: n / max(1, events) for name, n in calls.items()}
    return dict(sorted(((n, r) for n, r in rates.items() if r >= 0.05), key=lambda x: -x[1]))


# --- the model ------------------------------------------------------------------------


def split(low: Result, high: Result) -> tuple[PerUnit, PerUnit]:
    """(per event, per delivery) of the worker side: a straight line through two counts
    of targets. The per-event part is the fan-out; the per-delivery part is a delivery's
    claim, gate, POST and finish."""
    k = high.targets - low.targets
    a, b = asdict(low.worker_side), asdict(high.worker_side)
    per_delivery = {name: (b[name] - a[name]) / k for name in a}
    per_event = {name: a[name] - low.targets * per_delivery[name] for name in a}
    return PerUnit(**per_event), PerUnit(**per_delivery)


def median_result(results: list[Result]) -> Result:
    """The median of every figure over rounds of the same count of targets."""

    def med(units: list[PerUnit]) -> PerUnit:
        rows = [asdict(u) for u in units]
        return PerUnit(**{k: statistics.median(r[k] for r in rows) for k in rows[0]})

    first = results[0]
    return Result(
        targets=first.targets,
        intake_accepted=sum(r.intake_accepted for r in results),
        intake=med([r.intake for r in results]),
        pipeline_accepted=sum(r.pipeline_accepted for r in results),
        deliveries=sum(r.deliveries for r in results),
        missing=sum(r.missing for r in results),
        duplicates=sum(r.duplicates for r in results),
        refused=sum(r.refused for r in results),
        pipeline=med([r.pipeline for r in results]),
        worker_side=med([r.worker_side for r in results]),
        foreign_cores={k: max(r.foreign_cores[k] for r in results) for k in first.foreign_cores},
        intake_commands=med_calls([r.intake_commands for r in results]),
        pipeline_commands=med_calls([r.pipeline_commands for r in results]),
    )


def med_calls(rounds: list[dict[str, float]]) -> dict[str, float]:
    names = {name for calls in rounds for name in calls}
    medians = {n: statistics.median(calls.get(n, 0.0) for calls in rounds) for n in names}
    return dict(sorted(medians.items(), key=lambda x: -x[1]))


COSTS = Table(
    "targets:>7, part:<22, web ms:>7.3f, worker ms:>9.3f, sched ms:>8.3f, redis ms:>8.3f, "
    "main ms:>7.3f, round trips:>11.2f, commands:>8.2f, scripts:>7.2f"
)
CEILING = Table(
    "targets:>7, events/s:>8.0f, deliveries/s:>12.0f, redis cores:>11.2f, web cores:>9.2f, "
    "worker cores:>12.2f, sched cores:>11.3f"
)


def cost_row(targets: object, part: str, u: PerUnit) -> str:
    return COSTS.row(
        targets, part, u.web_ms, u.worker_ms, u.scheduler_ms, u.redis_ms, u.redis_main_ms,
        u.round_trips, u.commands, u.scripts,
    )  # fmt: skip


def report(results: list[Result], args: argparse.Namespace, redis_desc: str, web: str) -> None:
    print(
        f"\n{redis_desc}; web: gunicorn {web}; worker: -P gevent -c {args.concurrency}; "
        f"{args.events} events at {args.rate:g}/s per phase, {args.idle:g} s idle "
        "baseline subtracted. CPU in ms; 'main' = Redis's command thread."
    )
    print(COSTS.header())
    for r in results:
        print(cost_row(r.targets, "intake, per event", r.intake))
        print(cost_row(r.targets, "pipeline, per event", r.pipeline))
        print(
            cost_row(
                r.targets, "pipeline, per delivery", PerUnit.of(_counters(r.pipeline), r.targets)
            )
        )
        print(cost_row(r.targets, "workers, per event", r.worker_side))
    if len(results) >= 2:
        fan_out, delivery = split(results[0], results[-1])
        print(cost_row("fit", "fan-out, per event", fan_out))
        print(cost_row("fit", "each delivery", delivery))
    print("\ncommands per event (those inside scripts included), the most first:")
    for r in results:
        for part, calls in (("intake", r.intake_commands), ("pipeline", r.pipeline_commands)):
            listed = ", ".join(f"{name} {n:.2f}" for name, n in calls.items())
            print(f"{r.targets:>7} {part:<9} {listed}")
    print("\nprojected ceiling: one Redis main thread at 100 % (plan for well below it)")
    print(CEILING.header())
    for r in results:
        rate = r.ceiling
        u = r.pipeline
        print(CEILING.row(
            r.targets, rate, rate * r.targets, rate * u.redis_ms / 1000, rate * u.web_ms / 1000,
            rate * u.worker_ms / 1000, rate * u.scheduler_ms / 1000,
        ))  # fmt: skip
    for r in results:
        if r.missing or r.duplicates or r.refused:
            print(
                f"{r.targets} target(s): {r.missing} deliveries missing, {r.duplicates} "
                f"duplicated, {r.refused} events refused"
            )
    others = {f"{r.targets}:{k}": round(v, 2) for r in results for k, v in r.foreign_cores.items()}
    print(f"other CPU (cores used by processes this benchmark did not start): {others}")


def _counters(u: PerUnit) -> Counters:
    """A ``PerUnit`` back as counters, to divide it again (per event → per delivery)."""
    return Counters(
        redis_cpu=u.redis_ms / 1000, redis_main=u.redis_main_ms / 1000, reads=u.round_trips,
        commands=u.commands, scripts=u.scripts, web=u.web_ms / 1000, worker=u.worker_ms / 1000,
        scheduler=u.scheduler_ms / 1000,
    )  # fmt: skip


def attach_replica(run: Run) -> EmbeddedRedis:
    """A second private redis-server replicating the run's one; returns once in sync."""
    replica = EmbeddedRedis(run.tmp / "replica", appendonly=True).start()
    client = redis.Redis.from_url(replica.url)
    client.replicaof("127.0.0.1", run.redis.port)
    deadline = time.monotonic() + 30
    while client.info("replication").get("master_link_status") != "up":
        if time.monotonic() > deadline:
            replica.stop()
            raise RuntimeError("the replica did not sync within 30 s")
        time.sleep(0.1)
    client.close()
    return replica


def parse_env(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"--env wants NAME=VALUE, got {redact(text)!r}")
    return name, value


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument(
        "--targets",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[1, 3],
        help="targets per event, one pass each (default 1,3)",
    )
    parser.add_argument("--rate", type=float, default=50.0, help="events/s offered (50)")
    parser.add_argument("--events", type=int, default=1000, help="events per phase (1000)")
    parser.add_argument("--idle", type=float, default=10.0, help="idle baseline seconds (10)")
    parser.add_argument("--warmup", type=int, default=50, help="warm-up events per phase (50)")
    parser.add_argument("--rounds", type=int, default=1, help="passes over --targets (1)")
    parser.add_argument("--concurrency", type=int, default=64, help="worker -c (64)")
    parser.add_argument("--drain-timeout", type=float, default=120.0)
    parser.add_argument(
        "--replica", action="store_true", help="attach a replica to the private Redis"
    )
    parser.add_argument(
        "--env",
        type=parse_env,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for the relay's processes (repeatable)",
    )
    add_output_args(parser)
    args = parser.parse_args()
    if args.rounds < 1 or not args.targets or min(args.targets) < 1:
        parser.error("--rounds and every --targets count must be at least 1")

    rounds: dict[int, list[Result]] = {k: [] for k in args.targets}
    with bench_run("scale", args.keep, stop_on_signals=True) as run:
        replica = attach_replica(run) if args.replica else None
        pids = [run.redis_pid] + ([replica.process.pid] if replica and replica.process else [])
        try:
            info = redis.Redis.from_url(run.redis.url).info("server")
            redis_desc = f"redis {info['redis_version']}, AOF everysec" + (
                ", one replica attached" if replica else ""
            )
            sink = start_sink(run.procs, base_env(run.redis.url, run.tmp, 0))
            web = gunicorn_command("relay.wsgi:app", 0)[1]
            for n in range(args.rounds):
                order = args.targets if n % 2 == 0 else list(reversed(args.targets))
                for k in order:
                    rounds[k].append(one_count(run, sink, k, args, pids))
        finally:
            if replica is not None:
                replica.stop()
    results = [median_result(rounds[k]) for k in sorted(rounds)]
    report(results, args, redis_desc, web)
    out: dict[str, Any] = {
        "redis": redis_desc,
        "rate": args.rate,
        "events": args.events,
        "results": [{**asdict(r), "ceiling_events_per_s": r.ceiling} for r in results],
        "rounds": {str(k): [asdict(r) for r in v] for k, v in rounds.items()},
    }
    if len(results) >= 2:
        fan_out, delivery = split(results[0], results[-1])
        out["fit"] = {"fan_out_per_event": asdict(fan_out), "per_delivery": asdict(delivery)}
    write_json(args.json, out)
    return 0 if not any(r.missing or r.duplicates or r.refused for r in results) else 1


if __name__ == "__main__":
    exit_quietly_on_interrupt(main)
