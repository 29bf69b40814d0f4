"""The hand-encoded task message is the one Celery and kombu's Redis transport store.

Each case sends the same task with the same arguments through Celery's ``send_task``
over a plain ``kombu.Connection`` to the suite's redis-server, with the queues of
``workers.celery_app``, reads the stored message back with LRANGE and compares it with
``encode_task_message``: field by field, then byte for byte. Only values that are
random by nature are normalised first: the task id (also the root and correlation id),
the delivery tag and the reply-to address Celery names its app by. A Celery or kombu
upgrade that changes the stored format fails here, not in a worker.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from celery import Celery
from kombu import Connection

from relay.events import new_event_id
from relay.settings import Settings
from relay.state import keys
from relay.state.celery_message import encode_task_message
from workers.celery_app import make_celery

TASK_ID = "00000000-0000-4000-8000-000000000001"


def delivery_ids(count: int) -> list[str]:
    return [f"dlv_{secrets.token_hex(16)}" for _ in range(count)]


@pytest.fixture
def celery_app(make_settings: Callable[..., Settings]) -> Iterator[Celery]:
    app = make_celery(make_settings())
    yield app
    app.close()


@pytest.fixture
def publish(
    celery_app: Celery, redis_url: str, redis_client: redis.Redis
) -> Iterator[Callable[[str, list[str], str], str]]:
    """Send ``task(*args)`` to ``queue`` as a Celery client does; the JSON stored."""
    connection = Connection(redis_url)  # kombu's own Redis transport

    def send(task: str, args: list[str], queue: str) -> str:
        celery_app.send_task(
            task, args=args, queue=queue, task_id=TASK_ID, ignore_result=True, connection=connection
        )
        stored: list[bytes] = redis_client.lrange(queue, 0, -1)  # type: ignore[assignment]
        assert len(stored) == 1, stored
        redis_client.delete(queue)
        return stored[0].decode()

    yield send
    connection.release()


def normalised(raw: str) -> str:
    """The stored JSON with the values that are random by nature replaced by names."""
    message = json.loads(raw)
    task_id = message["headers"]["id"]
    properties = message["properties"]
    assert message["headers"]["root_id"] == properties["correlation_id"] == task_id
    for name in ("delivery_tag", "reply_to"):
        if name not in properties:
            continue  # the field comparison names what is missing
        value = f'"{name}": {json.dumps(properties[name])}'
        assert raw.count(value) == 1, value
        raw = raw.replace(value, f'"{name}": "<{name}>"')
    return raw.replace(json.dumps(task_id), '"<task_id>"')


def fields(raw: str) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(normalised(raw))
    message["body"] = base64.b64decode(message["body"]).decode()
    return message


CASES = [
    (keys.FANOUT_TASK, keys.FANOUT_QUEUE, [new_event_id()]),
    *[(keys.DELIVER_TASK, keys.deliver_queue(f), delivery_ids(1)) for f in keys.FAMILIES],
    (keys.DELIVER_TASK, keys.deliver_queue("notify"), delivery_ids(20)),  # one event's batch
]


@pytest.mark.parametrize(("task", "queue", "args"), CASES)
def test_the_encoded_message_is_the_one_celery_stores(
    publish: Callable[[str, list[str], str], str], task: str, queue: str, args: list[str]
) -> None:
    stored = publish(task, args, queue)
    encoded = encode_task_message(task, args, queue)
    theirs, ours = fields(stored), fields(encoded)
    assert list(ours) == list(theirs)  # the same fields in the same order
    for section in ("headers", "properties"):
        assert list(ours[section].items()) == list(theirs[section].items()), section
    assert ours["body"] == theirs["body"]
    assert ours == theirs
    assert normalised(encoded) == normalised(stored)  # byte for byte


def test_only_the_random_values_were_normalised(
    publish: Callable[[str, list[str], str], str],
) -> None:
    stored = json.loads(publish(keys.FANOUT_TASK, ["evt_1"], keys.FANOUT_QUEUE))
    encoded = json.loads(encode_task_message(keys.FANOUT_TASK, ["evt_1"], keys.FANOUT_QUEUE))
    assert stored["headers"]["id"] == TASK_ID and encoded["headers"]["id"] != TASK_ID
    assert encoded["properties"]["delivery_tag"] == encoded["headers"]["id"]
    assert stored["properties"]["delivery_info"] == {"exchange": "", "routing_key": "relay.fanout"}
    assert json.loads(base64.b64decode(stored["body"]))[0] == ["evt_1"]


def test_a_long_batch_differs_only_in_the_display_of_its_arguments(
    publish: Callable[[str, list[str], str], str],
) -> None:
    """Celery cuts ``argsrepr`` (shown by monitoring tools, never parsed) at 1024
    characters; the encoder writes it whole. Everything else stays the same."""
    args, queue = delivery_ids(40), keys.deliver_queue("webhook")
    theirs = fields(publish(keys.DELIVER_TASK, args, queue))
    ours = fields(encode_task_message(keys.DELIVER_TASK, args, queue))
    assert ours["headers"].pop("argsrepr") == repr(args)
    assert len(theirs["headers"].pop("argsrepr")) < len(repr(args))
    assert ours == theirs
