"""Helpers for tests that drive the whole pipeline: a signed intake POST and state lookups.

Shared by the end-to-end, API, dashboard, secrets and chaos tests; the ``pipeline``
fixture and its ``Sink`` live in ``tests/conftest.py``.
"""

from __future__ import annotations

import json
from typing import Any

import redis
from flask.testing import FlaskClient

from relay import signing
from relay.config.kinds import source_kinds
from relay.config.models import SourceConfig
from relay.intake.sources.standard_webhooks import StandardWebhooksSource
from relay.state import keys
from tests.conftest import TEST_SECRET, wait_for

EVENT = {
    "type": "message.created",
    "data": {"group": {"id": "g1", "name": "Ops"}, "sender": {"id": "u1"}, "text": "hi"},
}


def signed_post(client: FlaskClient, body: dict[str, Any], msg_id: str | None = None) -> Any:
    """POST ``body`` to the ``ops`` source signed as a Standard Webhooks sender would."""
    source = source_kinds()["standard_webhooks"](
        SourceConfig(
            id="ops",
            kind="standard_webhooks",
            options=StandardWebhooksSource.Options(secrets=[TEST_SECRET]),
        )
    )
    sample = source.sample(json.dumps(body).encode())
    headers = dict(sample.headers)
    if msg_id is not None:  # re-sign under a fixed id, as a sender's resend would be
        headers["webhook-id"] = msg_id
        headers["webhook-signature"] = signing.sign_header(
            [signing.decode_secret(TEST_SECRET)], msg_id, headers["webhook-timestamp"], sample.body
        )
    return client.post("/hooks/ops", data=sample.body, headers=headers)


def delivery_of(redis_client: redis.Redis, event_id: str) -> str:
    """The one delivery an event fanned out to, once it exists."""
    ids: set[bytes] = wait_for(lambda: redis_client.smembers(keys.event_deliveries(event_id)))
    return next(iter(ids)).decode()


def status_of(redis_client: redis.Redis, delivery_id: str) -> str | None:
    value = redis_client.hget(keys.delivery(delivery_id), "status")
    return value.decode() if value else None


def all_delivered(redis_client: redis.Redis, event_id: str) -> bool:
    """True once the event has deliveries and every one of them is delivered."""
    ids = redis_client.smembers(keys.event_deliveries(event_id))
    return bool(ids) and all(
        redis_client.hget(keys.delivery(i.decode()), "status") == b"delivered" for i in ids
    )
