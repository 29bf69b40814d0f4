"""Intake throughput: the real receiver vs a bare Flask HMAC + LPUSH app, same gunicorn.

Both apps run under the same gunicorn config on one private Redis (AOF everysec); wrk
(one load generator, same connections) cycles through pre-signed Standard Webhooks
requests with unique ``webhook-id``s and fresh timestamps. Each round warms up, then
measures each app; the order rotates between rounds and Redis is flushed before
every phase. Any non-2xx answer is counted as an error. A third app, ``sealed``, is the
receiver with ``RELAY_ENCRYPTION_KEYS`` set: what sealing events at rest costs intake
(``--no-sealed`` leaves it out).

    python bench/ingest.py                     # 2 rounds, 5 s warm-up, 15 s each
    python bench/ingest.py --duration 30 --connections 64 --profile /tmp/prof
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis

from bench.common import (
    ROOT,
    ForeignLoad,
    Procs,
    Table,
    add_output_args,
    base_env,
    bench_parser,
    bench_run,
    group_cpu_seconds,
    gunicorn_command,
    gunicorn_effective,
    new_port,
    pid_cpu_seconds,
    raw_request,
    sample_body,
    signed_request,
    start_py_spy,
    wait_port,
    write_config,
)
from relay.state.sealing import new_key

LUA = ROOT / "bench" / "wrk_cycle.lua"
PHASES = Table(
    "app:6, round:>5, req/s:>9.0f, p50 ms:>8.2f, p99 ms:>8.2f, 202:>8, 2xx!=202:>8, "
    "errors:>6, srv CPU ms/req:>15.3f, redis CPU ms/req:>17.3f, other CPU:>9.2f"
)


@dataclass
class Phase:
    app: str
    round: int
    result: dict[str, Any]
    server_cpu: float
    redis_cpu: float
    wrk_cpu: float
    foreign_cores: float

    @property
    def rate(self) -> float:
        return self.result["requests"] / (self.result["duration_us"] / 1e6)

    @property
    def errors(self) -> int:
        r = self.result
        return (
            r["s4xx"]
            + r["s5xx"]
            + r["s_other"]
            + r["connect"]
            + r["read"]
            + r["write"]
            + r["timeout"]
        )


@dataclass
class Target:
    name: str
    port: int
    pgid: int = 0
    phases: list[Phase] = field(default_factory=list)


def build_requests(prefix: Path, port: int, count: int, threads: int) -> None:
    """``count`` signed requests split over ``threads`` files (``<prefix>.<n>``)."""
    body = sample_body()
    stamp = int(time.time())
    per = max(1, count // threads)
    for t in range(threads):
        with open(f"{prefix}.{t}", "wb") as out:
            for _ in range(per):
                headers, payload = signed_request(body, stamp=stamp)
                out.write(raw_request("/hooks/ops", port, headers, payload) + b"\0")


def run_wrk(
    port: int, prefix: Path, seconds: float, args: argparse.Namespace
) -> tuple[dict[str, Any], float]:
    command = [
        "wrk",
        "-t",
        str(args.wrk_threads),
        "-c",
        str(args.connections),
        "-d",
        f"{seconds:g}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(LUA),
        f"http://127.0.0.1:{port}/hooks/ops",
        "--",
        str(prefix),
    ]
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        out, _ = proc.communicate(timeout=seconds + 120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # wrk's own CPU (children_*) once it has exited
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    wrk_cpu = usage.ru_utime + usage.ru_stime
    for line in out.splitlines():
        if line.startswith("WRK_RESULT "):
            return json.loads(line.removeprefix("WRK_RESULT ")), wrk_cpu
    raise RuntimeError(f"wrk printed no result:\n{out}")


def check_once(port: int) -> int:
    headers, body = signed_request(sample_body())
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/hooks/ops", data=body, headers=headers, method="POST"
    )
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - loopback only
        return int(resp.status)


def measure(
    target: Target,
    rnd: int,
    tmp: Path,
    client: redis.Redis,
    redis_pid: int,
    args: argparse.Namespace,
    procs: Procs,
) -> Phase:
    client.flushall()
    prefix = tmp / f"req-{target.name}-{rnd}"
    warm = tmp / f"warm-{target.name}-{rnd}"
    build_requests(
        warm, target.port, args.requests_per_second * int(args.warmup + 1), args.wrk_threads
    )
    build_requests(
        prefix, target.port, args.requests_per_second * int(args.duration + 1), args.wrk_threads
    )
    if args.warmup > 0:
        run_wrk(target.port, warm, args.warmup, args)
    client.flushall()
    time.sleep(0.5)
    profiler = None
    if args.profile and target.name == "relay":
        out = Path(args.profile) / f"ingest-relay-r{rnd}.{args.profile_format}"
        profiler = start_py_spy(target.pgid, out, args.duration, args.profile_format)
    cpu0 = group_cpu_seconds(target.pgid)
    rcpu0 = pid_cpu_seconds(redis_pid)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    wcpu0 = usage.ru_utime + usage.ru_stime
    with ForeignLoad(procs, [redis_pid]) as foreign:
        result, wcpu1 = run_wrk(target.port, prefix, args.duration, args)
    phase = Phase(
        target.name,
        rnd,
        result,
        group_cpu_seconds(target.pgid) - cpu0,
        pid_cpu_seconds(redis_pid) - rcpu0,
        wcpu1 - wcpu0,
        foreign.cores,
    )
    if profiler is not None:
        profiler.wait(timeout=args.duration + 60)
    for path in (prefix, warm):
        for t in range(args.wrk_threads):
            Path(f"{path}.{t}").unlink(missing_ok=True)
    target.phases.append(phase)
    return phase


def report(
    targets: dict[str, Target], config_desc: str, effective: str, args: argparse.Namespace
) -> int:
    print()
    print(f"gunicorn: {config_desc}  {effective}")
    print("'other CPU' = cores used by processes this benchmark did not start (should be ~0)")
    print(
        f"load: wrk -t{args.wrk_threads} -c{args.connections}, warm-up {args.warmup:g}s, "
        f"{args.duration:g}s measured per phase, {args.rounds} round(s), alternating order"
    )
    print(PHASES.header())
    for name in targets:
        for p in targets[name].phases:
            r = p.result
            n = max(1, r["requests"])
            print(PHASES.row(
                name, p.round, p.rate, r["p50_us"] / 1000, r["p99_us"] / 1000, r["s202"],
                r["s2xx_other"], p.errors, p.server_cpu * 1000 / n, p.redis_cpu * 1000 / n,
                p.foreign_cores,
            ))  # fmt: skip
            if r["wrapped"]:
                print(
                    f"  note: wrk cycled its {name} request file {r['wrapped']}x; "
                    "raise --requests-per-second (resends answer 200 duplicate)"
                )
    relay = [p.rate for p in targets["relay"].phases]
    bare = [p.rate for p in targets["bare"].phases]
    ratio = (sum(relay) / len(relay)) / (sum(bare) / len(bare))
    errors = sum(p.errors for t in targets.values() for p in t.phases)
    print(
        f"\nmean relay {sum(relay) / len(relay):.0f} req/s, bare {sum(bare) / len(bare):.0f} "
        f"req/s, ratio relay/bare = {ratio:.2f} (target >= 0.8); errors (non-2xx, socket) "
        f"= {errors}"
    )
    sealed = [p.rate for p in targets["sealed"].phases] if "sealed" in targets else []
    sealed_ratio = (sum(sealed) / len(sealed)) / (sum(relay) / len(relay)) if sealed else None
    if sealed_ratio is not None:
        cpu = {
            name: sum(p.server_cpu for p in targets[name].phases)
            * 1000
            / max(1, sum(p.result["requests"] for p in targets[name].phases))
            for name in ("relay", "sealed")
        }
        print(
            f"mean sealed {sum(sealed) / len(sealed):.0f} req/s, ratio sealed/relay = "
            f"{sealed_ratio:.2f}; server CPU per request sealed {cpu['sealed']:.3f} ms vs "
            f"relay {cpu['relay']:.3f} ms"
        )
    summary = {
        "gunicorn": config_desc,
        "relay_rps": relay,
        "bare_rps": bare,
        "ratio": ratio,
        "sealed_rps": sealed,
        "sealed_ratio": sealed_ratio,
        "errors": errors,
        "phases": [
            {
                "app": p.app,
                "round": p.round,
                "rps": p.rate,
                **p.result,
                "server_cpu_s": p.server_cpu,
                "redis_cpu_s": p.redis_cpu,
                "foreign_cores": p.foreign_cores,
            }
            for t in targets.values()
            for p in t.phases
        ],
    }
    print("SUMMARY " + json.dumps(summary))
    return 0 if errors == 0 else 1


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--duration", type=float, default=15.0, help="seconds measured per phase")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of warm-up per phase")
    parser.add_argument("--rounds", type=int, default=2, help="rounds (order alternates)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument("--wrk-threads", type=int, default=1, help="wrk threads")
    parser.add_argument(
        "--requests-per-second",
        type=int,
        default=6000,
        help="pre-signed requests built per second of load (upper bound)",
    )
    parser.add_argument(
        "--web-workers",
        type=int,
        default=None,
        help="override gunicorn workers (default: the config's)",
    )
    parser.add_argument(
        "--web-threads",
        type=int,
        default=None,
        help="override gunicorn threads (default: the config's)",
    )
    parser.add_argument(
        "--profile",
        metavar="DIR",
        default=None,
        help="py-spy record the relay's gunicorn during its phases into DIR",
    )
    parser.add_argument(
        "--profile-format", default="speedscope", choices=["speedscope", "flamegraph", "raw"]
    )
    parser.add_argument(
        "--no-sealed",
        dest="sealed",
        action="store_false",
        help="leave out the receiver with RELAY_ENCRYPTION_KEYS set",
    )
    add_output_args(parser, json_file=False)
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install wrk", file=sys.stderr)
        return 2

    with bench_run("ingest", args.keep) as run:
        tmp, procs, server = run.tmp, run.procs, run.redis
        client = redis.Redis.from_url(server.url)
        config = write_config(
            tmp / "relay.yaml",
            [
                {"id": "out", "kind": "file", "path": str(tmp / "out")},
            ],
        )
        names = ["relay", "sealed", "bare"] if args.sealed else ["relay", "bare"]
        targets = {name: Target(name, new_port()) for name in names}
        config_desc = ""
        effective = ""
        for t in targets.values():
            app = "bench.baseline_app:app" if t.name == "bare" else "relay.wsgi:app"
            command, config_desc = gunicorn_command(app, t.port, args.web_threads, args.web_workers)
            keys = new_key() if t.name == "sealed" else ""  # "": not sealed, whatever the env
            env = base_env(
                server.url, config, t.port, BENCH_MODE="lpush", RELAY_ENCRYPTION_KEYS=keys
            )
            effective = effective or gunicorn_effective(env)
            procs.start(t.name, command, env)
            t.pgid = procs.pid(t.name)
        for t in targets.values():
            wait_port(t.port, procs=procs, name=t.name)
            status = check_once(t.port)
            if status != 202:
                raise RuntimeError(f"{t.name} answered {status} to a signed request")
        print(f"gunicorn: {config_desc} {effective}")
        for rnd in range(args.rounds):
            order = names[rnd % len(names) :] + names[: rnd % len(names)]
            for name in order:
                p = measure(targets[name], rnd, tmp, client, run.redis_pid, args, procs)
                print(
                    f"round {rnd} {name:5}: {p.rate:8.0f} req/s  p50 "
                    f"{p.result['p50_us'] / 1000:.2f} ms  p99 {p.result['p99_us'] / 1000:.2f} "
                    f"ms  errors {p.errors}  2xx-not-202 {p.result['s2xx_other']}",
                    flush=True,
                )
        return report(targets, config_desc, effective, args)


if __name__ == "__main__":
    sys.exit(main())
