"""The machine's floor for a delivery: what its HTTP request and its Celery message cost.

Every relay delivery is at least one outbound POST and a share of two Celery messages
(the event's fan-out and its queue's ``deliver``). Measured here without the rest:

(http) ``--processes`` processes of ``--greenlets`` gevent greenlets each POST a 600-byte
    JSON body to the benchmark sink (``bench/sink.py``) answering after ``--delay-ms``
    (100), for ``--duration`` seconds, with two clients alternated over ``--rounds``:
    ``relay`` (``workers.net.http.send`` through ``guarded_pool``, what every delivery uses)
    and ``requests`` (a plain pooled ``requests.Session``, what the bare Celery baseline
    uses). Printed: requests/s, CPU per request of the senders and of the sink.
(celery) ``--messages`` messages of a task that does nothing (``bench/floor_app.py``:
    the relay's Celery settings and broker transport) are queued, then ``--processes``
    workers ``-P gevent -c --greenlets`` drain them. Printed: messages/s and worker and
    Redis CPU per message, counted from the first message taken (start-up excluded).

    python bench/floor.py                          # both parts
    python bench/floor.py --parts http --duration 20
    python bench/floor.py --parts celery --messages 40000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    PY,
    ROOT,
    ForeignLoad,
    Run,
    Table,
    add_output_args,
    bench_parser,
    bench_run,
    group_cpu_seconds,
    pid_cpu_seconds,
    start_sink,
    write_json,
)
from relay.state import keys  # noqa: E402

CLIENTS = ("relay", "requests")

# One sender process: argv = client, port, greenlets, seconds; prints {"n", "cpu"} as JSON.
SENDER = """
from gevent import monkey; monkey.patch_all()
import json, resource, sys, time
import gevent
client, port, greenlets, seconds = sys.argv[1:5]
url = f"http://127.0.0.1:{port}/t1"
body = json.dumps({"id": "evt_floor", "text": "x" * 560}).encode()
headers = {"content-type": "application/json", "webhook-id": "dlv_floor"}
if client == "relay":
    from workers.net.http import guarded_pool, send
    pools = guarded_pool(True)
    def post():
        send(pools, "POST", url, timeout=10, data=body, headers=headers)
else:
    import requests
    from requests.adapters import HTTPAdapter
    session = requests.Session()
    session.mount("http://", HTTPAdapter(pool_connections=8, pool_maxsize=256))
    def post():
        session.post(url, data=body, headers=headers, timeout=10).content
post()  # connect and import before the clock starts
start_cpu = sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
count = [0]
stop = time.monotonic() + float(seconds)
def loop():
    while time.monotonic() < stop:
        post()
        count[0] += 1
gevent.joinall([gevent.spawn(loop) for _ in range(int(greenlets))])
cpu = sum(resource.getrusage(resource.RUSAGE_SELF)[:2]) - start_cpu
print(json.dumps({"n": count[0], "cpu": cpu}))
"""


def phase(client: str, port: int, sink_pid: int, args: argparse.Namespace) -> dict[str, Any]:
    """One client's run: every sender at once, CPU counted from after its warm-up."""
    sink_before = pid_cpu_seconds(sink_pid)
    command = [PY, "-c", SENDER, client, str(port), str(args.greenlets), str(args.duration)]
    began = time.monotonic()
    senders = [
        subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        for _ in range(args.processes)
    ]
    results = [json.loads(sender.communicate()[0]) for sender in senders]
    span = time.monotonic() - began
    sink_cpu = pid_cpu_seconds(sink_pid) - sink_before
    count = sum(r["n"] for r in results)
    return {
        "client": client,
        "requests_per_s": count / args.duration,
        "sender_ms_per_request": 1000 * sum(r["cpu"] for r in results) / max(count, 1),
        "sink_ms_per_request": 1000 * sink_cpu / max(count, 1),
        "span_s": span,
    }


def http_part(run: Run, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Both clients against one sink, alternating first place round by round."""
    table = Table(
        "client:8, req/s:>8.0f, sender ms/req:>13.2f, sink ms/req:>11.2f, other CPU:>9.2f"
    )
    sink = start_sink(run.procs, {**os.environ, "PYTHONPATH": str(ROOT)})
    sink.delay(args.delay_ms)
    sink_pid = run.procs.pid("sink")
    results: list[dict[str, Any]] = []
    print(table.header())
    for round_index in range(args.rounds):
        for client in CLIENTS if round_index % 2 == 0 else CLIENTS[::-1]:
            with ForeignLoad(run.procs) as foreign:
                result = phase(client, sink.port, sink_pid, args)
            result["other_cpu"] = foreign.cores
            results.append(result)
            print(table.row(*(result[k] for k in (
                "client", "requests_per_s", "sender_ms_per_request",
                "sink_ms_per_request", "other_cpu",
            ))))  # fmt: skip
            sink.reset()
    for client in CLIENTS:
        rates = [r["requests_per_s"] for r in results if r["client"] == client]
        cpu = [r["sender_ms_per_request"] for r in results if r["client"] == client]
        print(f"{client}: {min(rates):.0f}-{max(rates):.0f} req/s, "
              f"{min(cpu):.2f}-{max(cpu):.2f} ms of sender CPU per request")  # fmt: skip
    return results


def celery_part(run: Run, args: argparse.Namespace) -> dict[str, Any]:
    """Queue no-op messages, then time their drain by ``--processes`` workers."""
    os.environ["RELAY_REDIS_URL"] = run.redis.url
    env = {**os.environ, "RELAY_LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT)}
    from bench.floor_app import app  # reads RELAY_REDIS_URL when imported

    with app.producer_or_acquire() as producer:
        for _ in range(args.messages):
            app.send_task("bench.noop", args=("dlv_a", "dlv_b", "dlv_c"), producer=producer)
    client = redis.Redis.from_url(run.redis.url)
    names = [f"floor-worker{i}" for i in range(args.processes)]
    for name in names:
        run.procs.start(name, [
            PY, "-m", "celery", "-A", "bench.floor_app", "worker", "-P", "gevent",
            "-c", str(args.greenlets), "--without-gossip", "--without-mingle",
            "--loglevel", "WARNING", "--hostname", f"{name}@%h",
        ], env)  # fmt: skip

    def cpu() -> float:
        return sum(group_cpu_seconds(run.procs.pid(name)) for name in names)

    deadline = time.monotonic() + 120
    while client.llen(keys.FANOUT_QUEUE) >= args.messages and time.monotonic() < deadline:
        time.sleep(0.01)
    began, queued, cpu0 = time.monotonic(), client.llen(keys.FANOUT_QUEUE), cpu()
    redis0 = pid_cpu_seconds(run.redis_pid)
    with ForeignLoad(run.procs) as foreign:
        while (client.llen(keys.FANOUT_QUEUE) or client.hlen("unacked")) and (
            time.monotonic() < deadline + 600
        ):
            time.sleep(0.05)
    span = time.monotonic() - began
    result = {
        "messages": queued,
        "messages_per_s": queued / span,
        "worker_ms_per_message": 1000 * (cpu() - cpu0) / queued,
        "redis_ms_per_message": 1000 * (pid_cpu_seconds(run.redis_pid) - redis0) / queued,
        "other_cpu": foreign.cores,
    }
    table = Table("messages:>8d, msgs/s:>8.0f, worker ms/msg:>13.2f, redis ms/msg:>12.3f, "
                  "other CPU:>9.2f")  # fmt: skip
    print(table.header())
    print(table.row(*result.values()))
    return result


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--parts", default="http,celery", help="http, celery or both")
    parser.add_argument("--processes", type=int, default=2, help="sender / worker processes")
    parser.add_argument("--greenlets", type=int, default=100, help="greenlets per process")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per http phase")
    parser.add_argument("--delay-ms", type=float, default=100.0, help="sink reply delay")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the http part")
    parser.add_argument("--messages", type=int, default=20000, help="celery part")
    add_output_args(parser)
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    results: dict[str, Any] = {}
    with bench_run("floor", args.keep) as run:
        if "http" in parts:
            results["http"] = http_part(run, args)
        if "celery" in parts:
            results["celery"] = celery_part(run, args)
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
