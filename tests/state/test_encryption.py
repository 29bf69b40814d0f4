"""Sealing at rest (``relay.state.sealing``): the envelope, keys, what a read says about a
value it cannot open, and the records the store writes with and without keys."""

from __future__ import annotations

import base64
import json
import time
import uuid

import pytest
import redis

from relay.errors import ConfigError
from relay.events import GroupEvent, Party
from relay.settings import Settings
from relay.state import keys
from relay.state.deliveries import Store
from relay.state.lifecycle import ClaimVerdict, DeliveryRecord
from relay.state.outbox import Outbox
from relay.state.sealing import (
    PLAIN,
    DamagedSeal,
    Sealer,
    UnknownDataKey,
    is_sealed,
    key_id,
    new_key,
    parse_keys,
)

CANARY = "canary-7f3a sealed text"


def sealer(*keys_: str) -> Sealer:
    return Sealer(parse_keys(",".join(keys_)))


def an_event(text: str = CANARY) -> GroupEvent:
    return GroupEvent(
        source="ops",
        type="message.created",
        group=Party(id="g1", name="Ops " + text),
        sender=Party(id="u1", name="Ann"),
        text=text,
    )


def kid(key: str) -> str:
    return key_id(base64.urlsafe_b64decode(key))


# the envelope -------------------------------------------------------------------------
def test_a_value_is_sealed_under_the_newest_key_and_opens_where_it_belongs() -> None:
    new, old = new_key(), new_key()
    s = sealer(new, old)
    sealed = s.seal(CANARY, "attempts:d1:response")
    assert sealed.startswith(f"enc:v1:{kid(new)}:") and CANARY not in sealed
    assert s.open(sealed, "attempts:d1:response") == CANARY
    assert s.seal(CANARY, "x") != s.seal(CANARY, "x")  # a fresh nonce every time
    assert sealer(old, new).open(sealed, "attempts:d1:response") == CANARY  # any order
    assert s.open("plain text", "anywhere") == "plain text"  # written before sealing


def test_a_value_moved_to_another_record_or_altered_does_not_open() -> None:
    s = sealer(new_key())
    sealed = s.seal(CANARY, "attempts:d1:response")
    with pytest.raises(DamagedSeal, match="does not authenticate"):
        s.open(sealed, "attempts:d2:response")
    body = sealed.rsplit(":", 1)[1]
    flipped = body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1]
    with pytest.raises(DamagedSeal):
        s.open(sealed[: -len(body)] + flipped, "attempts:d1:response")


def test_a_value_under_a_removed_key_says_which_key_and_what_to_do() -> None:
    old, new = new_key(), new_key()
    sealed = sealer(old).seal(CANARY, "w")
    with pytest.raises(UnknownDataKey) as caught:
        sealer(new).open(sealed, "w")
    assert str(caught.value) == (
        f"sealed with key {kid(old)}, which RELAY_ENCRYPTION_KEYS no longer holds"
    )
    with pytest.raises(UnknownDataKey, match="but RELAY_ENCRYPTION_KEYS is not set"):
        PLAIN.open(sealed, "w")
    assert sealer(new).shown(sealed, "w") == f"[{caught.value}]"


def test_without_keys_nothing_is_sealed() -> None:
    assert not PLAIN.active and PLAIN.newest is None
    event = an_event()
    assert PLAIN.seal(CANARY, "w") == CANARY
    assert PLAIN.seal_event(event.to_json(), event) == event.to_json()
    attempt = {"n": 1, "response": CANARY, "error": "HTTP 500"}
    assert PLAIN.seal_attempt("d1", attempt) == attempt
    assert PLAIN.seal_fields("d1", {"vars": CANARY, "event": "{}"}) == {
        "vars": CANARY,
        "event": "{}",
    }


# keys ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("not-base64!!", "key 1 of 1 is not 32 bytes in URL-safe base64"),
        (base64.urlsafe_b64encode(b"short").decode(), "key 1 of 1 is not 32 bytes"),
        ("{k},{k}", "key 2 repeats an earlier key"),
        ("{k},", "key 2 of 2 is not 32 bytes"),
    ],
)
def test_a_bad_key_list_is_refused_naming_the_setting_never_the_key(
    value: str, problem: str
) -> None:
    key = new_key()
    text = value.format(k=key)
    with pytest.raises(ConfigError) as caught:
        Sealer.of(Settings(encryption_keys=text))
    [message] = caught.value.problems
    assert message.startswith("RELAY_ENCRYPTION_KEYS: ") and problem in message
    assert key not in message and "short" not in message


def test_keys_parse_newest_first_with_or_without_padding_and_stay_out_of_repr() -> None:
    first, second = new_key(), new_key()
    s = Sealer.of(Settings(encryption_keys=f" {first.rstrip('=')} , {second}"))
    assert [k.id for k in s.keys] == [kid(first), kid(second)] and s.newest == kid(first)
    assert first not in repr(s.keys) and first not in repr(Settings(encryption_keys=first))
    assert Sealer.of(Settings()).active is False
    assert Sealer.of(Settings(encryption_keys=" ")).active is False


# events -------------------------------------------------------------------------------
def test_a_sealed_event_keeps_its_filter_fields_in_the_clear_and_authenticates_them() -> None:
    s = sealer(new_key())
    event = an_event()
    stored = s.seal_event(event.to_json(), event)
    assert CANARY not in stored and is_sealed(json.loads(stored)["sealed"])
    clear = {k: v for k, v in json.loads(stored).items() if k != "sealed"}
    assert clear == {
        "id": event.id,
        "source": "ops",
        "type": "message.created",
        "group": {"id": "g1"},
    }
    assert s.open_event(stored) == event.to_json()
    assert s.seal_event(event.to_json()) != stored  # without the object: parsed, same fields
    assert json.loads(s.seal_event(event.to_json())).keys() == json.loads(stored).keys()
    assert s.seal_event(stored) == stored  # a dead letter's copy of a stored event: as is
    forged = json.dumps({**json.loads(stored), "source": "other"})
    with pytest.raises(DamagedSeal):
        s.open_event(forged)


def test_an_event_that_does_not_open_shows_its_clear_fields_and_why() -> None:
    old = new_key()
    event = an_event()
    stored = sealer(old).seal_event(event.to_json(), event)
    shown, why = sealer(new_key()).shown_event(stored)
    assert why == f"sealed with key {kid(old)}, which RELAY_ENCRYPTION_KEYS no longer holds"
    assert json.loads(shown) == {
        "id": event.id,
        "source": "ops",
        "type": "message.created",
        "group": {"id": "g1"},
        "text": f"[{why}]",
    }


# the store ----------------------------------------------------------------------------
def accept_and_fan_out(
    client: redis.Redis, s: Sealer, *, vars_: str | None = None
) -> tuple[GroupEvent, str, Store]:
    outbox = Outbox(client, lease=60, retention=3600, sealer=s)
    store = Store(client, retention=3600, sealer=s)
    event = an_event()
    outbox.accept_event("ops", event.id, s.seal_event(event.to_json(), event),
                        dedupe_key=None, dedupe_ttl=60)  # fmt: skip
    delivery_id = f"dlv_{uuid.uuid4().hex}"
    record = DeliveryRecord.new(
        id=delivery_id,
        event_id=event.id,
        source="ops",
        target="sink",
        route=0,
        queue=keys.deliver_queue("webhook"),
        now=time.time(),
        vars=vars_,
    )
    outbox.fan_out(event.id, [(record.to_fields(), keys.deliver_queue("webhook"))])
    return event, delivery_id, store


def every_value(client: redis.Redis) -> list[bytes]:
    """Every value of every key, by type."""
    found: list[bytes] = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key).decode()
        if kind == "string":
            found.append(client.get(key) or b"")
        elif kind == "hash":
            found += [v for pair in client.hgetall(key).items() for v in pair]
        elif kind == "list":
            found += client.lrange(key, 0, -1)
        elif kind == "set":
            found += list(client.smembers(key))
        elif kind == "zset":
            found += client.zrange(key, 0, -1)
        elif kind == "stream":
            found += [v for _, entry in client.xrange(key) for pair in entry.items() for v in pair]
    return found


def test_the_store_seals_what_quotes_people_and_reads_it_back_plain(
    redis_client: redis.Redis,
) -> None:
    s = sealer(new_key())
    vars_ = json.dumps({"vars": {"task": {"title": CANARY}}, "template": "t"})
    event, delivery_id, store = accept_and_fan_out(redis_client, s, vars_=vars_)
    begun = store.begin(delivery_id, "tok", 30, time.time() + 30)
    assert begun.verdict is ClaimVerdict.RUN and begun.unreadable is None
    assert begun.event_json == event.to_json() and begun.delivery.vars == vars_
    attempt = {"n": 1, "outcome": "retry", "status": 500, "response": CANARY, "error": CANARY}
    store.finish_retry(delivery_id, attempt, time.time(), token="tok")  # due at once
    store.add_attempt(delivery_id, {**attempt, "n": 2, "outcome": "lost"})
    begun = store.begin(delivery_id, "tok2", 30, time.time() + 30)
    assert begun.verdict is ClaimVerdict.RUN
    store.finish_dead(delivery_id, {**attempt, "n": 3}, "permanent failure",
                      begun.event_json or "", token="tok2")  # fmt: skip

    assert not [v for v in every_value(redis_client) if CANARY.encode() in v]
    stored = redis_client.hgetall(keys.delivery(delivery_id))
    assert stored[b"status"] == b"dead" and stored[b"target"] == b"sink"  # filterable, plain
    assert stored[b"dead_reason"] == b"permanent failure"
    assert all(is_sealed(stored[f]) for f in (b"last_error", b"vars"))
    raw_attempt = json.loads(redis_client.lindex(keys.attempts(delivery_id), 0) or b"")
    assert raw_attempt["status"] == 500 and raw_attempt["outcome"] == "retry"
    assert is_sealed(raw_attempt["response"]) and is_sealed(raw_attempt["error"])

    d = store.delivery(delivery_id)
    assert d is not None and d.last_error == CANARY and d.vars == vars_
    assert d.event == event.to_json()
    assert [a["response"] for a in store.attempts(delivery_id)] == [CANARY] * 3
    found = store.event(event.id)
    assert found is not None and found["event"]["text"] == CANARY and "unreadable" not in found
    assert json.loads(store.event_data(event.id) or "")["text"] == CANARY
    [fields] = store.event_fields([event.id])
    assert json.loads(fields["data"])["group"]["name"] == "Ops " + CANARY


def test_without_keys_the_store_writes_exactly_the_plain_records(
    redis_client: redis.Redis,
) -> None:
    event, delivery_id, store = accept_and_fan_out(redis_client, PLAIN, vars_='{"vars": {}}')
    assert redis_client.hget(keys.event(event.id), "data") == event.to_json().encode()
    begun = store.begin(delivery_id, "tok", 30, time.time() + 30)
    attempt = {"n": 1, "outcome": "failed", "status": 410, "response": CANARY, "error": "gone"}
    store.finish_dead(delivery_id, attempt, "permanent failure", begun.event_json or "",
                      token="tok")  # fmt: skip
    assert redis_client.lrange(keys.attempts(delivery_id), 0, -1) == [json.dumps(attempt).encode()]
    stored = redis_client.hgetall(keys.delivery(delivery_id))
    assert stored[b"event"] == event.to_json().encode() and stored[b"last_error"] == b"gone"
    assert stored[b"vars"] == b'{"vars": {}}'
    assert not [v for v in every_value(redis_client) if b"enc:v1:" in v]


def test_a_claim_of_an_event_under_a_removed_key_says_why_and_keeps_it_as_stored(
    redis_client: redis.Redis,
) -> None:
    old = new_key()
    event, delivery_id, _ = accept_and_fan_out(redis_client, sealer(old))
    stored = (redis_client.hget(keys.event(event.id), "data") or b"").decode()
    store = Store(redis_client, retention=3600, sealer=sealer(new_key()))
    begun = store.begin(delivery_id, "tok", 30, time.time() + 30)
    why = f"sealed with key {kid(old)}, which RELAY_ENCRYPTION_KEYS no longer holds"
    assert begun.verdict is ClaimVerdict.RUN and begun.event_json is None
    assert begun.unreadable == why and begun.stored_event == stored
    store.finish_dead(delivery_id, None, why, stored, token="tok")
    assert redis_client.hget(keys.delivery(delivery_id), "event") == stored.encode()
    assert sealer(old).open_event(stored) == event.to_json()  # restorable with its key
    found = store.event(event.id)
    assert found is not None and found["unreadable"] == why
    assert found["event"]["text"] == f"[{why}]" and found["event"]["source"] == "ops"
    d = store.delivery(delivery_id)
    assert d is not None and d.dead_reason == why and json.loads(d.event or "")["id"] == event.id


def test_a_chained_delivery_whose_variables_do_not_open_is_not_run_blind(
    redis_client: redis.Redis,
) -> None:
    old = new_key()
    _, delivery_id, _ = accept_and_fan_out(redis_client, sealer(old), vars_='{"vars": {}}')
    event_key = new_key()  # the event readable, the variables not
    data = redis_client.hget(keys.delivery(delivery_id), "event_id") or b""
    event = an_event()
    redis_client.hset(
        keys.event(data.decode()), "data", sealer(event_key).seal_event(event.to_json())
    )
    begun = Store(redis_client, retention=3600, sealer=sealer(event_key)).begin(
        delivery_id, "tok", 30, time.time() + 30
    )
    assert begun.event_json is None and begun.unreadable is not None
    assert kid(old) in begun.unreadable
