"""Celery task messages built by hand, so they can be pushed from inside a Redis script.

Intake, fan-out, the scheduler and replays must change records *and* enqueue in one
atomic step; kombu cannot publish from a Lua script, so we pre-encode the exact
message kombu's Redis transport would ``LPUSH`` (Celery message protocol v2) and let
the script push it. ``relay`` sends tasks by name only; it never imports ``workers``.

The message is rendered from a template made once per task and queue: intake builds
one per request, and a full ``json.dumps`` of the envelope costs more than the rest.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import uuid
from functools import cache
from typing import Any

_ORIGIN = f"gen{os.getpid()}@{socket.gethostname()}"  # Celery's anon_nodename()
_EMBED = '{"callbacks": null, "errbacks": null, "chain": null, "chord": null}'
_ID, _BODY, _ARGSREPR = "@@id@@", "@@body@@", "@@argsrepr@@"


@cache
def _template(task: str, queue: str) -> str:
    """The envelope as JSON with placeholders for the id, body and argsrepr."""
    headers: dict[str, Any] = {
        "lang": "py",
        "task": task,
        "id": _ID,
        "shadow": None,
        "eta": None,
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": [None, None],
        "root_id": _ID,
        "parent_id": None,
        "argsrepr": _ARGSREPR,
        "kwargsrepr": "{}",
        "origin": _ORIGIN,
        "ignore_result": True,
        "replaced_task_nesting": 0,
        "stamped_headers": None,
        "stamps": {},
    }
    return json.dumps(
        {
            "body": _BODY,
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": headers,
            "properties": {
                "correlation_id": _ID,
                "reply_to": "",  # no reply is awaited: results are ignored
                "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": queue},
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": _ID,  # unique per message, like the task id itself
            },
        }
    )


def encode_task_message(task: str, args: list[str], queue: str) -> str:
    """The JSON string kombu's Redis transport stores for ``task(*args)`` on ``queue``."""
    body = f"[{json.dumps(args)}, {{}}, {_EMBED}]"
    return (
        _template(task, queue)
        .replace(_ID, str(uuid.uuid4()))
        .replace(_BODY, base64.b64encode(body.encode()).decode())
        .replace(_ARGSREPR, json.dumps(repr(args))[1:-1])
    )
