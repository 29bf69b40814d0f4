"""``/healthz`` (the process answers) and ``/readyz`` (it can take events now)."""

from __future__ import annotations

import time

import redis
from flask import Blueprint, current_app, jsonify
from flask.typing import ResponseReturnValue

from relay.context import WebContext
from relay.state import keys

health = Blueprint("health", __name__)


@health.get("/healthz")
def healthz() -> ResponseReturnValue:
    return jsonify(status="ok")


@health.get("/readyz")
def readyz() -> ResponseReturnValue:
    """Ready when Redis answers and the config is loaded. Also reports, without failing
    on them (they are the workers' and the scheduler's business, not this process's):
    seconds since the scheduler's heartbeat and the lag of the oldest due scheduled
    delivery (0 when nothing is overdue)."""
    runtime: WebContext = current_app.extensions["relay"]
    config = getattr(runtime, "config", None)
    checks: dict[str, object] = {"config": "ok" if config is not None else "not loaded"}
    if config is not None:
        checks["config_counts"] = {
            "sources": len(config.sources),
            "targets": len(config.targets),
            "routes": len(config.routes),
        }
    ready = config is not None
    try:
        pipe = runtime.redis.pipeline(transaction=False)
        pipe.ping()
        pipe.get(keys.SCHEDULER_HEARTBEAT)
        pipe.zrange(keys.SCHEDULE, 0, 0, withscores=True)
        _, beat, oldest = pipe.execute()
        now = time.time()
        checks["redis"] = "ok"
        checks["scheduler_seconds_since_heartbeat"] = round(now - float(beat), 3) if beat else None
        due_at = oldest[0][1] if oldest else None
        checks["schedule_lag_seconds"] = round(max(0.0, now - due_at), 3) if due_at else 0.0
    except redis.RedisError as exc:
        checks["redis"] = f"unreachable: {type(exc).__name__}"
        ready = False
    body = jsonify(status="ready" if ready else "unavailable", checks=checks)
    return body, 200 if ready else 503
