"""``/healthz`` (the process answers) and ``/readyz`` (it can take events now)."""

from __future__ import annotations

import time

import redis
from flask import Blueprint, current_app, jsonify
from flask.typing import ResponseReturnValue

from relay import keys
from relay.runtime import Runtime

health = Blueprint("health", __name__)


@health.get("/healthz")
def healthz() -> ResponseReturnValue:
    return jsonify(status="ok")


@health.get("/readyz")
def readyz() -> ResponseReturnValue:
    runtime: Runtime = current_app.extensions["relay"]
    checks: dict[str, object] = {"config": "ok"}
    ready = True
    try:
        runtime.redis.ping()
        checks["redis"] = "ok"
        beat = runtime.redis.get(keys.SCHEDULER_HEARTBEAT)
        checks["scheduler_seconds_since_heartbeat"] = (
            round(time.time() - float(beat), 3) if beat else None
        )
    except redis.RedisError as exc:
        checks["redis"] = f"unreachable: {type(exc).__name__}"
        ready = False
    body = jsonify(status="ready" if ready else "unavailable", checks=checks)
    return body, 200 if ready else 503
