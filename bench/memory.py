"""Redis memory per event, per delivery, per attempt record and per dead letter.

Sizing ``maxmemory`` needs what one event costs while its records live
(``RELAY_RETENTION``) and what a dead letter costs until it is purged. This accepts
signed DingTalk robot messages through the real receiver (``POST /hooks/<id>``, the
intake script), fans each out through the workers' own fan-out function (the fan-out
script), records the delivered attempt (the finish script), and reads ``INFO memory``
(``used_memory``) before and after each step on a private redis-server (AOF on, as in
production). Queue messages are dropped as workers would have consumed them, so the
figures are what stays, not a backlog.

The per-event and per-delivery parts are told apart by running twice, with 1 and with
``--deliveries`` targets per event: the difference is the deliveries' share.

    python bench/memory.py [--events 2000] [--deliveries 3] [--rate 10]
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # ``python bench/memory.py`` from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis
import yaml

from bench.common import add_output_args, bench_parser, bench_run, write_json
from relay import create_app
from relay.config.loader import load_config
from relay.intake.sources.dingtalk_robot import sample_message, signature
from relay.settings import Settings
from relay.state import keys
from workers.context import WorkerContext
from workers.fanout import fanout

APP_SECRET = "bench-dingtalk-app-secret"
DAY = 86400


@dataclass
class Run:
    """One pass: ``deliveries`` targets per event; bytes of ``used_memory`` per step."""

    deliveries: int
    per_event_queued: float  # accepted, its fan-out message still in the queue
    per_event_total: float  # event with all its deliveries delivered (one attempt each)
    per_extra_attempt: float  # one more attempt record (a retry)
    per_dead_letter: float  # a delivered delivery turned into a dead letter
    per_dedupe_key: float
    per_single_use: float  # DingTalk robot only: a used signature, kept 2 × tolerance
    event_json_bytes: float


def used(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def write_config(folder: Path, deliveries: int) -> Path:
    targets = [
        {"id": f"t{i}", "kind": "webhook", "url": f"https://hooks.example.com/in/{i}"}
        for i in range(deliveries)
    ]
    config = {
        "sources": [{"id": "dingtalk", "kind": "dingtalk_robot", "app_secret": APP_SECRET}],
        "targets": targets,
        "routes": [{"source": "dingtalk", "targets": [t["id"] for t in targets]}],
    }
    path = folder / f"relay-{deliveries}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def one_run(redis_url: str, folder: Path, events: int, deliveries: int) -> Run:
    client = redis.Redis.from_url(redis_url)
    client.flushall()
    path = write_config(folder, deliveries)
    settings = Settings(
        redis_url=redis_url, config=path, state_dir=folder / "state", log_level="WARNING"
    )
    config = load_config(path)
    web = create_app(settings).test_client()
    ctx = WorkerContext(settings, config)

    stamps = iter(range(int(time.time() * 1000), 2**63))

    def post_one() -> str:
        """One message as DingTalk sends it; each its own millisecond, since a signature
        carries one message only."""
        stamp = next(stamps)
        body = json.dumps(sample_message(stamp), ensure_ascii=False).encode()
        headers = {
            "content-type": "application/json; charset=utf-8",
            "timestamp": str(stamp),
            "sign": signature(APP_SECRET, str(stamp)),
        }
        answer = web.post("/hooks/dingtalk", data=body, headers=headers)
        assert answer.status_code in (200, 202), answer.get_data(as_text=True)
        return str(answer.get_json()["event_id"])

    post_one()  # scripts, stats hashes and the first allocations are not per event
    client.flushall()
    post_one()
    client.delete(keys.FANOUT_QUEUE)

    m0 = used(client)
    ids = [post_one() for _ in range(events)]
    m1 = used(client)
    event_sizes = [len(client.hget(keys.event(i), "data") or b"") for i in ids]

    for event_id in ids:
        fanout(ctx, event_id)
    client.delete(*keys.ALL_QUEUES)
    owners = {
        d.decode(): event_id
        for event_id in ids
        for d in client.smembers(keys.event_deliveries(event_id))
    }
    delivery_ids = list(owners)
    started = time.time()
    attempt = {"n": 1, "started_at": started, "duration_ms": 41.37, "outcome": "delivered",
               "status": 200, "response": '{"ok":true}'}  # fmt: skip
    for delivery_id in delivery_ids:
        ctx.store.finish_delivered(delivery_id, attempt, token="")
    m2 = used(client)

    retry = {"n": 2, "started_at": started, "duration_ms": 5003.1, "outcome": "retry",
             "error": "timed out after 5s"}  # fmt: skip
    for delivery_id in delivery_ids:
        ctx.store.add_attempt(delivery_id, retry)
    m3 = used(client)

    failed = {"n": 3, "started_at": started, "duration_ms": 38.2, "outcome": "failed",
              "status": 410, "response": "gone", "error": "HTTP 410"}  # fmt: skip
    for delivery_id in delivery_ids:
        event_json = (client.hget(keys.event(owners[delivery_id]), "data") or b"").decode()
        ctx.store.finish_dead(delivery_id, failed, "permanent failure", event_json, token="")
    m4 = used(client)

    dedupe = list(client.scan_iter(match="relay:dedupe:*", count=1000))
    client.delete(*dedupe)
    m5 = used(client)
    once = list(client.scan_iter(match="relay:once:*", count=1000))
    client.delete(*once)
    m6 = used(client)

    total_deliveries = len(delivery_ids)
    assert total_deliveries == events * deliveries, (total_deliveries, events, deliveries)
    run = Run(
        deliveries=deliveries,
        per_event_queued=(m1 - m0) / events,
        per_event_total=(m2 - m0) / events,
        per_extra_attempt=(m3 - m2) / total_deliveries,
        per_dead_letter=(m4 - m3) / total_deliveries,
        per_dedupe_key=(m4 - m5) / max(1, len(dedupe)),
        per_single_use=(m5 - m6) / max(1, len(once)),
        event_json_bytes=sum(event_sizes) / len(event_sizes),
    )
    client.flushall()
    client.close()
    return run


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--events", type=int, default=2000, help="events per pass (2000)")
    parser.add_argument("--deliveries", type=int, default=3, help="targets per event (3)")
    parser.add_argument("--rate", type=float, default=10.0, help="events/s for the day (10)")
    parser.add_argument(
        "--attempts", type=float, default=1.0, help="attempts per delivery on average (1)"
    )
    parser.add_argument("--retention-days", type=float, default=7.0, help="RELAY_RETENTION (7)")
    parser.add_argument("--dedupe-days", type=float, default=1.0, help="dedupe_ttl (1, robot)")
    add_output_args(parser)
    args = parser.parse_args()
    if args.deliveries < 2:
        parser.error(
            "--deliveries must be at least 2 (the second pass tells events from deliveries)"
        )

    with bench_run("memory", args.keep) as run:
        version = redis.Redis.from_url(run.redis.url).info("server")["redis_version"]
        one = one_run(run.redis.url, run.tmp, args.events, 1)
        many = one_run(run.redis.url, run.tmp, args.events, args.deliveries)

    per_delivery = (many.per_event_total - one.per_event_total) / (args.deliveries - 1)
    per_event = one.per_event_total - per_delivery - one.per_dedupe_key - one.per_single_use
    attempt = (one.per_extra_attempt + many.per_extra_attempt) / 2
    dead = (one.per_dead_letter + many.per_dead_letter) / 2
    dedupe = (one.per_dedupe_key + many.per_dedupe_key) / 2
    single_use = (one.per_single_use + many.per_single_use) / 2
    k = args.deliveries
    event_day = args.rate * DAY * (per_event + k * (per_delivery + (args.attempts - 1) * attempt))
    dedupe_day = args.rate * DAY * dedupe
    single_use_held = args.rate * 2 * 3600 * single_use  # twice the 1 h tolerance
    held = event_day * args.retention_days + dedupe_day * args.dedupe_days + single_use_held

    rows: list[tuple[str, float]] = [
        ("event record, index and deliveries set (without dedupe key)", per_event),
        ("dedupe key (lives dedupe_ttl, not the retention)", dedupe),
        ("used DingTalk robot signature (lives 2 h)", single_use),
        ("delivery, delivered, with its first attempt record", per_delivery),
        ("each further attempt record (a retry)", attempt),
        ("dead letter, over its delivery (event copy, DLQ entry, failing attempt)", dead),
        ("accepted event still queued for fan-out (transient)", many.per_event_queued),
    ]
    print(f"redis {version}; {args.events} DingTalk robot messages per pass, "
          f"event JSON {many.event_json_bytes:.0f} bytes on average")  # fmt: skip
    print(f"{'bytes':>8}  what")
    for label, value in rows:
        print(f"{value:8.0f}  {label}")
    print(
        f"\nat {args.rate:g} events/s, {k} deliveries each, {args.attempts:g} attempts per "
        f"delivery: {event_day / 2**20:.0f} MiB per retention day "
        f"(+ {dedupe_day / 2**20:.0f} MiB of dedupe keys a day); "
        f"held with RELAY_RETENTION={args.retention_days:g}d and dedupe_ttl="
        f"{args.dedupe_days:g}d (and 2 h of used signatures): {held / 2**30:.2f} GiB, "
        "plus dead letters "
        f"({dead + per_delivery:.0f} bytes each until purged)"
    )
    results: dict[str, Any] = {
        "redis_version": version,
        "events": args.events,
        "event_json_bytes": many.event_json_bytes,
        "per_event": per_event,
        "per_dedupe_key": dedupe,
        "per_single_use": single_use,
        "per_delivery": per_delivery,
        "per_attempt": attempt,
        "per_dead_letter": dead,
        "per_event_queued": many.per_event_queued,
        "bytes_per_retention_day": event_day,
        "dedupe_bytes_per_day": dedupe_day,
        "held_bytes": held,
    }
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
