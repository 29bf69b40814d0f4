"""End to end: signed POST → receiver → Redis → fan-out → 3 webhook deliveries → sink.

The relay stack (gunicorn ``relay.wsgi:app``, ``celery -A workers.celery_app worker -P
gevent``, ``relay scheduler``) and a bare one (``bench.baseline_app``: Flask
``send_task`` → bare Celery fan-out → 3 bare ``requests`` POSTs, same gunicorn config and
worker pool settings) are driven the same way:

1. paced phases: events at fixed rates (``--rates``) for ``--duration`` s each against a
   sink that answers at once; POST time per event id vs arrival time per delivery gives
   POST-to-arrival latency; after draining, every (event, target) must have arrived;
2. backlog: with the worker stopped, enough events for ``--backlog`` deliveries are
   accepted; then the worker(s) start against a sink that answers after 100 ms, and
   deliveries/s is measured from the first to the last arrival.

A third stack, ``sealed``, is the relay with ``RELAY_ENCRYPTION_KEYS`` set (events,
attempts and dead letters sealed at rest), run through the same phases: the cost of
sealing, against the relay without it.

    python bench/e2e.py                                  # defaults: 50,100,200 ev/s × 20 s
    python bench/e2e.py --stacks relay,sealed --rates 50,100 --backlog 3000
    python bench/e2e.py --rates 200 --duration 10 --backlog-workers 2x100,1x200
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis

from bench.common import (
    PY,
    SECRET,
    Exchange,
    ForeignLoad,
    Procs,
    Table,
    add_output_args,
    base_env,
    bench_parser,
    bench_run,
    drain,
    group_cpu_seconds,
    gunicorn_command,
    new_port,
    pct,
    pid_cpu_seconds,
    raw_request,
    sample_body,
    signed_request,
    start_py_spy,
    start_sink,
    steady_rate,
    wait_port,
    write_config,
    write_json,
)
from bench.common import send_paced as send_exchanges
from bench.sink import SinkClient
from relay.state.sealing import new_key

TARGETS = ("t1", "t2", "t3")
PACED = Table(
    "stack:6, ev/s:>5g, sent:>6, err:>4, deliv/s:>8.1f, e2e p50:>8.1f, e2e p99:>8.1f, "
    "e2e max:>8.1f, POST p99:>8.1f, missing:>7, dup:>4, web ms/ev:>9.2f, wrk ms/dlv:>10.2f, "
    "redis ms/dlv:>12.3f, other CPU:>9.2f"
)
BACKLOG = Table(
    "stack:6, workers:>8, sink ms:>7g, deliveries:>10, missing:>7, dup:>4, span s:>7.1f, "
    "deliv/s:>8.0f, steady/s:>8.0f, wrk ms/dlv:>10.2f, other CPU:>9.2f"
)


# --- the paced sender -----------------------------------------------------------------


@dataclass
class Sent:
    sent_at: float
    status: int = 0
    event_id: str | None = None
    latency: float = 0.0
    error: str | None = None


def _sent(exchange: Exchange) -> Sent:
    sent = Sent(exchange.sent_at, exchange.status, latency=exchange.latency, error=exchange.error)
    if 200 <= exchange.status < 300:
        try:
            sent.event_id = json.loads(exchange.body).get("event_id")
        except ValueError as exc:
            sent.error = type(exc).__name__
    return sent


def send_paced(port: int, count: int, rate: float, max_connections: int = 64) -> list[Sent]:
    """``count`` freshly signed events at ``rate``/s; POST time and event id per request."""
    body = sample_body()
    stamp = int(time.time())
    raws = [
        raw_request("/hooks/ops", port, *signed_request(body, stamp=stamp)) for _ in range(count)
    ]
    return [_sent(x) for x in asyncio.run(send_exchanges(port, raws, rate, max_connections))]


# --- stacks ---------------------------------------------------------------------------


@dataclass
class Stack:
    """One pipeline (relay, sealed or bare): web, worker(s) and, for the relay, the
    scheduler."""

    name: str
    procs: Procs
    env: dict[str, str]
    web_port: int
    args: argparse.Namespace
    workers: list[str] = field(default_factory=list)

    @property
    def relay(self) -> bool:
        return self.name != "bare"

    def start_web(self) -> str:
        app = "relay.wsgi:app" if self.relay else "bench.baseline_app:app"
        command, desc = gunicorn_command(app, self.web_port)
        self.procs.start(f"{self.name}-web", command, self.env)
        if self.relay:
            self.procs.start(
                f"{self.name}-scheduler", [PY, "-m", "relay.cli", "scheduler"], self.env
            )
        wait_port(self.web_port, procs=self.procs, name=f"{self.name}-web")
        return desc

    def start_workers(self, processes: int, concurrency: int) -> None:
        app = "workers.celery_app" if self.relay else "bench.baseline_app:celery_app"
        for i in range(processes):
            name = f"{self.name}-worker{i}"
            command = [
                PY,
                "-m",
                "celery",
                "-A",
                app,
                "worker",
                "-P",
                "gevent",
                "-c",
                str(concurrency),
                "--without-gossip",
                "--without-mingle",
                "--loglevel",
                self.args.worker_loglevel,
                "--hostname",
                f"{name}-{time.time_ns()}@%h",
            ]
            if self.name == "bare":
                command += ["-Q", "bench.intake"]
            self.procs.start(name, command, {**self.env, "BENCH_POOL_SIZE": str(concurrency)})
            self.workers.append(name)

    def stop_workers(self) -> None:
        for name in self.workers:
            self.procs.stop(name)
        self.workers.clear()

    def worker_cpu(self) -> float:
        return sum(group_cpu_seconds(self.procs.pid(n)) for n in self.workers)

    def web_cpu(self) -> float:
        return group_cpu_seconds(self.procs.pid(f"{self.name}-web"))

    def stop(self) -> None:
        self.stop_workers()
        for suffix in ("web", "scheduler"):
            self.procs.stop(f"{self.name}-{suffix}")


# --- measurements ---------------------------------------------------------------------


@dataclass
class PacedResult:
    stack: str
    rate: float
    sent: int
    accepted: int
    errors: int
    post_p50_ms: float
    post_p99_ms: float
    expected: int
    delivered_unique: int
    duplicates: int
    missing: int
    e2e_p50_ms: float
    e2e_p99_ms: float
    e2e_max_ms: float
    deliveries_per_s: float
    drain_s: float
    web_cpu_ms_per_event: float
    worker_cpu_ms_per_delivery: float
    redis_cpu_ms_per_delivery: float
    foreign_cores: float
    error_kinds: dict[str, int] = field(default_factory=dict)


def profile(
    pid: int, label: str, args: argparse.Namespace, seconds: float | None = None
) -> subprocess.Popen[bytes]:
    """py-spy on ``pid`` and its children for one phase (``seconds``, else ``--duration``)."""
    return start_py_spy(pid, Path(args.profile) / f"e2e-{label}.txt", seconds or args.duration)


def paced_phase(
    stack: Stack, sink: SinkClient, rate: float, redis_pid: int, args: argparse.Namespace
) -> PacedResult:
    sink.reset()
    count = int(rate * args.duration)
    cpu_web, cpu_worker, cpu_redis = stack.web_cpu(), stack.worker_cpu(), pid_cpu_seconds(redis_pid)
    spies = []
    if args.profile and rate == max(args.rates):
        spies = [profile(stack.procs.pid(n), f"{n}-{rate:g}", args) for n in stack.workers]
        spies.append(
            profile(stack.procs.pid(f"{stack.name}-web"), f"{stack.name}-web-{rate:g}", args)
        )
    with ForeignLoad(stack.procs, [redis_pid]) as foreign:
        sent = send_paced(stack.web_port, count, rate, args.max_connections)
        for spy in spies:
            spy.wait(60)
        accepted = {s.event_id: s for s in sent if s.event_id}
        expected = len(accepted) * len(TARGETS)
        drain_s = drain(sink, expected, args.drain_timeout + expected / 100)
    cpu_web = stack.web_cpu() - cpu_web
    cpu_worker = stack.worker_cpu() - cpu_worker
    cpu_redis = pid_cpu_seconds(redis_pid) - cpu_redis
    records = sink.records()
    seen: set[tuple[str, str]] = set()
    latencies: list[float] = []
    duplicates = 0
    for event_id, target, arrived in records:
        if event_id not in accepted:
            continue
        key = (event_id, target)
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        latencies.append(arrived - accepted[event_id].sent_at)
    first_post = min(s.sent_at for s in sent)
    last_arrival = max((r[2] for r in records), default=first_post)
    posts = [s.latency for s in sent if s.event_id]
    n_deliv = max(1, len(seen))
    return PacedResult(
        stack=stack.name,
        rate=rate,
        sent=len(sent),
        accepted=len(accepted),
        errors=sum(1 for s in sent if not s.event_id),
        post_p50_ms=pct(posts, 50) * 1000,
        post_p99_ms=pct(posts, 99) * 1000,
        expected=expected,
        delivered_unique=len(seen),
        duplicates=duplicates,
        missing=expected - len(seen),
        e2e_p50_ms=pct(latencies, 50) * 1000,
        e2e_p99_ms=pct(latencies, 99) * 1000,
        e2e_max_ms=max(latencies, default=math.nan) * 1000,
        deliveries_per_s=len(seen) / max(1e-9, last_arrival - first_post),
        drain_s=drain_s,
        web_cpu_ms_per_event=cpu_web * 1000 / max(1, len(accepted)),
        worker_cpu_ms_per_delivery=cpu_worker * 1000 / n_deliv,
        redis_cpu_ms_per_delivery=cpu_redis * 1000 / n_deliv,
        foreign_cores=foreign.cores,
        error_kinds=_error_kinds(sent),
    )


def _error_kinds(sent: list[Sent]) -> dict[str, int]:
    kinds: dict[str, int] = {}
    for s in sent:
        if not s.event_id:
            kind = s.error or f"HTTP {s.status}"
            kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


@dataclass
class BacklogResult:
    stack: str
    processes: int
    concurrency: int
    delay_ms: float
    deliveries: int
    expected: int
    missing: int
    duplicates: int
    span_s: float
    deliveries_per_s: float
    steady_per_s: float
    worker_cpu_ms_per_delivery: float
    foreign_cores: float


def backlog_phase(
    stack: Stack, sink: SinkClient, processes: int, concurrency: int, args: argparse.Namespace
) -> BacklogResult:
    stack.stop_workers()
    sink.reset()
    sink.delay(args.backlog_delay_ms)
    events = math.ceil(args.backlog / len(TARGETS))
    sent = send_paced(
        stack.web_port, events, rate=args.backlog_post_rate, max_connections=args.max_connections
    )
    accepted = {s.event_id for s in sent if s.event_id}
    expected = len(accepted) * len(TARGETS)
    with ForeignLoad(stack.procs) as foreign:
        stack.start_workers(processes, concurrency)
        time.sleep(0.5)
        cpu0 = stack.worker_cpu()
        spies = []
        if args.profile:  # skip start-up: profile the drain once a tenth has arrived
            while sink.total() < expected // 10:
                time.sleep(0.1)
            spies = [
                profile(stack.procs.pid(n), f"{n}-backlog-{processes}x{concurrency}", args, 10)
                for n in stack.workers
            ]
        drain(sink, expected, args.drain_timeout + expected / 200)
        cpu = stack.worker_cpu() - cpu0
        for spy in spies:
            spy.wait(120)
    records = sink.records()
    seen = {(e, t) for e, t, _ in records if e in accepted}
    times = sorted(r[2] for r in records)
    span = (times[-1] - times[0]) if len(times) > 1 else math.nan
    stack.stop_workers()
    sink.delay(0)
    return BacklogResult(
        stack=stack.name,
        processes=processes,
        concurrency=concurrency,
        delay_ms=args.backlog_delay_ms,
        deliveries=len(records),
        expected=expected,
        missing=expected - len(seen),
        duplicates=len(records) - len(seen),
        span_s=span,
        deliveries_per_s=len(times) / span if span else math.nan,
        steady_per_s=steady_rate(times, otherwise=0.0),
        worker_cpu_ms_per_delivery=cpu * 1000 / max(1, len(records)),
        foreign_cores=foreign.cores,
    )


# --- driver ---------------------------------------------------------------------------


def parse_worker_configs(text: str) -> list[tuple[int, int]]:
    """``"1x200,2x100"`` → [(1, 200), (2, 100)] (processes × gevent concurrency)."""
    configs = []
    for part in text.split(","):
        procs, _, conc = part.strip().partition("x")
        configs.append((int(procs), int(conc)))
    return configs


def run_stack(
    name: str,
    tmp: Path,
    procs: Procs,
    redis_url: str,
    client: redis.Redis,
    redis_pid: int,
    sink: SinkClient,
    args: argparse.Namespace,
) -> tuple[list[PacedResult], list[BacklogResult], str]:
    client.flushall()
    urls = [f"http://127.0.0.1:{sink.port}/{t}" for t in TARGETS]
    config = write_config(
        tmp / "relay.yaml",
        [
            {"id": t, "kind": "webhook", "url": u, "allow_private": True, "secret": SECRET}
            for t, u in zip(TARGETS, urls, strict=True)
        ],
    )
    port = new_port()
    env = base_env(
        redis_url,
        config,
        port,
        BENCH_MODE="celery",
        BENCH_TARGET_URLS=",".join(urls),
        RELAY_LOG_LEVEL=args.relay_loglevel,
        RELAY_ENCRYPTION_KEYS=new_key() if name == "sealed" else "",  # "": whatever the env
    )
    stack = Stack(name, procs, env, port, args)
    paced: list[PacedResult] = []
    backlog: list[BacklogResult] = []
    try:
        desc = stack.start_web()
        stack.start_workers(args.workers, args.concurrency)
        # warm-up (and wait for the workers): a short burst, drained before measuring
        warm = send_paced(port, int(args.rates[0] * 2), args.rates[0])
        drain(sink, sum(1 for s in warm if s.event_id) * len(TARGETS), 30)
        for rate in args.rates:
            result = paced_phase(stack, sink, rate, redis_pid, args)
            paced.append(result)
            print(
                f"{name:5} {rate:5g} ev/s: {result.deliveries_per_s:7.1f} deliveries/s  "
                f"e2e p50 {result.e2e_p50_ms:6.1f} ms p99 {result.e2e_p99_ms:7.1f} ms  "
                f"missing {result.missing} dup {result.duplicates} errors {result.errors} "
                f"{result.error_kinds or ''}",
                flush=True,
            )
        for processes, concurrency in parse_worker_configs(args.backlog_workers):
            if args.backlog <= 0:
                break
            b = backlog_phase(stack, sink, processes, concurrency, args)
            backlog.append(b)
            print(
                f"{name:5} backlog {b.expected} @ {b.delay_ms:g} ms sink, {processes}x"
                f"{concurrency}: {b.deliveries_per_s:6.0f} deliveries/s (steady "
                f"{b.steady_per_s:.0f}/s), missing {b.missing}, dup {b.duplicates}",
                flush=True,
            )
        return paced, backlog, desc
    finally:
        stack.stop()


def print_tables(
    results: dict[str, tuple[list[PacedResult], list[BacklogResult]]],
    args: argparse.Namespace,
    desc: str,
) -> None:
    print(
        f"\ngunicorn: {desc}; worker: celery -P gevent -c {args.concurrency} x "
        f"{args.workers} process(es), loglevel {args.worker_loglevel}; "
        f"{len(TARGETS)} webhook targets; {args.duration:g} s per rate; 'other CPU' = "
        "cores used by processes this benchmark did not start (should be ~0)"
    )
    print(PACED.header())
    for paced, _ in results.values():
        for r in paced:
            print(PACED.row(
                r.stack, r.rate, r.sent, r.errors, r.deliveries_per_s, r.e2e_p50_ms,
                r.e2e_p99_ms, r.e2e_max_ms, r.post_p99_ms, r.missing, r.duplicates,
                r.web_cpu_ms_per_event, r.worker_cpu_ms_per_delivery,
                r.redis_cpu_ms_per_delivery, r.foreign_cores,
            ))  # fmt: skip
    if "relay" in results and "bare" in results:
        for rr, br in zip(results["relay"][0], results["bare"][0], strict=False):
            cpu = rr.worker_cpu_ms_per_delivery / br.worker_cpu_ms_per_delivery
            print(
                f"rate {rr.rate:g}: deliveries/s relay/bare = "
                f"{rr.deliveries_per_s / br.deliveries_per_s:.2f}; worker CPU per delivery "
                f"relay/bare = {cpu:.2f}; p99 relay {rr.e2e_p99_ms:.1f} ms vs bare "
                f"{br.e2e_p99_ms:.1f} ms"
            )
    if "relay" in results and "sealed" in results:
        for rr, sr in zip(results["relay"][0], results["sealed"][0], strict=False):
            print(
                f"rate {rr.rate:g}: sealed/relay deliveries/s = "
                f"{sr.deliveries_per_s / rr.deliveries_per_s:.2f}; CPU per event web "
                f"{sr.web_cpu_ms_per_event:.2f} vs {rr.web_cpu_ms_per_event:.2f} ms, per "
                f"delivery worker {sr.worker_cpu_ms_per_delivery:.2f} vs "
                f"{rr.worker_cpu_ms_per_delivery:.2f} ms; p99 sealed {sr.e2e_p99_ms:.1f} ms "
                f"vs {rr.e2e_p99_ms:.1f} ms"
            )
    print(f"\n{BACKLOG.header()}")
    for _, backlog in results.values():
        for b in backlog:
            print(BACKLOG.row(
                b.stack, f"{b.processes}x{b.concurrency}", b.delay_ms, b.deliveries, b.missing,
                b.duplicates, b.span_s, b.deliveries_per_s, b.steady_per_s,
                b.worker_cpu_ms_per_delivery, b.foreign_cores,
            ))  # fmt: skip
    if "relay" in results and "bare" in results:
        for rb, bb in zip(results["relay"][1], results["bare"][1], strict=False):
            print(
                f"backlog {rb.processes}x{rb.concurrency}: relay/bare = "
                f"{rb.deliveries_per_s / bb.deliveries_per_s:.2f}"
            )
    if "relay" in results and "sealed" in results:
        for rb, sb in zip(results["relay"][1], results["sealed"][1], strict=False):
            print(
                f"backlog {rb.processes}x{rb.concurrency}: sealed/relay = "
                f"{sb.deliveries_per_s / rb.deliveries_per_s:.2f}; worker CPU per delivery "
                f"{sb.worker_cpu_ms_per_delivery:.2f} vs {rb.worker_cpu_ms_per_delivery:.2f} ms"
            )


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__)
    parser.add_argument(
        "--rates",
        type=lambda s: [float(x) for x in s.split(",")],
        default=[50.0, 100.0, 200.0],
        help="events/s of the paced phases",
    )
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per rate")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=64,
        help="gevent concurrency of the worker in the paced phases",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="worker processes in the paced phases"
    )
    parser.add_argument(
        "--backlog",
        type=int,
        default=10000,
        help="deliveries queued for the backlog phase (0: skip)",
    )
    parser.add_argument("--backlog-delay-ms", type=float, default=100.0)
    parser.add_argument(
        "--backlog-workers",
        default="1x200,2x100",
        help="processes x concurrency configs for the backlog phase",
    )
    parser.add_argument(
        "--backlog-post-rate",
        type=float,
        default=1500.0,
        help="events/s offered while building the backlog",
    )
    parser.add_argument(
        "--stacks",
        default="relay,sealed,bare",
        help="which pipelines, in order (sealed: the relay with RELAY_ENCRYPTION_KEYS)",
    )
    parser.add_argument(
        "--max-connections", type=int, default=64, help="sender's keep-alive connections at most"
    )
    parser.add_argument("--drain-timeout", type=float, default=60.0)
    parser.add_argument(
        "--worker-loglevel",
        default="WARNING",
        help="celery --loglevel for both stacks (the Procfile uses INFO)",
    )
    parser.add_argument("--relay-loglevel", default="WARNING", help="RELAY_LOG_LEVEL")
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="py-spy record workers and web during the highest rate into DIR",
    )
    add_output_args(parser)
    args = parser.parse_args(argv)

    results: dict[str, tuple[list[PacedResult], list[BacklogResult]]] = {}
    desc = ""
    with bench_run("e2e", args.keep) as run:
        client = redis.Redis.from_url(run.redis.url)
        sink = start_sink(run.procs, base_env(run.redis.url, run.tmp, 0))
        for name in args.stacks.split(","):
            paced, backlog, desc = run_stack(
                name, run.tmp, run.procs, run.redis.url, client, run.redis_pid, sink, args
            )
            results[name] = (paced, backlog)
        print_tables(results, args, desc)
        write_json(
            args.json,
            {
                k: {"paced": [vars(r) for r in v[0]], "backlog": [vars(b) for b in v[1]]}
                for k, v in results.items()
            },
        )
        missing = sum(r.missing for v in results.values() for r in v[0]) + sum(
            b.missing for v in results.values() for b in v[1]
        )
        return 0 if missing == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
