"""Celery task messages built by hand, so they can be pushed from inside a Redis script.

Intake, fan-out, the scheduler and replays must change records *and* enqueue in one
atomic step; kombu cannot publish from a Lua script, so we pre-encode the exact
message kombu's Redis transport would ``LPUSH`` (Celery message protocol v2) and let
the script push it. ``relay`` sends tasks by name only; it never imports ``workers``.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import uuid
from typing import Any

_ORIGIN = f"{os.getpid()}@{socket.gethostname()}"


def encode_task_message(task: str, args: list[Any], queue: str) -> str:
    """The JSON string kombu's Redis transport stores for ``task(*args)`` on ``queue``."""
    task_id = str(uuid.uuid4())
    body = json.dumps(
        [args, {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
    )
    headers = {
        "lang": "py",
        "task": task,
        "id": task_id,
        "shadow": None,
        "eta": None,
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": [None, None],
        "root_id": task_id,
        "parent_id": None,
        "argsrepr": repr(args),
        "kwargsrepr": "{}",
        "origin": _ORIGIN,
        "ignore_result": True,
    }
    message = {
        "body": base64.b64encode(body.encode()).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": {
            "correlation_id": task_id,
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": task_id,  # unique per message, like the task id itself
        },
    }
    return json.dumps(message)
