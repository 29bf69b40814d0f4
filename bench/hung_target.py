"""One hung target beside two healthy ones: the healthy targets' latency must not suffer.

Two runs on the same machine, each a fresh stack (gunicorn ``relay.wsgi:app``, the
Procfile's worker ``celery -A workers.celery_app worker -P gevent -c 64`` serving every
queue, ``relay scheduler``, a private Redis) driven by signed POSTs at ``--rate`` events/s
for ``--duration`` s:

  without  the route sends each event to two webhook targets on ``bench/sink.py``,
           which answers at once;
  hung     the same two, plus a third on a second sink that accepts every request and
           never answers (``--hung-delay-ms``: about 17 minutes), with the target's defaults
           (``timeout``: RELAY_HTTP_TIMEOUT, ``max_in_flight``: 32) unless
           ``--hung-cap`` says otherwise (``off`` shows the relay without its bulkhead).

Per run: POST-to-arrival p50/p99/max of the healthy deliveries, missing and duplicate
ones, CPU per healthy delivery (web + worker + Redis, and the worker alone), the hung
sink's requests, the scheduler's CPU per healthy delivery, the hung target's waits by
reason from Redis (each a gate call in a worker that parked a delivery) and the looks
the scheduler held back without a task message (the target state's ``held``), and
'other CPU' (cores used by processes not ours: another tenant's load makes the figures
unreliable). Then the ratio of the two p99s (target: hung ≤ 2 × without). Exit status 1
if a healthy delivery is missing or the hung target's deliveries were dead-lettered.

    python bench/hung_target.py                       # 20 events/s for 60 s, each run
    python bench/hung_target.py --duration 30 --hung-cap off
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis

from bench.common import (
    PY,
    ForeignLoad,
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
    pct,
    pid_cpu_seconds,
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
from relay.cli.up import worker_command
from relay.state import keys
from relay.state.stats import Stats

HEALTHY = ("t1", "t2")
HUNG = "hung"
RUNS = Table(
    "run:8, sent:>5, healthy:>8, missing:>7, dup:>4, p50 ms:>7.1f, p99 ms:>8.1f, "
    "max ms:>8.1f, CPU ms/dlv:>10.2f, wrk ms/dlv:>10.2f, sch ms/dlv:>10.2f, hung reqs:>9, "
    "dead:>5, other CPU:>9.2f"
)


@dataclass
class Result:
    run: str
    sent: int
    accepted: int
    expected: int
    delivered: int
    missing: int
    duplicates: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    cpu_ms_per_delivery: float
    worker_cpu_ms_per_delivery: float
    scheduler_cpu_ms_per_delivery: float
    hung_requests: int
    hung_waits: dict[str, int] = field(default_factory=dict)
    hung_held: int = 0
    hung_breaker: dict[str, Any] = field(default_factory=dict)
    dead_letters: int = 0
    foreign_cores: float = 0.0


def targets(healthy: SinkClient, hung: SinkClient | None, cap: str | None) -> list[dict[str, Any]]:
    """The webhook targets of one run (``cap``: the hung target's ``max_in_flight``)."""
    out: list[dict[str, Any]] = [
        {"id": t, "kind": "webhook", "url": f"{healthy.base}/{t}", "allow_private": True}
        for t in HEALTHY
    ]
    if hung is not None:
        entry = {"id": HUNG, "kind": "webhook", "url": f"{hung.base}/{HUNG}", "allow_private": True}
        if cap is not None:
            entry["max_in_flight"] = cap if cap == "off" else int(cap)
        out.append(entry)
    return out


def one_run(run: Run, name: str, args: argparse.Namespace) -> Result:
    """A fresh stack for one run; stops it before returning."""
    procs, url = run.procs, run.redis.url
    client = redis.Redis.from_url(url)
    client.flushall()
    sink_env = base_env(url, run.tmp, 0)
    healthy = start_sink(procs, sink_env, f"{name}-sink")
    hung = None
    if name == "hung":
        hung = start_sink(procs, sink_env, f"{name}-hung-sink")
        hung.delay(args.hung_delay_ms)
    config = write_config(run.tmp / f"{name}.yaml", targets(healthy, hung, args.hung_cap))
    port = new_port()
    env = base_env(url, config, port, RELAY_LOG_LEVEL=args.relay_loglevel)
    env["RELAY_WORKER_CONCURRENCY"] = str(args.concurrency)
    command, _ = gunicorn_command("relay.wsgi:app", port)
    procs.start(f"{name}-web", command, env)
    procs.start(f"{name}-scheduler", [PY, "-m", "relay.cli", "scheduler"], env)
    hostname = f"bench-{name}-{time.time_ns()}@%h"
    procs.start(f"{name}-worker", worker_command(args.concurrency, "--hostname", hostname), env)
    wait_port(port, procs=procs, name=f"{name}-web")
    warm_up(port, healthy, args)
    healthy.reset()
    if hung is not None:
        hung.reset()

    ours = [f"{name}-web", f"{name}-worker"]
    cpu0 = sum(group_cpu_seconds(procs.pid(n)) for n in ours) + pid_cpu_seconds(run.redis_pid)
    wrk0 = group_cpu_seconds(procs.pid(f"{name}-worker"))
    sch0 = group_cpu_seconds(procs.pid(f"{name}-scheduler"))
    count = int(args.rate * args.duration)
    body = sample_body()
    stamp = int(time.time())
    raws = [
        raw_request("/hooks/ops", port, *signed_request(body, stamp=stamp)) for _ in range(count)
    ]
    with ForeignLoad(procs, [run.redis_pid]) as foreign:
        exchanges = asyncio.run(send_paced(port, raws, args.rate))
        accepted: dict[str, float] = {}
        for x in exchanges:
            if 200 <= x.status < 300:
                accepted[json.loads(x.body)["event_id"]] = x.sent_at
        expected = len(accepted) * len(HEALTHY)
        deadline = time.monotonic() + args.drain_timeout
        while healthy.total() < expected and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(0.5)
    cpu = sum(group_cpu_seconds(procs.pid(n)) for n in ours) + pid_cpu_seconds(run.redis_pid)
    wrk = group_cpu_seconds(procs.pid(f"{name}-worker")) - wrk0
    sch = group_cpu_seconds(procs.pid(f"{name}-scheduler")) - sch0
    cpu -= cpu0

    seen: set[tuple[str, str]] = set()
    latencies: list[float] = []
    duplicates = 0
    for event_id, target, arrived in healthy.records():
        if event_id not in accepted:
            continue
        if (event_id, target) in seen:
            duplicates += 1
            continue
        seen.add((event_id, target))
        latencies.append(arrived - accepted[event_id])
    stats = Stats(client).targets().get(HUNG, {})
    breaker = client.hgetall(keys.target_state(HUNG))
    result = Result(
        run=name,
        sent=len(exchanges),
        accepted=len(accepted),
        expected=expected,
        delivered=len(seen),
        missing=expected - len(seen),
        duplicates=duplicates,
        p50_ms=pct(latencies, 50) * 1000,
        p99_ms=pct(latencies, 99) * 1000,
        max_ms=max(latencies, default=float("nan")) * 1000,
        cpu_ms_per_delivery=cpu * 1000 / max(1, len(seen)),
        worker_cpu_ms_per_delivery=wrk * 1000 / max(1, len(seen)),
        scheduler_cpu_ms_per_delivery=sch * 1000 / max(1, len(seen)),
        hung_requests=hung.total() if hung is not None else 0,
        hung_waits=dict(stats.get("waits") or {}),
        hung_held=int(breaker.get(b"held") or 0),
        hung_breaker={k.decode(): v.decode() for k, v in breaker.items()},
        dead_letters=int(client.zcard(keys.DLQ)),
        foreign_cores=foreign.cores,
    )
    for proc in (*ours, f"{name}-scheduler", f"{name}-sink", f"{name}-hung-sink"):
        procs.stop(proc)
    client.close()
    return result


def warm_up(port: int, healthy: SinkClient, args: argparse.Namespace) -> None:
    """One event through, so the measured run does not include the worker's start."""
    raw = raw_request("/hooks/ops", port, *signed_request(sample_body()))
    asyncio.run(send_paced(port, [raw], 1.0))
    deadline = time.monotonic() + args.start_timeout
    while healthy.total() < len(HEALTHY):
        if time.monotonic() > deadline:
            raise RuntimeError(f"no delivery within {args.start_timeout:g}s of starting")
        time.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--rate", type=float, default=20.0, help="events/s (default 20)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per run")
    parser.add_argument("--concurrency", type=int, default=64, help="worker -c (Procfile: 64)")
    parser.add_argument(
        "--hung-cap", default=None, help="the hung target's max_in_flight (default: unset; off)"
    )
    parser.add_argument(
        "--hung-delay-ms", type=float, default=999_999, help="the hung sink's reply delay (ms)"
    )
    parser.add_argument("--runs", default="without,hung", help="which runs, in order")
    parser.add_argument("--start-timeout", type=float, default=60.0)
    parser.add_argument("--drain-timeout", type=float, default=60.0)
    parser.add_argument("--relay-loglevel", default="WARNING", help="RELAY_LOG_LEVEL")
    add_output_args(parser)
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.runs.split(",") if n.strip()]
    if set(names) - {"without", "hung"}:
        parser.error("--runs takes: without, hung")

    results: dict[str, Result] = {}
    with bench_run("hung-target", args.keep, stop_on_signals=True) as run:
        for name in names:
            print(f"run '{name}': {args.rate:g} events/s for {args.duration:g} s …", flush=True)
            results[name] = one_run(run, name, args)
    cap = args.hung_cap or "unset (default 32)"
    print(
        f"\n{args.rate:g} events/s for {args.duration:g} s per run, worker 1 x -P gevent "
        f"-c {args.concurrency} (all queues); healthy targets {', '.join(HEALTHY)} on a sink "
        f"answering at once; 'hung': plus target '{HUNG}' never answering, max_in_flight {cap}"
    )
    print(RUNS.header())
    for r in results.values():
        print(RUNS.row(
            r.run, r.sent, r.delivered, r.missing, r.duplicates, r.p50_ms, r.p99_ms, r.max_ms,
            r.cpu_ms_per_delivery, r.worker_cpu_ms_per_delivery,
            r.scheduler_cpu_ms_per_delivery, r.hung_requests,
            r.dead_letters, r.foreign_cores,
        ))  # fmt: skip
    if "hung" in results:
        hung = results["hung"]
        rechecks = sum(hung.hung_waits.values())
        print(
            f"hung target: re-checks in a worker {rechecks} {hung.hung_waits or ''}; "
            f"held by the scheduler {hung.hung_held}; state {hung.hung_breaker}"
        )
    ok = all(r.missing == 0 and r.dead_letters == 0 for r in results.values())
    if {"without", "hung"} <= set(results):
        ratio = results["hung"].p99_ms / results["without"].p99_ms
        verdict = "met" if ratio <= 2 else "NOT met"
        print(f"healthy p99 hung / without = {ratio:.2f}; target ≤ 2: {verdict}")
    write_json(args.json, {name: asdict(r) for name, r in results.items()})
    return 0 if ok else 1


if __name__ == "__main__":
    exit_quietly_on_interrupt(main)
