"""``dingtalk_events`` source: the official [V] vector as a real request, the encrypted
success answers, the mapping of group events, a bad-input matrix, dedupe and a
property test.

Signatures are computed here with ``hashlib`` directly; messages are sealed with
``MsgCrypt``, which ``test_msgcrypt.py`` checks against the official vectors.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import event as note
from hypothesis import given
from hypothesis import strategies as st

from relay.config.loader import parse_config
from relay.errors import ConfigError
from relay.intake.sources.msgcrypt import MsgCrypt
from relay.state import keys
from tests.intake.sources.support import (
    FUZZ,
    any_json,
    assert_refused,
    drawn,
    fuzz_json,
    stored_event,
)

# open-dingtalk/DingTalk-Callback-Crypto: DingCallbackCrypto3.py __main__ (protocols.md A1(b))
V_TOKEN = "mryue"
V_KEY = "Yue0EfdN5900c1ce5cf6A152c63DDe1808a60c5ecd7"
V_OWNER = "ding6ccabc44d2c8d38b"
V_TS = "1608001896814"
V_NONCE = "WL4PK6yA"
V_ENCRYPT = (
    "0vJiX6vliEpwG3U45CtXqi+m8PXbQRARJ8p8BbDuD1EMTDf0jKpQ79QS93qEk7XHpP6u+oTTrd15NRPvNvmBKyDC"
    "YxxOK+HZeKju4yhELOFchzNukR+t8SB/qk4ROMu3"
)
V_SIGNATURE = "03044561471240d4a14bb09372dfcfd4fd0e40cb"

OTHER_KEY = "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt"
SOURCES: list[dict[str, Any]] = [
    {"id": "dte", "kind": "dingtalk_events", "token": V_TOKEN, "aes_key": V_KEY,
     "owner_key": V_OWNER},
    {"id": "windowed", "kind": "dingtalk_events", "token": V_TOKEN, "aes_key": V_KEY,
     "owner_key": V_OWNER, "tolerance": "5m"},
    {"id": "otherapp", "kind": "dingtalk_events", "token": V_TOKEN, "aes_key": V_KEY,
     "owner_key": "dingotherappkey", "tolerance": "100000d"},
    {"id": "vec", "kind": "dingtalk_events", "token": V_TOKEN, "aes_key": V_KEY,
     "owner_key": V_OWNER, "tolerance": "100000d"},  # replays the 2020 vector
]  # fmt: skip
_counter = itertools.count()
Query = dict[str, str]


def sha1_signature(token: str, ts: str, nonce: str, encrypt: str) -> str:
    return hashlib.sha1("".join(sorted([token, ts, nonce, encrypt])).encode()).hexdigest()


def sealed(
    plain: bytes, *, owner: str = V_OWNER, key: str = V_KEY, prefix: bytes | None = None
) -> str:
    return MsgCrypt(key, owner).encrypt(plain, prefix=prefix)


def signed(encrypt: str, *, token: str = V_TOKEN, ts: str | None = None) -> Query:
    stamp = ts or str(int(time.time() * 1000))
    nonce = f"n{next(_counter)}"
    return {
        "msg_signature": sha1_signature(token, stamp, nonce, encrypt),
        "timestamp": stamp,
        "nonce": nonce,
    }


def push(event: dict[str, Any] | bytes, **seal: Any) -> tuple[Query, bytes]:
    """The query and body DingTalk would send for ``event`` (a dict or plaintext bytes)."""
    plain = event if isinstance(event, bytes) else json.dumps(event, ensure_ascii=False).encode()
    encrypt = sealed(plain, **seal)
    return signed(encrypt), json.dumps({"encrypt": encrypt}).encode()


def chat_event(event_type: str, **fields: Any) -> dict[str, Any]:
    """A group event as the HTTP push of an internal app carries it (DingTalk's docs)."""
    body: dict[str, Any] = {
        "EventType": event_type,
        "EventTime": 1663143335567,
        "CorpId": "ding9f50b15bxxxx16741",
        "BizId": "1663335567",
        "eventId": f"evt-{next(_counter)}",
        "timeStamp": 1608027106990,
        "chatId": "chat28367b03e4b4ca4b5074e1dbfb5d6088",
        "corpId": "dinge8a56572f80bxxxx",
        "operatorUnionId": "iis6fGqqqt87xxxxiEiE",
        "eventType": event_type,
        "openConversationId": "cidGroup==",
        "operator": "manager3060",
    }
    body.update(fields)
    return body


def post(
    client: FlaskClient,
    query: Query,
    body: bytes,
    source_id: str = "dte",
    content_type: str | None = "application/json",
) -> Any:
    headers = {"Content-Type": content_type} if content_type else {}
    return client.post(f"/hooks/{source_id}", query_string=query, data=body, headers=headers)


def assert_success_map(response: Any, token: str = V_TOKEN, owner: str = V_OWNER) -> None:
    """DingTalk's required answer: a signed, sealed "success" for this app."""
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    answer = response.get_json()
    assert set(answer) == {"msg_signature", "timeStamp", "nonce", "encrypt"}
    assert answer["timeStamp"].isdigit() and answer["nonce"]
    expected = sha1_signature(token, answer["timeStamp"], answer["nonce"], answer["encrypt"])
    assert answer["msg_signature"] == expected
    assert MsgCrypt(V_KEY, owner).decrypt(answer["encrypt"]) == b"success"


def stored(redis_client: redis.Redis, response: Any) -> dict[str, Any]:
    assert_success_map(response)
    return stored_event(redis_client, response.headers["X-Relay-Event-Id"])


# -- the official vector, as a real request ----------------------------------------------------

V_QUERY = {"msg_signature": V_SIGNATURE, "timestamp": V_TS, "nonce": V_NONCE}
V_BODY = json.dumps({"encrypt": V_ENCRYPT}).encode()


def test_vector_independently() -> None:
    assert sha1_signature(V_TOKEN, V_TS, V_NONCE, V_ENCRYPT) == V_SIGNATURE
    assert MsgCrypt(V_KEY, V_OWNER).decrypt(V_ENCRYPT) == b'{"EventType":"check_url"}'


def test_vector_check_url_is_answered(client: FlaskClient, redis_client: redis.Redis) -> None:
    response = post(client, V_QUERY, V_BODY, "vec")
    assert_success_map(response)
    assert redis_client.llen(keys.FANOUT_QUEUE) == 0
    assert redis_client.keys("relay:event:*") == []


def test_vector_with_older_parameter_names(client: FlaskClient) -> None:
    query = {"signature": V_SIGNATURE, "timeStamp": V_TS, "nonce": V_NONCE}
    assert_success_map(post(client, query, V_BODY, "vec"))


def test_vector_is_stale_under_the_default_window(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    assert_refused(post(client, V_QUERY, V_BODY), 401, "stale_timestamp", redis_client)


@pytest.mark.parametrize("days", [10, -10, 3.1])
def test_default_window_refuses_a_push_days_old(
    client: FlaskClient, redis_client: redis.Redis, days: float
) -> None:
    """A captured push replayed days later (or stamped days ahead) is refused, and the
    answer names the window and how to change it."""
    pushed = chat_event("chat_add_member", eventId="evt-old", userId=["u"])
    plain = json.dumps(pushed).encode()
    encrypt = sealed(plain)
    query = signed(encrypt, ts=str(int((time.time() - days * 86400) * 1000)))
    response = post(client, query, json.dumps({"encrypt": encrypt}).encode())
    assert_refused(response, 401, "stale_timestamp", redis_client)
    assert "the window is ±259200s" in response.get_json()["detail"]
    assert not redis_client.exists(keys.dedupe("dte", "evt-old"))


def test_default_window_accepts_a_late_retry(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    """A retry two days after the event, signed with its first timestamp, still counts."""
    pushed = chat_event("chat_add_member", eventId="evt-late", userId=["u"])
    encrypt = sealed(json.dumps(pushed).encode())
    query = signed(encrypt, ts=str(int((time.time() - 2 * 86400) * 1000)))
    stored(redis_client, post(client, query, json.dumps({"encrypt": encrypt}).encode()))


def test_line_wrapped_ciphertext_is_accepted(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    """DingTalk's own Python helper (DingCallbackCrypto3.encrypt) returns
    ``base64.encodebytes``: wrapped at 76 columns with a final newline, signed as such."""
    pushed = chat_event("chat_add_member", eventId="evt-wrapped", userId=["user456"])
    one_line = sealed(json.dumps(pushed).encode())
    wrapped = base64.encodebytes(base64.b64decode(one_line)).decode()
    assert wrapped.count("\n") > 1
    response = post(client, signed(wrapped), json.dumps({"encrypt": wrapped}).encode())
    event = stored(redis_client, response)
    assert event["type"] == "member.joined" and event["raw"]["eventId"] == "evt-wrapped"
    # Still signed over the exact string sent: the unwrapped value does not verify.
    query = signed(wrapped)
    other = post(client, query, json.dumps({"encrypt": one_line}).encode())
    assert other.status_code == 401 and other.get_json()["error"] == "invalid_signature"


def test_vector_is_stale_when_a_window_is_set(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    assert_refused(post(client, V_QUERY, V_BODY, "windowed"), 401, "stale_timestamp", redis_client)


def test_vector_for_another_app_is_refused(client: FlaskClient, redis_client: redis.Redis) -> None:
    response = post(client, V_QUERY, V_BODY, "otherapp")
    assert_refused(response, 401, "invalid_owner_key", redis_client)


@pytest.mark.parametrize("name", ["msg_signature", "timestamp", "nonce"])
def test_vector_handshake_is_verified_first(
    client: FlaskClient, redis_client: redis.Redis, name: str
) -> None:
    query = dict(V_QUERY)
    query[name] = query[name][:-1] + ("0" if query[name][-1] != "0" else "1")
    assert_refused(post(client, query, V_BODY, "vec"), 401, "invalid_signature", redis_client)


@pytest.mark.parametrize("kind", ["check_create_suite_url", "check_update_suite_url"])
def test_suite_url_checks_are_handshakes(
    client: FlaskClient, redis_client: redis.Redis, kind: str
) -> None:
    query, body = push({"EventType": kind, "Random": "x", "TestSuiteKey": "suite"})
    assert_success_map(post(client, query, body))
    assert redis_client.llen(keys.FANOUT_QUEUE) == 0


# -- group events --------------------------------------------------------------------------


def test_member_added(client: FlaskClient, redis_client: redis.Redis) -> None:
    pushed = chat_event("chat_add_member", userId=["user456", "user789"], unionId=["u1", "u2"])
    query, body = push(pushed)
    response = post(client, query, body)
    event = stored(redis_client, response)
    assert event["type"] == "member.joined"
    assert event["group"] == {"id": "cidGroup==", "name": None}
    assert event["sender"] == {"id": "manager3060", "name": None}
    assert [m["id"] for m in event["mentions"]] == ["user456", "user789"]
    assert event["occurred_at"].startswith("2020-12-15T10:11:46.990")
    assert event["raw"] == pushed
    assert redis_client.get(keys.dedupe("dte", pushed["eventId"])) is not None
    # A day past the 3-day window: a replay inside the window is always a known duplicate.
    assert 4 * 86400 - 60 < redis_client.ttl(keys.dedupe("dte", pushed["eventId"])) <= 4 * 86400
    assert "X-Relay-Duplicate" not in response.headers


def test_member_removed(client: FlaskClient, redis_client: redis.Redis) -> None:
    query, body = push(chat_event("chat_remove_member", userId=["user456"]))
    event = stored(redis_client, post(client, query, body))
    assert event["type"] == "member.left"
    assert event["mentions"] == [{"id": "user456", "name": None}]


def test_member_added_by_union_id_only(client: FlaskClient, redis_client: redis.Redis) -> None:
    query, body = push(chat_event("chat_add_member", unionId=["3rBUxxxQiEiE"]))
    event = stored(redis_client, post(client, query, body))
    assert event["mentions"] == [{"id": "3rBUxxxQiEiE", "name": None}]


def test_member_quit_is_the_operator(client: FlaskClient, redis_client: redis.Redis) -> None:
    query, body = push(chat_event("chat_quit", operator="user456"))
    event = stored(redis_client, post(client, query, body))
    assert event["type"] == "member.left"
    assert event["mentions"] == [{"id": "user456", "name": None}]
    assert event["sender"] == {"id": "user456", "name": None}


def test_title_update(client: FlaskClient, redis_client: redis.Redis) -> None:
    query, body = push(chat_event("chat_update_title", title="开放平台"))
    event = stored(redis_client, post(client, query, body))
    assert event["type"] == "group.updated"
    assert event["group"] == {"id": "cidGroup==", "name": "开放平台"}


@pytest.mark.parametrize("kind", ["chat_update_owner", "chat_disband"])
def test_other_group_changes(client: FlaskClient, redis_client: redis.Redis, kind: str) -> None:
    query, body = push(chat_event(kind, owner="newowner"))
    event = stored(redis_client, post(client, query, body))
    assert event["type"] == "group.updated" and event["group"]["id"] == "cidGroup=="
    assert event["raw"]["EventType"] == kind


def test_legacy_callback_fields(client: FlaskClient, redis_client: redis.Redis) -> None:
    """Registered callbacks capitalise field names and carry no eventId."""
    legacy = {
        "Operator": "manager3060",
        "OpenConversationId": "cid740SMooADFxmWX3DvIyp4g==",
        "CorpId": "ding0761931a826dfde2ffe93478753d9884",
        "EventType": "chat_disband",
        "OperatorUnionId": "3bOBVxFv0J8VOu3J4jGhZQiEiE",
        "TimeStamp": 1640754514696,
        "ChatId": "chat6418e0c8c141114e18491ea2603c09be",
    }
    plain = json.dumps(legacy).encode()
    query, body = push(plain)
    event = stored(redis_client, post(client, query, body))
    assert event["type"] == "group.updated"
    assert event["group"]["id"] == "cid740SMooADFxmWX3DvIyp4g=="
    assert event["sender"]["id"] == "manager3060"
    assert event["occurred_at"].startswith("2021-12-29T05:08:34.696")
    digest = hashlib.sha256(plain).hexdigest()
    assert redis_client.get(keys.dedupe("dte", f"sha256:{digest}")) is not None


def test_group_falls_back_to_chat_id(client: FlaskClient, redis_client: redis.Redis) -> None:
    pushed = chat_event("chat_update_title", title="t")
    del pushed["openConversationId"]
    event = stored(redis_client, post(client, *push(pushed)))
    assert event["group"]["id"] == "chat28367b03e4b4ca4b5074e1dbfb5d6088"


def test_other_events_are_custom(client: FlaskClient, redis_client: redis.Redis) -> None:
    pushed = {"EventType": "user_add_org", "eventId": "e-org", "UserId": ["u1"], "TimeStamp": "1"}
    event = stored(redis_client, post(client, *push(pushed)))
    assert event["type"] == "custom" and event["raw"] == pushed and event["mentions"] == []


def test_odd_field_types_are_skipped(client: FlaskClient, redis_client: redis.Redis) -> None:
    pushed = chat_event(
        "chat_add_member", userId=[1, "", None, "ok"], operator=5, timeStamp=-1, EventTime="x"
    )
    pushed["openConversationId"] = {"id": 1}
    pushed["chatId"] = "x" * 300
    event = stored(redis_client, post(client, *push(pushed)))
    assert event["group"] is None and event["sender"] is None
    assert event["mentions"] == [{"id": "ok", "name": None}]


# -- dedupe and answers --------------------------------------------------------------------


def test_resends_are_answered_with_success_too(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    pushed = chat_event("chat_add_member", userId=["u1"])
    first = post(client, *push(pushed))
    assert_success_map(first)
    for _ in range(3):
        again = post(client, *push(pushed))  # DingTalk re-seals and re-signs each attempt
        assert_success_map(again)
        assert again.headers["X-Relay-Event-Id"] == first.headers["X-Relay-Event-Id"]
        assert again.headers["X-Relay-Duplicate"] == "true"
    assert redis_client.llen(keys.FANOUT_QUEUE) == 1


def test_identical_plaintext_without_event_id_is_a_duplicate(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    plain = b'{"EventType":"chat_quit","ChatId":"c1","Operator":"u1","TimeStamp":1}'
    post(client, *push(plain))
    again = post(client, *push(plain))
    assert again.headers["X-Relay-Duplicate"] == "true"
    assert redis_client.llen(keys.FANOUT_QUEUE) == 1


def test_different_events_are_different(client: FlaskClient, redis_client: redis.Redis) -> None:
    for _ in range(3):
        assert_success_map(post(client, *push(chat_event("chat_quit"))))
    assert redis_client.llen(keys.FANOUT_QUEUE) == 3


def test_sample_is_accepted(app: Flask, client: FlaskClient, redis_client: redis.Redis) -> None:
    sample = app.extensions["relay"].sources["dte"].sample()
    response = client.post(
        "/hooks/dte" + sample.path_suffix, data=sample.body, headers=sample.headers
    )
    event = stored(redis_client, response)
    assert event["type"] == "member.joined" and event["mentions"] == [
        {"id": "user456", "name": None}
    ]


def test_sample_seals_a_given_plaintext(app: Flask) -> None:
    sample = app.extensions["relay"].sources["dte"].sample(b'{"EventType":"check_url"}')
    encrypt = json.loads(sample.body)["encrypt"]
    assert MsgCrypt(V_KEY, V_OWNER).decrypt(encrypt) == b'{"EventType":"check_url"}'


def test_get_is_not_allowed(client: FlaskClient) -> None:
    assert client.get("/hooks/dte", query_string=V_QUERY).status_code == 405


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"aes_key": "short"}, "sources[0].aes_key: must be 43 characters, not 5"),
        ({"aes_key": "!" * 43}, "sources[0].aes_key: is not base64"),
        ({"token": ""}, "sources[0].token"),
        ({"owner_key": None}, "sources[0].owner_key"),
        ({"tolerance": "soon"}, "sources[0].tolerance"),
    ],
)
def test_config_errors(options: dict[str, Any], problem: str) -> None:
    source = {"id": "d", "kind": "dingtalk_events", "token": "t", "aes_key": V_KEY,
              "owner_key": "o", **options}  # fmt: skip
    with pytest.raises(ConfigError) as caught:
        parse_config({"sources": [{k: v for k, v in source.items() if v is not None}]})
    assert problem in str(caught.value)
    assert "!!!!" not in str(caught.value)


def test_secrets_are_not_in_repr() -> None:
    config = parse_config({"sources": [{**SOURCES[0], "id": "d"}]})
    assert V_TOKEN not in repr(config.sources["d"]) and V_KEY not in repr(config.sources["d"])


# -- the bad-input matrix --------------------------------------------------------------------


def _raw_cipher(plaintext_block: bytes) -> str:
    """AES-CBC of exactly these bytes under the vector key (no framing, no padding)."""
    key = base64.b64decode(V_KEY + "=")
    encryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    return base64.b64encode(encryptor.update(plaintext_block) + encryptor.finalize()).decode()


PLAIN = json.dumps(chat_event("chat_add_member", eventId="evt-matrix", userId=["u"])).encode()
PREFIX = b"0123456789abcdef"
GOOD = sealed(PLAIN, prefix=PREFIX)
Mutation = Callable[[Query, str], tuple[Query, bytes]]


def _encrypt(new: Callable[[str], str], *, resign: bool) -> Mutation:
    """Replace the ciphertext; ``resign`` signs the new one (to reach decryption)."""

    def mutate(query: Query, encrypt: str) -> tuple[Query, bytes]:
        changed = new(encrypt)
        out = signed(changed, ts=query["timestamp"]) if resign else query
        return out, json.dumps({"encrypt": changed}).encode()

    return mutate


def _query(**changes: Any) -> Mutation:
    def mutate(query: Query, encrypt: str) -> tuple[Query, bytes]:
        out = dict(query)
        for name, value in changes.items():
            if value is None:
                out.pop(name, None)
            else:
                out[name] = value(out[name]) if callable(value) else value
        return out, json.dumps({"encrypt": encrypt}).encode()

    return mutate


def _body(raw: bytes) -> Mutation:
    return lambda query, encrypt: (query, raw)


def _flip_char(text: str, index: int) -> str:
    return text[:index] + ("A" if text[index] != "A" else "B") + text[index + 1 :]


def _sealed_plain(plain: bytes) -> Callable[[str], str]:
    return lambda _: sealed(plain)


MATRIX: dict[str, tuple[Mutation, int, str | None]] = {
    "encrypt char changed": (
        _encrypt(lambda e: _flip_char(e, 10), resign=False),
        401,
        "invalid_signature",
    ),
    "encrypt appended": (_encrypt(lambda e: e + "AAAA", resign=False), 401, "invalid_signature"),
    "timestamp changed": (_query(timestamp=lambda t: str(int(t) + 1)), 401, "invalid_signature"),
    "nonce changed": (_query(nonce=lambda n: n + "x"), 401, "invalid_signature"),
    "signature flipped": (
        _query(msg_signature=lambda s: s[:3] + ("0" if s[3] != "0" else "1") + s[4:]),
        401,
        "invalid_signature",
    ),
    "signature empty": (_query(msg_signature=""), 401, "missing_signature"),
    "signature non-ascii": (_query(msg_signature="ü" * 40), 401, "invalid_signature"),
    "wrong token": (
        lambda q, e: (signed(e, token="another-token"), json.dumps({"encrypt": e}).encode()),
        401,
        "invalid_signature",
    ),
    "missing signature": (_query(msg_signature=None), 401, "missing_signature"),
    "missing timestamp": (_query(timestamp=None), 401, "missing_signature"),
    "missing nonce": (_query(nonce=None), 401, "missing_signature"),
    "timestamp not digits": (_query(timestamp="yesterday"), 401, "invalid_timestamp"),
    "timestamp superscript": (_query(timestamp=lambda t: t[:-1] + "²"), 401, "invalid_timestamp"),
    "timestamp huge": (_query(timestamp="9" * 30), 401, "invalid_timestamp"),
    "wrong owner key": (
        _encrypt(lambda _: sealed(PLAIN, owner="dingother"), resign=True),
        401,
        "invalid_owner_key",
    ),
    "wrong aes key": (
        _encrypt(lambda _: sealed(PLAIN, key=OTHER_KEY), resign=True),
        400,
        "undecryptable",
    ),
    "malformed base64": (_encrypt(lambda _: "not base64!", resign=True), 400, "undecryptable"),
    "non-ascii encrypt": (_encrypt(lambda _: "ünïcødé", resign=True), 400, "undecryptable"),
    "bad padding": (
        _encrypt(lambda _: _raw_cipher(b"\x00" * 32), resign=True),
        400,
        "undecryptable",
    ),
    "truncated ciphertext": (_encrypt(lambda e: e[:-4], resign=True), 400, "undecryptable"),
    "a block short": (
        _encrypt(lambda e: base64.b64encode(base64.b64decode(e)[:-16]).decode(), resign=True),
        400,
        "undecryptable",
    ),
    "length field too big": (
        _encrypt(lambda _: _raw_cipher(PREFIX + b"\xff\xff\xff\xff" + b"\x0c" * 12), resign=True),
        400,
        "undecryptable",
    ),
    "plaintext not json": (_encrypt(_sealed_plain(b"not json"), resign=True), 400, "invalid_json"),
    "plaintext a list": (_encrypt(_sealed_plain(b"[1]"), resign=True), 400, "invalid_json"),
    "plaintext not utf-8": (_encrypt(_sealed_plain(b"\xff\xfe"), resign=True), 400, "invalid_json"),
    "plaintext duplicate key": (
        _encrypt(_sealed_plain(b'{"EventType":"a","EventType":"b"}'), resign=True),
        400,
        "invalid_json",
    ),
    "body not json": (_body(b"{nope"), 400, "invalid_json"),
    "body without encrypt": (_body(b'{"data": "x"}'), 400, "invalid_body"),
    "encrypt not a string": (_body(b'{"encrypt": 42}'), 400, "invalid_body"),
    "body a list": (_body(b'["x"]'), 400, "invalid_body"),
}


@pytest.mark.parametrize("name", list(MATRIX))
def test_bad_input_matrix(client: FlaskClient, redis_client: redis.Redis, name: str) -> None:
    mutate, status, code = MATRIX[name]
    query, body = mutate(signed(GOOD), GOOD)
    assert_refused(post(client, query, body), status, code, redis_client)
    assert not redis_client.exists(keys.dedupe("dte", "evt-matrix"))


def test_unmutated_matrix_request_is_accepted(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    """The baseline of the matrix is valid, so each refusal above is the mutation's doing."""
    stored(redis_client, post(client, signed(GOOD), json.dumps({"encrypt": GOOD}).encode()))


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_wrong_content_type(
    client: FlaskClient, redis_client: redis.Redis, content_type: str | None
) -> None:
    response = post(
        client, signed(GOOD), json.dumps({"encrypt": GOOD}).encode(), "dte", content_type
    )
    assert_refused(response, 415, "unsupported_media_type", redis_client)


@pytest.mark.parametrize("offset", [-301, 301])
def test_window_refuses_stale_and_future(
    client: FlaskClient, redis_client: redis.Redis, offset: int
) -> None:
    stamp = str(int((time.time() + offset) * 1000))
    query = signed(GOOD, ts=stamp)
    response = post(client, query, json.dumps({"encrypt": GOOD}).encode(), "windowed")
    assert_refused(response, 401, "stale_timestamp", redis_client)


def test_window_accepts_fresh(client: FlaskClient, redis_client: redis.Redis) -> None:
    response = post(client, signed(GOOD), json.dumps({"encrypt": GOOD}).encode(), "windowed")
    assert_success_map(response)


def test_duplicate_query_parameter(client: FlaskClient, redis_client: redis.Redis) -> None:
    query = signed(GOOD)
    response = client.post(
        f"/hooks/dte?nonce={query['nonce']}&nonce=x&timestamp={query['timestamp']}"
        f"&msg_signature={query['msg_signature']}",
        data=json.dumps({"encrypt": GOOD}),
        headers={"Content-Type": "application/json"},
    )
    assert_refused(response, 400, None, redis_client)


# -- property test: never a 5xx --------------------------------------------------------------

_TEXT = st.characters(min_codepoint=0x20, max_codepoint=0x2FF, exclude_characters="\x7f")
param_values = st.one_of(
    st.text(_TEXT, max_size=60),
    st.integers(min_value=-(10**16), max_value=10**16).map(str),
    st.from_regex(r"\A[0-9a-f]{40}\Z"),
)
json_values = any_json(width=3, key=8, leaves=15, infinity=True)
EVENT_TYPES = ["chat_add_member", "chat_remove_member", "chat_quit", "chat_update_title",
               "chat_disband", "user_add_org", "check_url"]  # fmt: skip
EVENT_FIELDS = ["eventId", "userId", "unionId", "operator", "openConversationId", "chatId",
                "title", "timeStamp", "EventTime", "TimeStamp", "ChatId"]  # fmt: skip
event_like = st.fixed_dictionaries(
    {"EventType": st.one_of(st.sampled_from(EVENT_TYPES), json_values)},
    optional={name: json_values for name in EVENT_FIELDS},
)


def check(response: Any) -> dict[str, Any]:
    """Below 500 and JSON: an error body, or the encrypted success map."""
    body = fuzz_json(response)
    if response.status_code < 300:
        assert set(body) == {"msg_signature", "timeStamp", "nonce", "encrypt"}
    return body


@FUZZ
@given(body=st.binary(max_size=1500), data=st.data())
def test_fuzz_unsigned(fuzz_client: FlaskClient, body: bytes, data: st.DataObject) -> None:
    names = ("msg_signature", "signature", "timestamp", "timeStamp", "nonce")
    query = drawn(data, names, param_values)
    content_type = data.draw(st.sampled_from(["application/json", "text/plain", None]))
    response = post(fuzz_client, query, body, content_type=content_type)
    check(response)
    assert response.status_code >= 400


@FUZZ
@given(encrypt=st.one_of(st.text(max_size=200), st.from_regex(r"\A[A-Za-z0-9+/]{0,120}=?=?\Z")))
def test_fuzz_signed_ciphertext(fuzz_client: FlaskClient, encrypt: str) -> None:
    """Correctly signed garbage ciphertext reaches decryption: 400/401, never 500."""
    response = post(fuzz_client, signed(encrypt), json.dumps({"encrypt": encrypt}).encode())
    check(response)
    note(f"status {response.status_code}")


@FUZZ
@given(
    plain=st.one_of(
        st.binary(max_size=600),
        json_values.map(lambda v: json.dumps(v).encode()),
        event_like.map(lambda v: json.dumps(v).encode()),
    )
)
def test_fuzz_sealed_plaintext(fuzz_client: FlaskClient, plain: bytes) -> None:
    """Correctly sealed and signed messages of any content: 200 or 400/422."""
    response = post(fuzz_client, *push(plain))
    check(response)
    note(f"status {response.status_code}")
    assert response.status_code in (200, 400, 422)


@FUZZ
@given(name=st.sampled_from(["msg_signature", "timestamp", "nonce"]), value=param_values)
def test_fuzz_one_parameter_replaced(fuzz_client: FlaskClient, name: str, value: str) -> None:
    query, body = push(chat_event("chat_quit"))
    check(post(fuzz_client, {**query, name: value}, body))
