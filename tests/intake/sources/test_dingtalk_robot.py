"""``dingtalk_robot`` source: the [C] vector, the time window, single-use signatures, the
mapping of every msgtype, a bad-input matrix, dedupe and a property test.

Signatures are computed here with ``hmac``/``hashlib`` directly, not with the module's
helper, so a mistake there cannot cancel itself out. Everything past the vector goes
through the real receiver and a real Redis.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import time
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import event as note
from hypothesis import given
from hypothesis import strategies as st

from relay.config.loader import parse_config
from relay.errors import ConfigError, Unauthorized
from relay.intake.sources import dingtalk_robot as dr
from relay.state import keys
from tests.intake.sources.support import (
    FUZZ,
    LATIN1,
    Headers,
    Mutation,
    any_json,
    assert_refused,
    build_source,
    drawn,
    fuzz_json,
    inbound,
    stored_event,
    tamper,
)

# protocols.md A1(a), vector [C]
V_SECRET = "this is secret"
V_TS = "1577262236757"
V_SIGN = "hmPWwU+7lVdm3ZZz0r9tSfx0L4Q26jWOZr9+Gs6EZQM="

SECRET = "app-secret-for-tests"
OLD_SECRET = "the-previous-app-secret"
BOT = "$:LWCP_v1:$robot"
SESSION = "https://oapi.dingtalk.com/robot/sendBySession?session=abc123"
SOURCES: list[dict[str, Any]] = [
    {"id": "dt", "kind": "dingtalk_robot", "app_secret": SECRET},
    {"id": "rot", "kind": "dingtalk_robot", "app_secret": SECRET, "app_secrets": [OLD_SECRET]},
    {"id": "vec", "kind": "dingtalk_robot", "app_secret": V_SECRET, "tolerance": "3650d"},
    {"id": "local", "kind": "dingtalk_robot", "app_secret": SECRET,
     "session_hosts": ["oapi.dingtalk.com", "http://127.0.0.1:8089", "https://Test.Example:8443"]},
]  # fmt: skip
_clock = itertools.count()


def next_ms() -> int:
    """A fresh millisecond each call: two messages never share a (timestamp, sign) pair."""
    return int(time.time() * 1000) - 100_000 + next(_clock) % 100_000


def sign(secret: str, ts: str) -> str:
    digest = hmac.new(secret.encode(), f"{ts}\n{secret}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def headers_for(ts: int | str | None = None, secret: str = SECRET) -> dict[str, str]:
    stamp = str(next_ms() if ts is None else ts)
    return {"Content-Type": "application/json", "timestamp": stamp, "sign": sign(secret, stamp)}


def message(msgtype: str = "text", **fields: Any) -> dict[str, Any]:
    """A group message as DingTalk sends it; ``fields`` override or add keys."""
    now = int(time.time() * 1000)
    body: dict[str, Any] = {
        "conversationId": "cidGroup==",
        "atUsers": [{"dingtalkId": BOT}, {"dingtalkId": "$:LWCP_v1:$bob", "staffId": "bob01"}],
        "chatbotCorpId": "dingcorp",
        "chatbotUserId": BOT,
        "msgId": f"msg-{next(_clock)}",
        "senderNick": "Ada",
        "isAdmin": False,
        "senderStaffId": "ada01",
        "sessionWebhookExpiredTime": now + 5_400_000,
        "createAt": now,
        "senderCorpId": "dingcorp",
        "conversationType": "2",
        "senderId": "$:LWCP_v1:$ada",
        "conversationTitle": "Ops",
        "isInAtList": True,
        "sessionWebhook": SESSION,
        "robotCode": "dingrobotcode",
        "msgtype": msgtype,
    }
    if msgtype == "text":
        body["text"] = {"content": " deploy done @bob "}
    body.update(fields)
    return body


def encode(body: Any) -> bytes:
    return json.dumps(body, ensure_ascii=False).encode()


def source(**options: Any) -> dr.DingTalkRobotSource:
    entry = {"id": "r", "kind": "dingtalk_robot", "app_secret": SECRET, **options}
    return build_source(dr.DingTalkRobotSource, entry)


def post(client: FlaskClient, body: bytes, headers: Any, source_id: str = "dt") -> Any:
    return client.post(f"/hooks/{source_id}", data=body, headers=headers)


def stored(redis_client: redis.Redis, response: Any) -> dict[str, Any]:
    assert response.status_code == 200, response.get_data(as_text=True)
    return stored_event(redis_client, response.get_json()["event_id"])


# -- the [C] vector and the window -------------------------------------------------------------


def test_vector_independently_and_by_module() -> None:
    assert sign(V_SECRET, V_TS) == V_SIGN
    assert dr.signature(V_SECRET, V_TS) == V_SIGN


@pytest.mark.parametrize("skew", [0, 3599, -3599])
def test_vector_inside_the_hour(monkeypatch: pytest.MonkeyPatch, skew: int) -> None:
    monkeypatch.setattr("time.time", lambda: int(V_TS) / 1000 + skew)
    source(app_secret=V_SECRET).verify(inbound({"timestamp": V_TS, "sign": V_SIGN}))


@pytest.mark.parametrize("skew", [3601, -3601])
def test_vector_outside_the_hour(monkeypatch: pytest.MonkeyPatch, skew: int) -> None:
    monkeypatch.setattr("time.time", lambda: int(V_TS) / 1000 + skew)
    with pytest.raises(Unauthorized) as caught:
        source(app_secret=V_SECRET).verify(inbound({"timestamp": V_TS, "sign": V_SIGN}))
    assert caught.value.code == "stale_timestamp"


def test_vector_through_the_receiver(client: FlaskClient, redis_client: redis.Redis) -> None:
    headers = {"Content-Type": "application/json", "timestamp": V_TS, "sign": V_SIGN}
    response = post(client, encode(message(msgId="vector-msg")), headers, "vec")
    assert stored(redis_client, response)["message_id"] == "vector-msg"


def test_tolerance_is_configurable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("time.time", lambda: int(V_TS) / 1000 + 600)
    narrow = source(app_secret=V_SECRET, tolerance="5m")
    with pytest.raises(Unauthorized):
        narrow.verify(inbound({"timestamp": V_TS, "sign": V_SIGN}))


@pytest.mark.parametrize("secret", [SECRET, OLD_SECRET])
def test_rotation_accepts_each_secret(
    client: FlaskClient, redis_client: redis.Redis, secret: str
) -> None:
    response = post(client, encode(message()), headers_for(secret=secret), "rot")
    assert response.status_code == 200
    assert redis_client.llen(keys.FANOUT_QUEUE) == 1


def test_retired_secret_is_refused(client: FlaskClient, redis_client: redis.Redis) -> None:
    response = post(client, encode(message()), headers_for(secret=OLD_SECRET), "dt")
    assert_refused(response, 401, "invalid_signature", redis_client)


# -- one message per signature ---------------------------------------------------------------


def test_same_pair_other_msg_id_is_a_replay(client: FlaskClient, redis_client: redis.Redis) -> None:
    headers = headers_for()
    first = post(client, encode(message(msgId="m-1")), headers)
    assert first.status_code == 200
    replay = post(client, encode(message(msgId="m-2", text={"content": "forged"})), headers)
    assert replay.status_code == 401
    assert replay.get_json()["error"] == "replayed_signature"
    assert redis_client.llen(keys.FANOUT_QUEUE) == 1
    assert not redis_client.exists(keys.dedupe("dt", "m-2"))


def test_same_pair_same_msg_id_is_a_duplicate(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    headers, body = headers_for(), encode(message(msgId="m-1"))
    first = post(client, body, headers)
    again = post(client, body, headers)
    assert again.status_code == 200
    assert again.get_json() == {"event_id": first.get_json()["event_id"], "duplicate": True}
    assert redis_client.llen(keys.FANOUT_QUEUE) == 1


def test_other_spelling_of_the_same_sign_is_still_a_replay(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    """Base64 has 2 spare bits here: 'xM=' and 'xN=' decode alike and both verify."""
    headers = headers_for()
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = headers["sign"][42]
    respelled = headers["sign"][:42] + alphabet[alphabet.index(last) ^ 1] + "="
    assert base64.b64decode(respelled) == base64.b64decode(headers["sign"])
    assert post(client, encode(message(msgId="m-1")), headers).status_code == 200
    replay = post(client, encode(message(msgId="m-2")), {**headers, "sign": respelled})
    assert replay.status_code == 401 and replay.get_json()["error"] == "replayed_signature"
    assert redis_client.llen(keys.FANOUT_QUEUE) == 1


def test_pair_is_remembered_for_twice_the_window(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    headers = headers_for()
    post(client, encode(message()), headers)
    (key,) = redis_client.keys(keys.single_use("dt", "*"))
    assert 7200 - 60 < redis_client.ttl(key) <= 7200


def test_body_is_unsigned_so_only_the_first_use_counts(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    """DingTalk signs the timestamp only: an altered body with a fresh pair is accepted."""
    body = encode(message(msgId="m-1")).replace(b"deploy done", b"deploy DONE")
    event = stored(redis_client, post(client, body, headers_for()))
    assert event["text"] == "deploy DONE @bob"


# -- mapping -------------------------------------------------------------------------------


def test_group_text_message(client: FlaskClient, redis_client: redis.Redis) -> None:
    body = message(msgId="msg-text")
    event = stored(redis_client, post(client, encode(body), headers_for()))
    assert event["type"] == "message.created"
    assert event["group"] == {"id": "cidGroup==", "name": "Ops"}
    assert event["sender"] == {"id": "ada01", "name": "Ada"}
    assert event["text"] == "deploy done @bob"
    assert event["mentions"] == [{"id": "bob01", "name": None}]
    assert event["mentions_bot"] is True
    assert event["message_id"] == "msg-text"
    assert event["occurred_at"].startswith(time.strftime("%Y-%m-%d", time.gmtime()))
    assert event["reply"]["kind"] == "dingtalk_session"
    assert event["reply"]["url"] == SESSION
    expires = body["sessionWebhookExpiredTime"] // 1000
    assert event["reply"]["expires_at"].startswith(
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(expires))
    )
    assert event["raw"] == body
    assert redis_client.get(keys.dedupe("dt", "msg-text")) is not None
    assert 86400 - 60 < redis_client.ttl(keys.dedupe("dt", "msg-text")) <= 86400


def test_created_at_is_the_occurred_time(client: FlaskClient, redis_client: redis.Redis) -> None:
    event = stored(
        redis_client, post(client, encode(message(createAt=1577262236757)), headers_for())
    )
    assert event["occurred_at"].startswith("2019-12-25T08:23:56.757")


def test_one_to_one_chat(client: FlaskClient, redis_client: redis.Redis) -> None:
    body = message(conversationType="1", conversationId="cidPrivate==", isInAtList=False)
    del body["conversationTitle"], body["senderStaffId"]
    body["atUsers"] = []
    event = stored(redis_client, post(client, encode(body), headers_for()))
    assert event["group"] == {"id": "cidPrivate==", "name": None}
    assert event["sender"] == {"id": "$:LWCP_v1:$ada", "name": "Ada"}
    assert event["mentions"] == [] and event["mentions_bot"] is False


def test_rich_text_is_flattened(client: FlaskClient, redis_client: redis.Redis) -> None:
    rich = [
        {"text": "release notes\n"},
        {"type": "picture", "downloadCode": "dl-pic", "pictureDownloadCode": "pdl"},
        {"text": "see above"},
    ]
    body = message("richText", content={"richText": rich})
    event = stored(redis_client, post(client, encode(body), headers_for()))
    assert event["type"] == "message.created"
    assert event["text"] == "release notes\nsee above"
    assert event["files"] == [
        {"name": "picture", "size": None, "mime": None, "url": None, "ref": "dl-pic"}
    ]


@pytest.mark.parametrize(
    ("msgtype", "content", "file", "text"),
    [
        ("picture", {"downloadCode": "dl-1", "pictureDownloadCode": "p"}, ("picture", None), None),
        (
            "audio",
            {"downloadCode": "dl-2", "duration": 4000, "recognition": "call me"},
            ("audio", None),
            "call me",
        ),
        (
            "video",
            {"downloadCode": "dl-3", "duration": 9, "videoType": "mp4"},
            ("video", "video/mp4"),
            None,
        ),
        (
            "file",
            {"downloadCode": "dl-4", "fileName": "report.pdf", "spaceId": "1", "fileId": "2"},
            ("report.pdf", None),
            None,
        ),
    ],
)
def test_media_is_a_shared_file(
    client: FlaskClient,
    redis_client: redis.Redis,
    msgtype: str,
    content: dict[str, Any],
    file: tuple[str, str | None],
    text: str | None,
) -> None:
    event = stored(
        redis_client, post(client, encode(message(msgtype, content=content)), headers_for())
    )
    assert event["type"] == "file.shared"
    assert event["files"] == [
        {
            "name": file[0],
            "size": None,
            "mime": file[1],
            "url": None,
            "ref": content["downloadCode"],
        }
    ]
    assert event["text"] == text
    assert event["group"]["id"] == "cidGroup==" and event["sender"]["id"] == "ada01"


def test_unknown_msgtype_is_custom(client: FlaskClient, redis_client: redis.Redis) -> None:
    body = message("interactiveCard", content={"cardData": "{}"})
    event = stored(redis_client, post(client, encode(body), headers_for()))
    assert event["type"] == "custom"
    assert event["group"]["id"] == "cidGroup==" and event["message_id"] == body["msgId"]


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/robot/sendBySession?session=x",
        "http://oapi.dingtalk.com/robot/sendBySession?session=x",
        "https://oapi.dingtalk.com.evil.example/x",
        "https://oapi.dingtalk.com:8443/x",
        "https://[::1/x",
        42,
    ],
)
def test_session_webhook_elsewhere_is_not_kept(
    client: FlaskClient, redis_client: redis.Redis, url: Any
) -> None:
    """The body is unsigned: a reply URL outside DingTalk's API would be an SSRF lever."""
    event = stored(redis_client, post(client, encode(message(sessionWebhook=url)), headers_for()))
    assert event["reply"] is None


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8089/robot/sendBySession?session=x",
        "https://test.example:8443/robot/sendBySession?session=x",
        "https://oapi.dingtalk.com/robot/sendBySession?session=x",
    ],
)
def test_session_webhook_on_a_configured_origin_is_kept(
    client: FlaskClient, redis_client: redis.Redis, url: str
) -> None:
    """``session_hosts`` lets a test server in: http and a port only as spelled there."""
    body = message(sessionWebhook=url)
    event = stored(redis_client, post(client, encode(body), headers_for(), "local"))
    assert event["reply"]["kind"] == "dingtalk_session" and event["reply"]["url"] == url
    default = stored(redis_client, post(client, encode(message(sessionWebhook=url)), headers_for()))
    assert (default["reply"] is None) is (url.startswith(("http:", "https://test.")))


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1:8089/robot/sendBySession?session=x",  # the scheme counts
        "http://127.0.0.1:8090/robot/sendBySession?session=x",  # so does the port
        "http://127.0.0.1/robot/sendBySession?session=x",
        "http://localhost:8089/robot/sendBySession?session=x",
        "https://api.dingtalk.com/robot/sendBySession?session=x",  # not in this list
        "https://test.example/x",
    ],
)
def test_session_webhook_outside_the_configured_origins_is_not_kept(
    client: FlaskClient, redis_client: redis.Redis, url: str
) -> None:
    body = message(sessionWebhook=url)
    assert stored(redis_client, post(client, encode(body), headers_for(), "local"))["reply"] is None


def test_odd_field_types_are_skipped(client: FlaskClient, redis_client: redis.Redis) -> None:
    body = message(
        conversationId=7,
        senderStaffId="",
        senderId=None,
        senderNick=["x"],
        atUsers={"dingtalkId": "x"},
        isInAtList="yes",
        createAt="soon",
        text={"content": 5},
    )
    event = stored(redis_client, post(client, encode(body), headers_for()))
    assert event["group"] is None and event["sender"] is None and event["text"] is None
    assert event["mentions"] == [] and event["mentions_bot"] is False


# -- the bad-input matrix --------------------------------------------------------------------


def _flip_sign(value: str) -> str:
    raw = bytearray(base64.b64decode(value))
    raw[7] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


def _signed_at(offset_ms: int = 0, secret: str = SECRET, *, seconds: bool = False) -> Mutation:
    """Signed correctly for now + ``offset_ms``, computed when the request is made."""

    def mutate(headers: dict[str, str], body: bytes) -> tuple[Headers, bytes]:
        ms = int(time.time() * 1000) + offset_ms
        stamp = str(ms // 1000 if seconds else ms)
        return list({**headers, "timestamp": stamp, "sign": sign(secret, stamp)}.items()), body

    return mutate


MATRIX: dict[str, tuple[Mutation, int, str | None]] = {
    "timestamp changed": (tamper(timestamp=lambda t: str(int(t) + 1)), 401, "invalid_signature"),
    "sign bit flip": (tamper(sign=_flip_sign), 401, "invalid_signature"),
    "wrong secret": (_signed_at(secret="not-the-secret"), 401, "invalid_signature"),
    "stale timestamp": (_signed_at(-3_601_000), 401, "stale_timestamp"),
    "future timestamp": (_signed_at(3_601_000), 401, "stale_timestamp"),
    "timestamp in seconds": (_signed_at(seconds=True), 401, "stale_timestamp"),
    "timestamp not digits": (tamper(timestamp="yesterday"), 401, "invalid_timestamp"),
    "timestamp negative": (tamper(timestamp="-1577262236757"), 401, "invalid_timestamp"),
    "timestamp superscript": (tamper(timestamp=lambda t: t[:-1] + "²"), 401, "invalid_timestamp"),
    "timestamp huge": (tamper(timestamp="9" * 40), 401, "invalid_timestamp"),
    "missing timestamp": (tamper(timestamp=None), 401, "missing_signature"),
    "missing sign": (tamper(sign=None), 401, "missing_signature"),
    "empty sign": (tamper(sign=""), 401, "missing_signature"),
    "sign not base64": (tamper(sign="!!not*base64!!"), 401, "malformed_signature"),
    "sign bad padding": (tamper(sign=lambda s: s.rstrip("=")), 401, "malformed_signature"),
    "sign too short": (
        tamper(sign=base64.b64encode(b"x" * 20).decode()),
        401,
        "malformed_signature",
    ),
    "sign non-ascii": (tamper(sign="ü" * 44), 401, "malformed_signature"),
    "sign hex instead": (tamper(sign="ab" * 32), 401, "malformed_signature"),
    "wrong content type": (tamper(**{"Content-Type": "text/plain"}), 415, None),
    "no content type": (tamper(**{"Content-Type": None}), 415, None),
    "body not json": (tamper(body=lambda b: b"{not json"), 400, "invalid_json"),
    "body not utf-8": (tamper(body=lambda b: b'{"a": "\xff"}'), 400, "invalid_json"),
    "body truncated": (tamper(body=lambda b: b[:-7]), 400, "invalid_json"),
    "body a list": (tamper(body=lambda b: b"[1, 2]"), 422, "invalid_event"),
    "msgId missing": (tamper(body=lambda b: encode({**json.loads(b), "msgId": None})), 422, None),
    "msgId too long": (
        tamper(body=lambda b: encode({**json.loads(b), "msgId": "m" * 300})),
        422,
        None,
    ),
    "picture without code": (
        tamper(body=lambda b: encode({**json.loads(b), "msgtype": "picture", "content": {}})),
        422,
        "invalid_event",
    ),
}


@pytest.mark.parametrize("name", list(MATRIX))
def test_bad_input_matrix(client: FlaskClient, redis_client: redis.Redis, name: str) -> None:
    mutate, status, code = MATRIX[name]
    headers, body = mutate(headers_for(), encode(message(msgId="msg-matrix")))
    assert_refused(post(client, body, headers), status, code, redis_client)
    assert not redis_client.exists(keys.dedupe("dt", "msg-matrix"))


def test_get_is_not_allowed(client: FlaskClient) -> None:
    response = client.get("/hooks/dt", headers=headers_for())
    assert response.status_code == 405


# -- dedupe and answers --------------------------------------------------------------------


def test_resends_with_fresh_pairs_are_duplicates(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    body = encode(message(msgId="msg-dup"))
    first = post(client, body, headers_for())
    assert first.status_code == 200 and first.get_json() == {
        "event_id": first.get_json()["event_id"]
    }
    for _ in range(4):
        again = post(client, body, headers_for())
        assert again.status_code == 200 and again.get_json()["duplicate"] is True
    assert redis_client.llen(keys.FANOUT_QUEUE) == 1


def test_different_msg_ids_are_different_events(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    ids = {post(client, encode(message()), headers_for()).get_json()["event_id"] for _ in range(3)}
    assert len(ids) == 3 and redis_client.llen(keys.FANOUT_QUEUE) == 3


def test_sample_is_accepted_and_realistic(
    app: Flask, client: FlaskClient, redis_client: redis.Redis
) -> None:
    sample = app.extensions["relay"].sources["dt"].sample()
    assert sample.headers["sign"] == sign(SECRET, sample.headers["timestamp"])
    event = stored(redis_client, post(client, sample.body, sample.headers))
    assert event["type"] == "message.created" and event["mentions_bot"] is True
    assert event["group"]["name"] == "Ops" and event["text"] == "Deploy finished: relay is live"


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({}, "set app_secret"),
        ({"app_secret": ""}, "app_secret is empty"),
        ({"app_secrets": ["ok", ""]}, "app_secrets[1] is empty"),
        ({"app_secret": "s", "tolerance": 0}, "tolerance"),
        (
            {"app_secret": "s", "session_hosts": ["ftp://127.0.0.1"]},
            "sources[0].session_hosts: 'ftp://127.0.0.1' is neither a host name",
        ),
        (
            {"app_secret": "s", "session_hosts": ["http://127.0.0.1:8089/robot"]},
            "'http://127.0.0.1:8089/robot' is neither a host name",
        ),
        (
            {"app_secret": "s", "session_hosts": ["127.0.0.1:99999"]},
            "'127.0.0.1:99999': Port out of range",
        ),
        ({"app_secret": "s", "session_hosts": "oapi.dingtalk.com"}, "sources[0].session_hosts"),
    ],
)
def test_config_errors(options: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"sources": [{"id": "r", "kind": "dingtalk_robot", **options}]})
    assert problem in str(caught.value)


def test_secret_is_not_in_repr() -> None:
    assert SECRET not in repr(source().options)


# -- property test: never a 5xx --------------------------------------------------------------

header_values = st.one_of(
    st.text(LATIN1, max_size=80),
    st.integers(min_value=-(10**16), max_value=10**16).map(str),
    st.from_regex(r"\A[A-Za-z0-9+/]{0,50}={0,2}\Z"),
)
json_values = any_json(width=3, key=8, leaves=15, infinity=True)
FIELDS = ["msgId", "msgtype", "text", "content", "atUsers", "conversationId", "senderNick",
          "senderStaffId", "createAt", "sessionWebhook", "sessionWebhookExpiredTime",
          "isInAtList", "chatbotUserId", "conversationTitle"]  # fmt: skip
message_like = st.fixed_dictionaries(
    {"msgId": st.one_of(st.text(min_size=1, max_size=300), json_values)},
    optional={
        name: st.one_of(
            json_values,
            st.sampled_from(["text", "richText", "picture", "audio", "video", "file"]),
            st.fixed_dictionaries(
                {}, optional={"richText": json_values, "downloadCode": json_values}
            ),
        )
        for name in FIELDS[1:]
    },
)


def check(response: Any) -> dict[str, Any]:
    """Below 500 and JSON: an error body, or the event id."""
    return fuzz_json(response, "event_id")


@FUZZ
@given(body=st.binary(max_size=1500), data=st.data())
def test_fuzz_unsigned(fuzz_client: FlaskClient, body: bytes, data: st.DataObject) -> None:
    content_type = data.draw(st.sampled_from(["application/json", "text/plain", ""]))
    headers = drawn(data, ("timestamp", "sign"), header_values, {"Content-Type": content_type})
    response = post(fuzz_client, body, headers)
    check(response)
    assert response.status_code >= 400


@FUZZ
@given(body=st.one_of(st.binary(max_size=1500), json_values.map(encode), message_like.map(encode)))
def test_fuzz_signed(fuzz_client: FlaskClient, body: bytes) -> None:
    response = post(fuzz_client, body, headers_for())
    check(response)
    note(f"status {response.status_code}")
    assert response.status_code in (200, 400, 422), response.get_data(as_text=True)


@FUZZ
@given(name=st.sampled_from(["timestamp", "sign", "Content-Type"]), value=header_values)
def test_fuzz_one_header_replaced(fuzz_client: FlaskClient, name: str, value: str) -> None:
    headers = {**headers_for(), name: value}
    check(post(fuzz_client, encode(message()), headers))
