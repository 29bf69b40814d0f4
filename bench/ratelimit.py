"""Outbound rate limits: what the limiter costs, and that a binding limit holds.

(a) overhead: one ``webhook`` target on the sink, configured twice — ``rate_limit: off``
    and a limit far above the offered load (``--high-limit``, default 1000000/min) —
    alternating over ``--rounds``. Each phase queues ``--events`` events straight into
    Redis (``relay.state.outbox.Outbox.accept_event``: the intake script, a fan-out message per
    event), then starts the worker(s) as the Procfile runs them (``celery -A
    workers.celery_app worker -P gevent ...``) and ``relay scheduler``, and measures
    deliveries/s from the first to the last arrival at the sink. Printed per round: both
    rates and limiter/no-limiter; then the median ratio (target ≥ 0.9).
(b) binding: ``--binding-limit`` (default 50/5s), ``--binding-events`` (200) queued the
    same way, ``--binding-workers`` (2) worker processes sharing the limit. From the
    sink's arrival times: the most deliveries in any window of ``per`` seconds (must be
    ≤ limit), the sustained rate vs the limit, and from Redis that every delivery is
    ``delivered`` after exactly 1 attempt (waits for a rate slot spend none) and the
    dead-letter set is empty.

Exit status 1 if (b) fails a check (window bound, missing or extra deliveries, attempts,
dead letters) or (a) loses deliveries; the (a) ratio target is reported, not enforced.

    python bench/ratelimit.py                              # (a) 3 rounds × 3000, then (b)
    python bench/ratelimit.py --parts overhead --events 5000 --rounds 5 --workers 2
    python bench/ratelimit.py --parts binding --binding-limit 20/2s --binding-events 100
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis

from bench.common import (
    PY,
    ForeignLoad,
    Procs,
    Table,
    add_output_args,
    base_env,
    bench_parser,
    bench_run,
    exit_quietly_on_interrupt,
    group_cpu_seconds,
    pid_cpu_seconds,
    start_sink,
    steady_rate,
    write_config,
    write_json,
)
from bench.sink import SinkClient
from relay.cli.up import worker_command
from relay.config.rates import Rate
from relay.events import GroupEvent, Party, new_event_id
from relay.settings import Settings
from relay.state import keys
from relay.state.outbox import Outbox

TARGET = "sink"
ROUNDS = Table(
    "round:>5, off dlv/s:>9.0f, lim dlv/s:>9.0f, lim/off:>7.2f, off steady:>10.0f, "
    "lim steady:>10.0f, wrk ms/dlv off/lim:>18, redis ms/dlv off/lim:>20, missing:>7, dup:>4, "
    "other CPU:>9.2f"
)


@dataclass
class Bench:
    """What every phase shares: the private Redis, the sink, the owned processes."""

    tmp: Path
    procs: Procs
    redis_url: str
    redis_pid: int
    client: redis.Redis
    sink: SinkClient
    args: argparse.Namespace
    workers: list[str] = field(default_factory=list)

    def configure(self, name: str, rate_limit: str) -> dict[str, str]:
        """Write a config with one webhook target on the sink; the workers' environment."""
        target: dict[str, Any] = {
            "id": TARGET,
            "kind": "webhook",
            "url": f"http://127.0.0.1:{self.sink.port}/{TARGET}",
            "allow_private": True,
            "rate_limit": rate_limit,
        }
        config = write_config(self.tmp / f"{name}.yaml", [target])
        return base_env(self.redis_url, config, 0, RELAY_LOG_LEVEL=self.args.relay_loglevel)

    def preload(self, count: int) -> list[str]:
        """``count`` events accepted the way intake does (one script each), not yet fanned out."""
        settings = Settings(redis_url=self.redis_url)
        queue = Outbox(self.client, lease=settings.visibility_timeout, retention=settings.retention)
        ids = []
        for i in range(count):
            event = GroupEvent(
                id=new_event_id(),
                source="ops",
                type="message.created",
                group=Party(id="ops-room", name="Ops"),
                sender=Party(id="u-42", name="Ada"),
                text=f"Deploy {i} finished: relay is live",
            )
            queue.accept_event("ops", event.id, event.to_json(), dedupe_key=None, dedupe_ttl=60)
            ids.append(event.id)
        return ids

    def start(self, env: dict[str, str], processes: int, concurrency: int) -> None:
        """The Procfile's ``worker`` (``processes`` times) and ``scheduler``."""
        env = {**env, "RELAY_WORKER_CONCURRENCY": str(concurrency)}
        for i in range(processes):
            name = f"worker{i}"
            hostname = f"bench-{name}-{time.time_ns()}@%h"
            self.procs.start(name, worker_command(concurrency, "--hostname", hostname), env)
            self.workers.append(name)
        self.procs.start("scheduler", [PY, "-m", "relay.cli", "scheduler"], env)
        self.workers.append("scheduler")

    def worker_cpu(self) -> float:
        return sum(
            group_cpu_seconds(self.procs.pid(n)) for n in self.workers if n.startswith("worker")
        )

    def check_alive(self) -> None:
        for name in self.workers:
            if not self.procs.alive(name):
                raise RuntimeError(f"{name} exited:\n{self.procs.log_tail(name)}")

    def stop(self) -> None:
        for name in self.workers:
            self.procs.stop(name)
        self.workers.clear()

    def wait_first(self, timeout: float) -> None:
        """Until the first delivery arrives (the workers have started)."""
        deadline = time.monotonic() + timeout
        while self.sink.total() == 0:
            self.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"no delivery within {timeout:g}s of starting the workers")
            time.sleep(0.05)

    def wait_all(self, expected: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.sink.total() < expected and time.monotonic() < deadline:
            self.check_alive()
            time.sleep(0.1)
        time.sleep(0.5)  # late duplicates


# --- (a) overhead -----------------------------------------------------------------------------


@dataclass
class Throughput:
    config: str
    round: int
    expected: int
    delivered: int
    missing: int
    duplicates: int
    startup_s: float
    span_s: float
    rate: float
    steady: float
    worker_cpu_ms: float
    redis_cpu_ms: float
    foreign_cores: float


def throughput_phase(bench: Bench, config: str, rate_limit: str, rnd: int) -> Throughput:
    args = bench.args
    bench.client.flushall()
    env = bench.configure(f"overhead-{config}", rate_limit)
    ids = set(bench.preload(args.events))
    bench.sink.reset()
    with ForeignLoad(bench.procs, [bench.redis_pid]) as foreign:
        started = time.time()
        bench.start(env, args.workers, args.concurrency)
        bench.wait_first(args.start_timeout)
        cpu0, rcpu0 = bench.worker_cpu(), pid_cpu_seconds(bench.redis_pid)
        bench.wait_all(len(ids), args.drain_timeout)
        cpu = bench.worker_cpu() - cpu0
        rcpu = pid_cpu_seconds(bench.redis_pid) - rcpu0
    bench.stop()
    records = bench.sink.records()
    seen = {event_id for event_id, _, _ in records if event_id in ids}
    times = sorted(arrived for _, _, arrived in records)
    span = times[-1] - times[0] if len(times) > 1 else math.nan
    n = max(1, len(records))
    return Throughput(
        config=config,
        round=rnd,
        expected=len(ids),
        delivered=len(seen),
        missing=len(ids) - len(seen),
        duplicates=len(records) - len(seen),
        startup_s=times[0] - started if times else math.nan,
        span_s=span,
        rate=(len(times) - 1) / span if span and span > 0 else math.nan,
        steady=steady_rate(times),
        worker_cpu_ms=cpu * 1000 / n,
        redis_cpu_ms=rcpu * 1000 / n,
        foreign_cores=foreign.cores,
    )


def run_overhead(bench: Bench) -> tuple[list[tuple[Throughput, Throughput]], bool]:
    args = bench.args
    configs = [("off", "off"), ("limited", args.high_limit)]
    pairs: list[tuple[Throughput, Throughput]] = []
    for rnd in range(1, args.rounds + 1):
        order = configs if rnd % 2 else configs[::-1]
        got: dict[str, Throughput] = {}
        for name, value in order:
            got[name] = result = throughput_phase(bench, name, value, rnd)
            print(
                f"  round {rnd} {name:7}: {result.rate:6.0f} deliveries/s "
                f"(steady {result.steady:.0f}/s), missing {result.missing}, "
                f"dup {result.duplicates}, other CPU {result.foreign_cores:.2f}",
                flush=True,
            )
        pairs.append((got["off"], got["limited"]))
    ok = all(r.missing == 0 for pair in pairs for r in pair)
    return pairs, ok


def print_overhead(pairs: list[tuple[Throughput, Throughput]], args: argparse.Namespace) -> None:
    print(
        f"\n(a) limiter overhead: {args.events} events → 1 webhook target, worker "
        f"{args.workers} x -P gevent -c {args.concurrency}; 'off' = rate_limit: off, "
        f"'limited' = rate_limit: {args.high_limit!r}; deliveries/s = first to last arrival"
    )
    print(ROUNDS.header())
    for off, lim in pairs:
        print(ROUNDS.row(
            off.round, off.rate, lim.rate, lim.rate / off.rate, off.steady, lim.steady,
            f"{off.worker_cpu_ms:.2f} / {lim.worker_cpu_ms:.2f}",
            f"{off.redis_cpu_ms:.3f} / {lim.redis_cpu_ms:.3f}",
            off.missing + lim.missing, off.duplicates + lim.duplicates,
            max(off.foreign_cores, lim.foreign_cores),
        ))  # fmt: skip
    ratios = [lim.rate / off.rate for off, lim in pairs]
    median = statistics.median(ratios)
    verdict = "met" if median >= args.target_ratio else "NOT met"
    print(
        f"median limited/off = {median:.2f} (rounds: {', '.join(f'{r:.2f}' for r in ratios)}); "
        f"target ≥ {args.target_ratio:g}: {verdict}"
    )


# --- (b) binding limit -----------------------------------------------------------------------


@dataclass
class Binding:
    limit: int
    per: float
    window: float
    expected: int
    delivered: int
    missing: int
    duplicates: int
    max_in_per: int
    max_in_window: int
    span_s: float
    sustained: float
    attempts: dict[str, int]
    not_delivered: dict[str, int]
    dead_letters: int
    per_second: list[int]
    foreign_cores: float

    @property
    def allowed(self) -> float:
        return self.limit / self.per

    @property
    def window_ok(self) -> bool:
        return self.max_in_per <= self.limit

    @property
    def ok(self) -> bool:
        return (
            self.window_ok
            and self.missing == 0
            and self.duplicates == 0
            and set(self.attempts) == {"1"}
            and not self.not_delivered
            and self.dead_letters == 0
        )


def max_in_window(times: list[float], width: float) -> int:
    """The most arrivals in any half-open window ``[t, t + width)`` (``times`` sorted)."""
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] >= width:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def delivery_records(client: redis.Redis, event_ids: list[str]) -> list[dict[str, str]]:
    """Status and attempts of every delivery of ``event_ids`` (``relay:delivery:<id>``)."""
    pipe = client.pipeline()
    for event_id in event_ids:
        pipe.smembers(keys.event_deliveries(event_id))
    delivery_ids = sorted(d.decode() for members in pipe.execute() for d in members)
    pipe = client.pipeline()
    for delivery_id in delivery_ids:
        pipe.hmget(keys.delivery(delivery_id), "status", "attempts")
    return [
        {"id": delivery_id, "status": (s or b"").decode(), "attempts": (a or b"").decode()}
        for delivery_id, (s, a) in zip(delivery_ids, pipe.execute(), strict=True)
    ]


def run_binding(bench: Bench) -> Binding:
    args = bench.args
    rate = Rate.model_validate(args.binding_limit)
    bench.client.flushall()
    env = bench.configure("binding", args.binding_limit)
    event_ids = bench.preload(args.binding_events)
    bench.sink.reset()
    # The limit allows one window's worth at once, then `limit` per enforced window.
    needed = math.ceil(args.binding_events / rate.limit) * rate.window
    with ForeignLoad(bench.procs, [bench.redis_pid]) as foreign:
        bench.start(env, args.binding_workers, args.concurrency)
        bench.wait_first(args.start_timeout)
        bench.wait_all(len(event_ids), needed * 2 + args.drain_timeout)
        time.sleep(min(rate.per, 5.0))  # anything sent beyond the count shows up too
    bench.stop()
    records = bench.sink.records()
    ids = set(event_ids)
    seen = {e for e, _, _ in records if e in ids}
    times = sorted(arrived for _, _, arrived in records)
    deliveries = delivery_records(bench.client, event_ids)
    attempts: dict[str, int] = {}
    not_delivered: dict[str, int] = {}
    for d in deliveries:
        attempts[d["attempts"]] = attempts.get(d["attempts"], 0) + 1
        if d["status"] != "delivered":
            not_delivered[d["status"]] = not_delivered.get(d["status"], 0) + 1
    span = times[-1] - times[0] if len(times) > 1 else math.nan
    per_second = [0] * (int(times[-1] - times[0]) + 1 if times else 0)
    for t in times:
        per_second[int(t - times[0])] += 1
    return Binding(
        limit=rate.limit,
        per=rate.per,
        window=rate.window,
        expected=len(ids),
        delivered=len(seen),
        missing=len(ids) - len(seen),
        duplicates=len(records) - len(seen),
        max_in_per=max_in_window(times, rate.per),
        max_in_window=max_in_window(times, rate.window),
        span_s=span,
        # after the first window's burst, `limit` more per window: the rate it sustains
        sustained=(len(times) - rate.limit) / span if len(times) > rate.limit else math.nan,
        attempts=attempts,
        not_delivered=not_delivered,
        dead_letters=int(bench.client.zcard(keys.DLQ)),
        per_second=per_second,
        foreign_cores=foreign.cores,
    )


def print_binding(b: Binding, args: argparse.Namespace) -> None:
    print(
        f"\n(b) binding limit: rate_limit {args.binding_limit!r} (enforced window "
        f"{b.window:g} s), {b.expected} events, {args.binding_workers} worker processes "
        f"x -c {args.concurrency}, arrival times at the sink"
    )
    rows = [
        ("delivered / expected", f"{b.delivered} / {b.expected}"),
        ("missing, duplicate deliveries", f"{b.missing}, {b.duplicates}"),
        (
            f"max arrivals in any {b.per:g} s window",
            f"{b.max_in_per} (limit {b.limit}): {'ok' if b.window_ok else 'VIOLATED'}",
        ),
        (f"max arrivals in any {b.window:g} s window", str(b.max_in_window)),
        ("first → last arrival", f"{b.span_s:.2f} s"),
        (
            "sustained rate (after the first burst)",
            f"{b.sustained:.2f}/s vs limit {b.allowed:.2f}/s ({b.sustained / b.allowed:.2f}x)",
        ),
        ("attempts per delivery", ", ".join(f"{k}: {v}" for k, v in sorted(b.attempts.items()))),
        ("deliveries not 'delivered'", json.dumps(b.not_delivered) if b.not_delivered else "0"),
        ("dead letters (relay:dlq)", str(b.dead_letters)),
        ("other CPU (cores)", f"{b.foreign_cores:.2f}"),
    ]
    width = max(len(k) for k, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    print(f"  arrivals per second: {' '.join(str(c) for c in b.per_second)}")
    print(f"  verdict: {'PASS' if b.ok else 'FAIL'}")


# --- driver ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__)
    parser.add_argument(
        "--parts", default="overhead,binding", help="which parts, in order: overhead, binding"
    )
    parser.add_argument("--events", type=int, default=3000, help="(a) events per phase")
    parser.add_argument("--rounds", type=int, default=3, help="(a) rounds of (off, limited)")
    parser.add_argument(
        "--high-limit", default="1000000/min", help="(a) the limit far above the load"
    )
    parser.add_argument("--workers", type=int, default=1, help="(a) worker processes")
    parser.add_argument(
        "--concurrency", type=int, default=64, help="gevent concurrency per worker (Procfile: 64)"
    )
    parser.add_argument("--target-ratio", type=float, default=0.9, help="(a) target, reported")
    parser.add_argument("--binding-limit", default="50/5s", help="(b) the rate_limit")
    parser.add_argument("--binding-events", type=int, default=200, help="(b) events")
    parser.add_argument("--binding-workers", type=int, default=2, help="(b) worker processes")
    parser.add_argument(
        "--start-timeout", type=float, default=60.0, help="seconds for the first delivery"
    )
    parser.add_argument(
        "--drain-timeout", type=float, default=120.0, help="seconds to wait for the rest"
    )
    parser.add_argument("--relay-loglevel", default="WARNING", help="RELAY_LOG_LEVEL")
    add_output_args(parser)
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(parts) - {"overhead", "binding"}
    if unknown:
        parser.error(f"unknown part(s): {', '.join(sorted(unknown))}")
    Rate.model_validate(args.binding_limit)  # a bad rate fails here, not after part (a)

    ok = True
    results: dict[str, Any] = {}
    with bench_run("ratelimit", args.keep, stop_on_signals=True) as run:
        url = run.redis.url
        sink = start_sink(run.procs, base_env(url, run.tmp, 0))
        client = redis.Redis.from_url(url)
        bench = Bench(run.tmp, run.procs, url, run.redis_pid, client, sink, args)
        for part in parts:
            if part == "overhead":
                print(f"(a) overhead: {args.rounds} round(s) of off / limited …", flush=True)
                pairs, fine = run_overhead(bench)
                print_overhead(pairs, args)
                results["overhead"] = [[vars(off), vars(lim)] for off, lim in pairs]
                ok &= fine
            else:
                print(f"(b) binding limit {args.binding_limit} …", flush=True)
                binding = run_binding(bench)
                print_binding(binding, args)
                results["binding"] = {**vars(binding), "ok": binding.ok}
                ok &= binding.ok
        write_json(args.json, results)
        return 0 if ok else 1


if __name__ == "__main__":
    exit_quietly_on_interrupt(main)
