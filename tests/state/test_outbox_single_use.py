"""Single-use credentials at intake: one message per signature, resends still deduped."""

from __future__ import annotations

import pytest
import redis

from relay.errors import Unauthorized
from relay.state import keys
from relay.state.outbox import Outbox


def test_second_message_under_one_signature_is_refused(redis_client: redis.Redis) -> None:
    queue = Outbox(redis_client, lease=60, retention=3600)
    first = queue.accept_event(
        "dt", "evt_1", "{}", dedupe_key="msg-1", dedupe_ttl=60, single_use="sig", single_use_ttl=30
    )
    assert first is None
    with pytest.raises(Unauthorized) as refused:
        queue.accept_event(
            "dt",
            "evt_2",
            "{}",
            dedupe_key="msg-2",
            dedupe_ttl=60,
            single_use="sig",
            single_use_ttl=30,
        )
    assert refused.value.code == "replayed_signature"
    assert redis_client.llen(keys.FANOUT_QUEUE) == 1
    assert not redis_client.exists(keys.event("evt_2"))
    assert not redis_client.exists(keys.dedupe("dt", "msg-2"))
    assert 0 < redis_client.ttl(keys.single_use("dt", "sig")) <= 30


def test_resend_under_the_same_signature_is_a_duplicate(redis_client: redis.Redis) -> None:
    queue = Outbox(redis_client, lease=60, retention=3600)
    args = {"dedupe_key": "msg-1", "dedupe_ttl": 60, "single_use": "sig", "single_use_ttl": 30}
    assert queue.accept_event("dt", "evt_1", "{}", **args) is None  # type: ignore[arg-type]
    assert queue.accept_event("dt", "evt_2", "{}", **args) == "evt_1"  # type: ignore[arg-type]
    assert redis_client.llen(keys.FANOUT_QUEUE) == 1


def test_other_signatures_are_independent(redis_client: redis.Redis) -> None:
    queue = Outbox(redis_client, lease=60, retention=3600)
    for n in range(3):
        assert (
            queue.accept_event(
                "dt",
                f"evt_{n}",
                "{}",
                dedupe_key=f"m{n}",
                dedupe_ttl=60,
                single_use=f"sig{n}",
                single_use_ttl=30,
            )
            is None
        )
    assert redis_client.llen(keys.FANOUT_QUEUE) == 3
