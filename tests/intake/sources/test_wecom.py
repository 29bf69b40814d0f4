"""``wecom`` source: the official WXBizMsgCrypt vectors, every event kind, bad input, dedupe.

Signatures here are computed with ``hashlib`` directly and messages sealed with
``MsgCrypt`` (itself pinned to the official vectors in ``test_msgcrypt.py``), so a
mistake in the source cannot cancel itself out. Everything past the unit checks goes
through the real receiver (Flask test client) and a real Redis.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlencode

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import given
from hypothesis import strategies as st

from relay.config.loader import parse_config
from relay.errors import ConfigError, Unauthorized
from relay.intake.sources import wecom
from relay.intake.sources.base import InboundRequest
from relay.intake.sources.msgcrypt import MsgCrypt
from relay.intake.sources.wecom_payloads import to_event
from relay.state import keys
from tests.intake.sources.support import (
    FUZZ,
    LATIN1,
    assert_refused,
    build_source,
    fuzz_answer,
    stored_event,
)

# sbzhu/weworkapi_python: callback/Sample.py
TOKEN = "hJqcu3uJ9Tn2gXPmxx2w9kkCkCE2EPYo"
KEY = "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt"
CORP = "ww1436e0e65a779aee"
GET_SIG, GET_TS, GET_NONCE = "012bc692d0a58dd4b10f8dfe5c4ac00ae211ebeb", "1476416373", "47744683"
GET_ECHOSTR = (
    "fsi1xnbH4yQh0+PJxcOdhhK6TDXkjMyhEPA7xB2TGz6b+g7xyAbEkRxN/3cNXW9qdqjnoVzEtpbhnFyq6SVHyA=="
)
POST_SIG, POST_TS, POST_NONCE = (
    "0c3914025cb4b4d68103f6bfc8db550f79dcf48e",
    "1476422779",
    "1597212914",
)
POST_ENCRYPT = (
    "Kl7kjoSf6DMD1zh7rtrHjFaDapSCkaOnwu3bqLc5tAybhhMl9pFeK8NslNPVdMwmBQTNoW4mY7AIjeLvEl3NyeTkAgG"
    "zBhzTtRLNshw2AEew+kkYcD+Fq72Kt00fT0WnN87hGrW8SqGc+NcT3mu87Ha3dz1pSDi6GaUA6A0sqfde0VJPQbZ9U+"
    "3JWcoD4Z5jaU0y9GSh010wsHF8KZD24YhmZH4ch4Ka7ilEbjbfvhKkNL65HHL0J6EYJIZUC2pFrdkJ7MhmEbU2qARR4"
    "iQHE7wy24qy0cRX3Mfp6iELcDNfSsPGjUQVDGxQDCWjayJOpcwocugux082f49HKYg84EpHSGXAyh+/oxwaWbvL6aSDP"
    "OYuPDGOCI8jmnKiypE+"
)
POST_BODY = (
    f"<xml><ToUserName><![CDATA[{CORP}]]></ToUserName>\n<Encrypt><![CDATA[{POST_ENCRYPT}]]>"
    "</Encrypt>\n<AgentID><![CDATA[1000002]]></AgentID>\n</xml>"
).encode()
POST_PLAIN = (
    "<xml><ToUserName>ww1436e0e65a779aee</ToUserName><FromUserName>ChenJiaShun</FromUserName>"
    "<CreateTime>1476422779</CreateTime><MsgType>text</MsgType><Content>你好</Content>"
    "<MsgId>1456453720</MsgId><AgentID>1000002</AgentID></xml>"
)
# The file's *comment* (the doc-91144 example): it verifies with token "QDG6eK" only.
DOC_QUERY = (
    "msg_signature=5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3&timestamp=1409659589&nonce=263014780"
    "&echostr=P9nAzCzyDtyTWESHep1vC5X9xho%2FqYX3Zpb4yKa9SKld1DsH3Iyt3tP3zNdtp%2B4RPcs8TgAE7OaBO"
    "%2BFZXvnaqQ%3D%3D"
)
# sbzhu/weworkapi_python: callback_json/Sample.py; the plaintext it seals is not valid JSON.
JSON_SIG, JSON_TS, JSON_NONCE = (
    "e3647471e395139e2308c1fa963f2d648a00b90e",
    "1409659813",
    "1372623149",
)
JSON_BODY = (
    b'{ "ToUserName": "wx5823bf96d3bd56c7", "Encrypt": "cjhLUX7UU4yCSelv1vz7T0zT8huF51bAMVWriNvO1F'
    b"MegHrQZNrtvRxbwf0fUPsFvwqR0U0fgiJNEA5Y30F2MoI2S7vv3EjVQ68C0cjw9frBoUE2Hj0BvFp9h3u6Vbsg4lc1C8"
    b"AtHdaN8orKuNKkLRLuYEL52R1J3v8olJGZRLnRdVKIivixmX/eQpzgeExtp20jI1HxRP1AAZ6xZoILdqDPO549LO4WeG"
    b'+685JRUTdiwcY5fjZlqeMxuT4PpMn1X9OWsS7NRj06Wa5E3Tvg4twjWp39KPfOdRte6P1T4JU=", "AgentID": 218 }'
)
OTHER_KEY = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
BASE = {"kind": "wecom", "token": TOKEN, "encoding_aes_key": KEY, "corp_id": CORP}
SOURCES: list[dict[str, Any]] = [
    {"id": "wc", **BASE},
    {"id": "vec", **BASE, "tolerance": "100000d"},  # replays the 2016 vectors
    {"id": "bot", **BASE, "corp_id": ""},  # 智能机器人: ReceiveId ""
    {"id": "doc", **BASE, "token": "QDG6eK", "encoding_aes_key": OTHER_KEY, "tolerance": "100000d"},
]
SOURCES[3]["corp_id"] = "wx5823bf96d3bd56c7"
Request = dict[str, Any]


def sha1_signature(token: str, ts: str, nonce: str, encrypt: str) -> str:
    return hashlib.sha1("".join(sorted([token, ts, nonce, encrypt])).encode()).hexdigest()


def xml(fields: dict[str, Any]) -> bytes:
    """A WeCom XML message; a list value becomes ``<Item>`` children."""
    out = []
    for tag, value in fields.items():
        if isinstance(value, list):
            items = "".join(f"<Item><![CDATA[{v}]]></Item>" for v in value)
            out.append(f"<{tag}>{items}</{tag}>")
        elif isinstance(value, int):
            out.append(f"<{tag}>{value}</{tag}>")
        else:
            out.append(f"<{tag}><![CDATA[{value}]]></{tag}>")
    return ("<xml>" + "".join(out) + "</xml>").encode()


def build(
    plain: bytes | None = None,
    *,
    encrypt: str | None = None,
    fmt: str = "xml",
    token: str = TOKEN,
    corp: str = CORP,
    ts: int | None = None,
) -> Request:
    """A POST as WeCom sends it: ``plain`` sealed, wrapped and signed in the query."""
    if encrypt is None:
        encrypt = MsgCrypt(KEY, corp).encrypt(plain or b"")
    stamp = str(int(time.time()) if ts is None else ts)
    nonce = "1597212914"
    query = {
        "msg_signature": sha1_signature(token, stamp, nonce, encrypt),
        "timestamp": stamp,
        "nonce": nonce,
    }
    if fmt == "json":
        body = json.dumps({"tousername": corp, "encrypt": encrypt, "agentid": 1000002}).encode()
        return {"query": query, "body": body, "headers": {"Content-Type": "application/json"}}
    body = xml({"ToUserName": corp, "Encrypt": encrypt, "AgentID": "1000002"})
    return {"query": query, "body": body, "headers": {"Content-Type": "text/xml"}}


def send(client: FlaskClient, r: Request, source_id: str = "wc") -> Any:
    query = r["query"] if isinstance(r["query"], str) else urlencode(r["query"])
    return client.post(f"/hooks/{source_id}?{query}", data=r["body"], headers=r["headers"])


def stored(redis_client: redis.Redis, response: Any) -> dict[str, Any]:
    return stored_event(redis_client, response.headers["X-Relay-Event-Id"])


def source(**options: Any) -> wecom.WecomSource:
    return build_source(wecom.WecomSource, {"id": "wc", **BASE, **options})


# -- the official vectors ------------------------------------------------------------------


def test_url_check_vector_through_receiver(client: FlaskClient) -> None:
    query = urlencode(
        {"msg_signature": GET_SIG, "timestamp": GET_TS, "nonce": GET_NONCE, "echostr": GET_ECHOSTR}
    )
    response = client.get(f"/hooks/vec?{query}")
    assert response.status_code == 200
    assert response.get_data() == b"1288432023552776189"  # no quotes, BOM or newline
    assert response.headers["Content-Type"] == "text/plain"


def test_url_check_with_unencoded_plus(client: FlaskClient) -> None:
    """A '+' left unencoded reads as a space; base64 has none, so it is restored."""
    query = f"msg_signature={GET_SIG}&timestamp={GET_TS}&nonce={GET_NONCE}&echostr={GET_ECHOSTR}"
    response = client.get(f"/hooks/vec?{query}")
    assert response.status_code == 200 and response.get_data() == b"1288432023552776189"


def test_doc_example_url_encoded(client: FlaskClient) -> None:
    """The doc-91144 request verbatim (URL-encoded echostr), with the doc's own token.

    Regression anchor: the plaintext was computed by us with the doc's classic key
    and corp id (wx5823bf96d3bd56c7); the signature is the doc's.
    """
    response = client.get(f"/hooks/doc?{DOC_QUERY}")
    assert response.status_code == 200
    assert response.get_data() == b"1616140317555161061"


def test_trap_comment_vector_does_not_verify_with_sample_token(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    assert_refused(client.get(f"/hooks/vec?{DOC_QUERY}"), 401, "invalid_signature", redis_client)


def test_url_check_vector_is_stale_under_the_default_window(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    """The URL check is signed like an event, so it gets the event's window."""
    query = urlencode(
        {"msg_signature": GET_SIG, "timestamp": GET_TS, "nonce": GET_NONCE, "echostr": GET_ECHOSTR}
    )
    assert_refused(client.get(f"/hooks/wc?{query}"), 401, "stale_timestamp", redis_client)


def test_captured_post_sent_as_get_is_not_decrypted(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    """The official POST's signature, timestamp, nonce and Encrypt as a URL check: the
    signature verifies (it covers the same four values), but the plaintext is a message,
    not an echostr, so it must not come back in clear."""
    query = urlencode(
        {"msg_signature": POST_SIG, "timestamp": POST_TS, "nonce": POST_NONCE,
         "echostr": POST_ENCRYPT}
    )  # fmt: skip
    response = client.get(f"/hooks/vec?{query}")
    assert_refused(response, 400, "invalid_echostr", redis_client)
    assert "你好".encode() not in response.get_data()
    assert b"ChenJiaShun" not in response.get_data()


@pytest.mark.parametrize("fmt", ["xml", "json"])
def test_fresh_captured_event_sent_as_get_is_not_decrypted(
    client: FlaskClient, redis_client: redis.Redis, fmt: str
) -> None:
    """A POST captured just now (inside the window) replayed as a GET."""
    plain = (
        xml({**APP, "Content": "secret plan"})
        if fmt == "xml"
        else json.dumps(
            {"msgid": "m1", "msgtype": "text", "text": {"content": "secret plan"}}
        ).encode()
    )
    r = build(plain, fmt=fmt)
    envelope = r["body"]
    encrypt = (
        json.loads(envelope)["encrypt"]
        if fmt == "json"
        else envelope.split(b"<Encrypt><![CDATA[")[1].split(b"]]>")[0].decode()
    )
    response = client.get(f"/hooks/wc?{urlencode({**r['query'], 'echostr': encrypt})}")
    assert_refused(response, 400, "invalid_echostr", redis_client)
    assert b"secret plan" not in response.get_data()
    assert send(client, r).status_code == 200  # the same request as a POST is an event


def test_post_vector_signature_and_plaintext() -> None:
    assert sha1_signature(TOKEN, POST_TS, POST_NONCE, POST_ENCRYPT) == POST_SIG
    assert MsgCrypt(KEY, CORP).decrypt(POST_ENCRYPT).decode() == POST_PLAIN


def test_post_vector_verifies_at_pinned_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wecom.time, "time", lambda: int(POST_TS) + 299)
    args = {"msg_signature": [POST_SIG], "timestamp": [POST_TS], "nonce": [POST_NONCE]}
    request = InboundRequest("POST", {"content-type": ["text/xml"]}, POST_BODY, args)
    src = source()
    src.verify(request)
    parsed = src.parse(request)
    assert parsed.event.text == "你好" and parsed.dedupe_key == "msg:1456453720"
    monkeypatch.setattr(wecom.time, "time", lambda: int(POST_TS) + 301)
    with pytest.raises(Unauthorized) as caught:
        src.verify(request)
    assert caught.value.code == "stale_timestamp"


def test_post_vector_through_receiver(client: FlaskClient, redis_client: redis.Redis) -> None:
    r = {
        "query": {"msg_signature": POST_SIG, "timestamp": POST_TS, "nonce": POST_NONCE},
        "body": POST_BODY,
        "headers": {"Content-Type": "text/xml"},
    }
    response = send(client, r, "vec")
    assert response.status_code == 200
    assert response.get_data() == b""
    event = stored(redis_client, response)
    assert event["type"] == "message.created" and event["text"] == "你好"
    assert event["sender"]["id"] == "ChenJiaShun" and event["group"]["id"] == "1000002"
    assert event["message_id"] == "1456453720" and event["mentions_bot"] is True
    assert event["occurred_at"] == "2016-10-14T05:26:19Z"
    assert event["raw"]["Content"] == "你好" and event["raw"]["MsgType"] == "text"
    assert redis_client.llen(keys.FANOUT_QUEUE) == 1
    # The same vector under the default 5-minute window is a replay.
    stale = send(client, r, "wc")
    assert stale.status_code == 401 and stale.get_json()["error"] == "stale_timestamp"


def test_json_sample_vector_verifies_but_its_plaintext_is_not_json(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    """callback_json/Sample.py: signature and decryption pass; the sealed text has a typo."""
    assert MsgCrypt(KEY, CORP).decrypt(json.loads(JSON_BODY)["Encrypt"]).startswith(b"{ ")
    r = {
        "query": {"msg_signature": JSON_SIG, "timestamp": JSON_TS, "nonce": JSON_NONCE},
        "body": JSON_BODY,
        "headers": {"Content-Type": "application/json"},
    }
    assert_refused(send(client, r, "vec"), 400, "invalid_json", redis_client)


# -- every event kind ------------------------------------------------------------------------

NOW = 1700000000
APP = {"ToUserName": CORP, "FromUserName": "ada", "CreateTime": NOW}
CHAT = {**APP, "FromUserName": "sys", "MsgType": "event", "Event": "change_external_chat"}
KINDS: dict[str, tuple[bytes, dict[str, Any]]] = {
    "text": (
        xml({**APP, "MsgType": "text", "Content": " hi\nthere ", "MsgId": 11, "AgentID": 7}),
        {"type": "message.created", "text": " hi\nthere ", "group": "7", "sender": "ada"},
    ),
    "image": (
        xml({**APP, "MsgType": "image", "PicUrl": "https://p/1.jpg", "MediaId": "M1", "MsgId": 12}),
        {"type": "file.shared", "files": [("image-12", "M1", "https://p/1.jpg")]},
    ),
    "voice": (
        xml({**APP, "MsgType": "voice", "MediaId": "M2", "Format": "amr", "MsgId": 13}),
        {"type": "file.shared", "files": [("voice-13.amr", "M2", None)]},
    ),
    "video": (
        xml({**APP, "MsgType": "video", "MediaId": "M3", "ThumbMediaId": "T", "MsgId": 14}),
        {"type": "file.shared", "files": [("video-14", "M3", None)]},
    ),
    "file": (
        xml({**APP, "MsgType": "file", "MediaId": "M4", "MsgId": 15}),
        {"type": "file.shared", "files": [("file-15", "M4", None)]},
    ),
    "link": (
        xml({**APP, "MsgType": "link", "Title": "T", "Description": "D", "Url": "https://u"}),
        {"type": "message.created", "text": "T\nD\nhttps://u"},
    ),
    "location": (
        xml({**APP, "MsgType": "location", "Location_X": "23.1", "Location_Y": "113.3"}),
        {"type": "custom", "sender": "ada"},
    ),
    "member joined": (
        xml({**CHAT, "ChatId": "wrCHAT", "ChangeType": "update", "UpdateDetail": "add_member",
             "JoinScene": 1, "MemChangeCnt": 2, "MemChangeList": ["Jack", "Rose"]}),
        {"type": "member.joined", "group": "wrCHAT", "mentions": ["Jack", "Rose"], "sender": None},
    ),
    "member left (old format)": (
        xml({**CHAT, "ChatId": "wrCHAT", "ChangeType": "update", "UpdateDetail": "del_member",
             "QuitScene": 0, "MemChangeList": "Jack,Rose"}),
        {"type": "member.left", "group": "wrCHAT", "mentions": ["Jack", "Rose"]},
    ),
    "renamed": (
        xml({**CHAT, "ChatId": "wrCHAT", "ChangeType": "update", "UpdateDetail": "change_name"}),
        {"type": "group.updated", "group": "wrCHAT", "mentions": []},
    ),
    "created": (
        xml({**CHAT, "ChatId": "wrNEW", "ChangeType": "create"}),
        {"type": "group.updated", "group": "wrNEW"},
    ),
    "dismissed": (
        xml({**CHAT, "ChatId": "wrOLD", "ChangeType": "dismiss"}),
        {"type": "group.updated", "group": "wrOLD"},
    ),
    "contact change": (
        xml({**APP, "FromUserName": "sys", "MsgType": "event", "Event": "change_contact",
             "ChangeType": "create_user", "UserID": "zhangsan"}),
        {"type": "custom", "sender": None, "group": None},  # the envelope is not signed
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", list(KINDS))
def test_event_kinds(client: FlaskClient, redis_client: redis.Redis, name: str) -> None:
    plain, expected = KINDS[name]
    response = send(client, build(plain))
    assert response.status_code == 200, response.get_data(as_text=True)
    event = stored(redis_client, response)
    assert event["type"] == expected["type"]
    assert event["occurred_at"] == "2023-11-14T22:13:20Z"
    assert event["raw"]["CreateTime"] == str(NOW)
    if "text" in expected:
        assert event["text"] == expected["text"]
    if "group" in expected:
        assert (event["group"] or {}).get("id") == expected["group"]
    if "sender" in expected:
        assert (event["sender"] or {}).get("id") == expected["sender"]
    if "mentions" in expected:
        assert [m["id"] for m in event["mentions"]] == expected["mentions"]
    if "files" in expected:
        assert [(f["name"], f["ref"], f["url"]) for f in event["files"]] == expected["files"]
        assert event["message_id"] and event["mentions_bot"] is True


def test_message_quoting_a_doctype_is_kept(client: FlaskClient, redis_client: redis.Redis) -> None:
    """Only the envelope is screened as text; a chat message may quote HTML."""
    quoted = "<!DOCTYPE html><!ENTITY x> & ]]"
    plain = xml({**APP, "MsgType": "text", "Content": quoted, "MsgId": 8})
    response = send(client, build(plain))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert stored(redis_client, response)["text"] == quoted


def test_json_envelope_and_json_message(client: FlaskClient, redis_client: redis.Redis) -> None:
    """The JSON callback variant: ``{"tousername","encrypt","agentid"}`` around JSON."""
    plain = json.dumps(
        {"ToUserName": CORP, "FromUserName": "ada", "CreateTime": NOW, "MsgType": "text",
         "Content": "json hi", "MsgId": 4561255354251345929, "AgentID": 218}
    ).encode()  # fmt: skip
    response = send(client, build(plain, fmt="json"))
    assert response.status_code == 200
    event = stored(redis_client, response)
    assert (event["type"], event["text"], event["group"]["id"]) == (
        "message.created",
        "json hi",
        "218",
    )
    assert event["message_id"] == "4561255354251345929"


def test_content_type_sniffed_when_absent(client: FlaskClient, redis_client: redis.Redis) -> None:
    for fmt, content_type in (("xml", ""), ("json", "text/plain")):
        r = build(xml({**APP, "MsgType": "text", "Content": fmt, "MsgId": fmt}), fmt=fmt)
        r["headers"] = {"Content-Type": content_type} if content_type else {}
        assert send(client, r).status_code == 200
    assert redis_client.llen(keys.FANOUT_QUEUE) == 2


BOT = {"msgid": "CAIQ16HMjQYY", "aibotid": "AIBOT", "chattype": "group", "chatid": "wrGROUP",
       "from": {"userid": "ada"}, "response_url": "https://r", "create_time": NOW}  # fmt: skip


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ({**BOT, "msgtype": "text", "text": {"content": "@Bot hello"}},
         ("message.created", "@Bot hello", 0)),
        ({**BOT, "msgtype": "mixed", "mixed": {"msg_item": [
            {"msgtype": "text", "text": {"content": "look"}},
            {"msgtype": "image", "image": {"url": "https://img/1"}}]}},
         ("message.created", "look", 1)),
        ({**BOT, "chattype": "single", "chatid": None, "msgtype": "file",
          "file": {"url": "https://f/1"}}, ("file.shared", None, 1)),
        ({**BOT, "msgtype": "event", "event": {"eventtype": "enter_chat"}}, ("custom", None, 0)),
    ],
)  # fmt: skip
def test_bot_messages(
    client: FlaskClient,
    redis_client: redis.Redis,
    message: dict[str, Any],
    expected: tuple[Any, ...],
) -> None:
    """智能机器人 callbacks: JSON ``{"encrypt"}`` sealed for ReceiveId "" (corp_id: "")."""
    encrypt = MsgCrypt(KEY, "").encrypt(json.dumps(message).encode())
    r = build(encrypt=encrypt, fmt="json")
    r["body"] = json.dumps({"encrypt": encrypt}).encode()
    response = send(client, r, "bot")
    assert response.status_code == 200, response.get_data(as_text=True)
    event = stored(redis_client, response)
    assert (event["type"], event["text"], len(event["files"])) == expected
    assert event["sender"]["id"] == "ada" and event["message_id"] == "CAIQ16HMjQYY"
    assert event["group"]["id"] == (message["chatid"] or "AIBOT")
    assert event["mentions_bot"] is (expected[0] != "custom")


# -- dedupe and the reply ----------------------------------------------------------------------


def test_resent_message_is_queued_once(client: FlaskClient, redis_client: redis.Redis) -> None:
    plain = xml({**APP, "MsgType": "text", "Content": "once", "MsgId": 99, "AgentID": 7})
    first = send(client, build(plain))
    assert (first.status_code, first.get_data(), first.mimetype) == (200, b"", "text/plain")
    for _ in range(3):  # WeCom retries: fresh seal, nonce and signature, same message
        again = send(client, build(plain))
        assert (again.status_code, again.get_data()) == (200, b"")
        assert again.headers["X-Relay-Event-Id"] == first.headers["X-Relay-Event-Id"]
    assert redis_client.llen(keys.FANOUT_QUEUE) == 1
    ttl = redis_client.ttl(keys.dedupe("wc", "msg:99"))
    assert 86400 - 60 < ttl <= 86400


def test_events_without_msgid_dedupe_on_their_fields(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    joined = KINDS["member joined"][0]
    renamed = KINDS["renamed"][0]  # same chat and second, another change
    ids = {send(client, build(p)).headers["X-Relay-Event-Id"] for p in (joined, joined, renamed)}
    assert len(ids) == 2
    assert redis_client.llen(keys.FANOUT_QUEUE) == 2


# -- the bad-input matrix ------------------------------------------------------------------------

TEXT = xml({**APP, "MsgType": "text", "Content": "x", "MsgId": 5})


def _flip(text: str, index: int) -> str:
    raw = bytearray(text.encode())
    raw[index] ^= 0x01
    return raw.decode()


def _query(**changes: str | None) -> Callable[[Request], Request]:
    def mutate(r: Request) -> Request:
        query = {**r["query"], **changes}
        r["query"] = {k: v for k, v in query.items() if v is not None}
        return r

    return mutate


def _signed(encrypt: str) -> Callable[[Request], Request]:
    """A correctly signed request around ``encrypt``: only decryption can refuse it."""
    return lambda r: build(encrypt=encrypt)


def _body(new: bytes, content_type: str = "text/xml") -> Callable[[Request], Request]:
    """Another body: the envelope is read before the signature can be checked."""
    return lambda r: {**r, "body": new, "headers": {"Content-Type": content_type}}


def _sealed(plain: bytes, key: str = KEY, corp: str = CORP) -> str:
    return MsgCrypt(key, corp).encrypt(plain, prefix=b"0123456789abcdef")


LAUGHS = (
    b'<!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;">]>'
    b"<xml><Encrypt>&b;</Encrypt></xml>"
)
GOOD = _sealed(TEXT)
FORM = "application/x-www-form-urlencoded"
BLOCKS = base64.b64decode(GOOD)
NOW_S = int(time.time())
MATRIX: dict[str, tuple[Callable[[Request], Request], int, str | None]] = {
    "encrypt bit flip": (
        lambda r: {**r, "body": r["body"].replace(b"<Encrypt><![CDATA[", b"<Encrypt><![CDATA[A")},
        401, "invalid_signature"),
    "body bit flip in Encrypt": (
        lambda r: {**r, "body": r["body"].replace(b"![CDATA[" + GOOD[:8].encode(),
                                                  b"![CDATA[" + _flip(GOOD[:8], 3).encode())},
        401, "invalid_signature"),
    "timestamp changed": (lambda r: _query(timestamp=str(int(r["query"]["timestamp"]) - 1))(r),
                          401, "invalid_signature"),
    "nonce changed": (_query(nonce="1"), 401, "invalid_signature"),
    "signature bit flip": (lambda r: _query(msg_signature=_flip(r["query"]["msg_signature"], 5))(r),
                           401, "invalid_signature"),
    "signature upper case": (lambda r: _query(msg_signature=r["query"]["msg_signature"].upper())(r),
                             200, None),
    "wrong token": (lambda r: build(TEXT, token="another-token"), 401, "invalid_signature"),
    "stale timestamp": (lambda r: build(TEXT, ts=NOW_S - 3600), 401, "stale_timestamp"),
    "future timestamp": (lambda r: build(TEXT, ts=NOW_S + 3600), 401, "stale_timestamp"),
    "timestamp in ms": (_query(timestamp=str(NOW_S * 1000)), 401, "invalid_timestamp"),
    "timestamp not digits": (_query(timestamp="yesterday"), 401, "invalid_timestamp"),
    "timestamp superscript": (_query(timestamp="12²"), 401, "invalid_timestamp"),
    "missing signature": (_query(msg_signature=None), 401, "missing_signature"),
    "missing timestamp": (_query(timestamp=None), 401, "missing_signature"),
    "missing nonce": (_query(nonce=None), 401, "missing_signature"),
    "empty signature": (_query(msg_signature=""), 401, "missing_signature"),
    "repeated nonce": (lambda r: {**r, "query": urlencode(r["query"]) + "&nonce=2"}, 400, None),
    "wrong corp id": (lambda r: build(TEXT, corp="wwANOTHERCORP"), 401, "corp_id_mismatch"),
    "wrong aes key": (_signed(_sealed(TEXT, key=OTHER_KEY)), 400, "undecryptable"),
    "malformed base64": (_signed("not*base64!"), 400, "undecryptable"),
    "base64 without its padding": (_signed(base64.b64encode(BLOCKS + b"x").decode().rstrip("=")),
                                   400, "undecryptable"),
    "base64 padding mid-string": (_signed(GOOD[:8] + "==" + GOOD[8:]), 400, "undecryptable"),
    "truncated ciphertext": (_signed(base64.b64encode(BLOCKS[:-8]).decode()), 400, "undecryptable"),
    "ciphertext a block short": (_signed(base64.b64encode(BLOCKS[:-16]).decode()), 400,
                                 "undecryptable"),
    "bad pkcs7 padding": (_signed(base64.b64encode(BLOCKS[:-32]).decode()), 400, "undecryptable"),
    "form content type": (lambda r: {**r, "headers": {"Content-Type": FORM}},
                          415, "unsupported_media_type"),
    "image content type": (lambda r: {**r, "headers": {"Content-Type": "image/png"}}, 415, None),
    "xml sent as json": (lambda r: {**r, "headers": {"Content-Type": "application/json"}},
                         400, "invalid_json"),
    "malformed xml": (_body(b"<xml><Encrypt>abc</xml>"), 400, "invalid_xml"),
    "not utf-8": (_body(b"<xml><Encrypt>\xff\xfe</Encrypt></xml>"), 400, "invalid_xml"),
    "billion laughs": (_body(LAUGHS), 400, "forbidden_xml"),
    "external entity": (_body(b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><xml/>'),
                        400, "forbidden_xml"),
    "lower-case doctype": (_body(b"<!doctype xml><xml/>"), 400, "invalid_xml"),
    "deeply nested xml": (_body(b"<a>" * 5000 + b"</a>" * 5000), 400, "invalid_xml"),
    "missing Encrypt": (_body(b"<xml><ToUserName>x</ToUserName></xml>"), 400, "missing_encrypt"),
    "empty body": (_body(b""), 400, "invalid_xml"),
    "json array": (_body(b"[1]", "application/json"), 400, "missing_encrypt"),
    "json encrypt not text": (_body(b'{"encrypt": 5}', "application/json"), 400, "missing_encrypt"),
    "plaintext not xml or json": (_signed(_sealed(b"hello")), 400, "invalid_message"),
    "plaintext not utf-8": (_signed(_sealed(b"<xml>\xff</xml>")), 400, "invalid_message"),
    "plaintext with doctype": (_signed(_sealed(b"<!DOCTYPE xml><xml/>")), 400, "forbidden_xml"),
    "plaintext with entities": (_signed(_sealed(b"<!-- <a -->" + LAUGHS)), 400, "forbidden_xml"),
    "plaintext json array": (_signed(_sealed(b"[]")), 400, "invalid_message"),
    "CreateTime not a time": (_signed(_sealed(xml({**APP, "CreateTime": "soon"}))), 422,
                              "invalid_event"),
    "CreateTime huge": (_signed(_sealed(xml({**APP, "CreateTime": "9" * 40}))), 422,
                        "invalid_event"),
    "sender id too long": (_signed(_sealed(xml({**APP, "FromUserName": "u" * 300}))), 422,
                           "invalid_event"),
}  # fmt: skip


@pytest.mark.parametrize("name", list(MATRIX))
def test_bad_input_matrix(client: FlaskClient, redis_client: redis.Redis, name: str) -> None:
    mutate, status, code = MATRIX[name]
    response = send(client, mutate(build(encrypt=GOOD)))
    if status == 200:
        assert response.status_code == 200
        return
    assert_refused(response, status, code, redis_client)
    assert not redis_client.exists(keys.dedupe("wc", "msg:5"))


def _url_check(
    echostr: str, *, token: str = TOKEN, ts: str | None = None, **changes: str | None
) -> str:
    """A URL check signed now (or at ``ts``); ``changes`` replace query values afterwards."""
    stamp = ts or str(int(time.time()))
    query = {"timestamp": stamp, "nonce": "2", "echostr": echostr}
    query["msg_signature"] = sha1_signature(token, stamp, "2", echostr)
    query.update(changes)
    return urlencode({k: v for k, v in query.items() if v is not None})


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [  # built when each case runs: a signed-now query goes stale in a long run
        (lambda: _url_check(GET_ECHOSTR), 200, None),
        (lambda: _url_check(GET_ECHOSTR, ts="1"), 401, "stale_timestamp"),
        (lambda: _url_check(GET_ECHOSTR, ts=str(int(time.time()) + 3600)), 401, "stale_timestamp"),
        (lambda: _url_check(GET_ECHOSTR, timestamp="soon"), 401, "invalid_timestamp"),
        (lambda: _url_check(_sealed(b"<xml><Content>hi</Content></xml>")), 400, "invalid_echostr"),
        (lambda: _url_check(_sealed(b'{"msgid": "1"}')), 400, "invalid_echostr"),
        (lambda: _url_check(_sealed(b"")), 400, "invalid_echostr"),
        (lambda: _url_check(_sealed(b"12 34")), 400, "invalid_echostr"),
        (lambda: _url_check(_sealed(b"9" * 129)), 400, "invalid_echostr"),
        (lambda: _url_check(GET_ECHOSTR, token="other"), 401, "invalid_signature"),
        (lambda: _url_check(GET_ECHOSTR, nonce=None), 401, "missing_signature"),
        (lambda: _url_check(GET_ECHOSTR, msg_signature="0" * 40), 401, "invalid_signature"),
        (lambda: _url_check("not base64!"), 400, "undecryptable"),
        (lambda: _url_check(_sealed(b"42", corp="wwANOTHERCORP")), 401, "corp_id_mismatch"),
        (lambda: _url_check(_sealed(b"42", key=OTHER_KEY)), 400, "undecryptable"),
        (lambda: "", 405, "method_not_allowed"),  # a GET without echostr is not a URL check
        (lambda: "nonce=1", 405, "method_not_allowed"),
    ],
)
def test_url_check_matrix(
    client: FlaskClient, query: Callable[[], str], status: int, code: str | None
) -> None:
    response = client.get(f"/hooks/wc?{query()}")
    assert response.status_code == status, response.get_data(as_text=True)
    if code:
        assert response.get_json()["error"] == code
    else:
        assert response.get_data() == b"1288432023552776189"


# -- options and sample --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"encoding_aes_key": KEY[:-1]}, "sources[0].encoding_aes_key: must be 43 characters"),
        ({"encoding_aes_key": "!" * 43}, "sources[0].encoding_aes_key: is not base64"),
        ({"token": ""}, "sources[0].token:"),
        ({"corp_id": None}, "sources[0].corp_id:"),
        ({"tolerance": "0s"}, "sources[0].tolerance:"),
        ({"agent_id": "1"}, "sources[0].agent_id: unknown key"),
    ],
)
def test_config_errors(options: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"sources": [{"id": "wc", **BASE, **options}]})
    assert any(p.startswith(problem) for p in caught.value.problems), caught.value.problems
    assert not any(KEY[:-1] in p or TOKEN in p for p in caught.value.problems)


def test_secrets_stay_out_of_repr() -> None:
    text = repr(source().options)
    assert TOKEN not in text and KEY not in text and CORP in text


def test_sample_is_accepted(app: Flask, client: FlaskClient, redis_client: redis.Redis) -> None:
    sample = app.extensions["relay"].sources["wc"].sample()
    assert sample.path_suffix.startswith("?msg_signature=")
    response = client.post(
        f"/hooks/wc{sample.path_suffix}", data=sample.body, headers=sample.headers
    )
    assert (response.status_code, response.get_data()) == (200, b"")
    event = stored(redis_client, response)
    assert event["type"] == "message.created" and event["text"] == wecom.SAMPLE_TEXT
    again = app.extensions["relay"].sources["wc"].sample()  # a fresh MsgId: a new event
    client.post(f"/hooks/wc{again.path_suffix}", data=again.body, headers=again.headers)
    assert redis_client.llen(keys.FANOUT_QUEUE) == 2


def test_sample_with_json_body(app: Flask, client: FlaskClient, redis_client: redis.Redis) -> None:
    body = json.dumps({"MsgType": "text", "Content": "from a file", "MsgId": "f1"}).encode()
    sample = app.extensions["relay"].sources["wc"].sample(body)
    assert json.loads(sample.body)["encrypt"]
    response = client.post(
        f"/hooks/wc{sample.path_suffix}", data=sample.body, headers=sample.headers
    )
    assert stored(redis_client, response)["text"] == "from a file"


# -- property tests: never a 5xx -------------------------------------------------------------------

query_values = st.one_of(
    st.none(),
    st.text(LATIN1, max_size=80),
    st.from_regex(r"\A[0-9a-f]{0,44}\Z"),
    st.integers(min_value=-(10**15), max_value=10**15).map(str),
)
content_types = st.sampled_from(
    [
        "text/xml",
        "application/xml",
        "application/json",
        "text/plain",
        "",
        "application/x-www-form-urlencoded",
    ]
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(
        st.sampled_from(["MsgType", "Content", "MsgId", "CreateTime", "FromUserName", "ChatId",
                         "MemChangeList", "msgtype", "text", "from", "mixed", "chatid", "Item"])
        | st.text(max_size=8),
        children,
        max_size=5,
    ),
    max_leaves=20,
)  # fmt: skip


def check(response: Any) -> None:
    """The property: below 500; a 200 is WeCom's empty ack, an error is the relay's JSON."""
    body = fuzz_answer(response)
    if response.status_code == 200:
        assert response.get_data() == b""
    else:
        assert body is not None and response.status_code >= 400, response.get_data(as_text=True)


@FUZZ
@given(body=st.binary(max_size=1500), content_type=content_types, data=st.data())
def test_unsigned_garbage(
    fuzz_client: FlaskClient, body: bytes, content_type: str, data: st.DataObject
) -> None:
    query = {n: data.draw(query_values, label=n) for n in ("msg_signature", "timestamp", "nonce")}
    qs = urlencode({k: v for k, v in query.items() if v is not None})
    response = fuzz_client.post(
        f"/hooks/wc?{qs}", data=body, headers={"Content-Type": content_type}
    )
    check(response)
    assert response.status_code >= 400


@FUZZ
@given(plain=st.binary(max_size=1500), source_id=st.sampled_from(["wc", "bot"]))
def test_signed_and_encrypted_bytes(
    fuzz_app: Flask, fuzz_client: FlaskClient, plain: bytes, source_id: str
) -> None:
    sample = fuzz_app.extensions["relay"].sources[source_id].sample(plain)
    url = f"/hooks/{source_id}{sample.path_suffix}"
    check(fuzz_client.post(url, data=sample.body, headers=sample.headers))


@FUZZ
@given(value=json_values, as_xml=st.booleans())
def test_signed_and_encrypted_messages(
    fuzz_app: Flask, fuzz_client: FlaskClient, value: Any, as_xml: bool
) -> None:
    """Arbitrary JSON, or the same keys as XML elements, sealed correctly: 200/400/422."""
    if as_xml and isinstance(value, dict):
        plain = xml(
            {
                k: v if isinstance(v, str | int | list) else json.dumps(v)
                for k, v in value.items()
                if k.isidentifier()
            }
        )
    else:
        plain = json.dumps(value).encode()
    sample = fuzz_app.extensions["relay"].sources["wc"].sample(plain)
    response = fuzz_client.post(
        f"/hooks/wc{sample.path_suffix}", data=sample.body, headers=sample.headers
    )
    check(response)
    assert response.status_code in (200, 400, 422)


@FUZZ
@given(
    name=st.sampled_from(["msg_signature", "timestamp", "nonce", "echostr"]),
    value=query_values,
    method=st.sampled_from(["GET", "POST"]),
)
def test_one_query_value_replaced(
    fuzz_app: Flask, fuzz_client: FlaskClient, name: str, value: str | None, method: str
) -> None:
    """A valid URL check or event with one query value swapped for anything."""
    if method == "GET":
        query = {"msg_signature": GET_SIG, "timestamp": GET_TS, "nonce": GET_NONCE,
                 "echostr": GET_ECHOSTR}  # fmt: skip
        body, headers = b"", {}
    else:
        sample = fuzz_app.extensions["relay"].sources["wc"].sample()
        query = {k: v[0] for k, v in parse_qs(sample.path_suffix[1:]).items()}
        body, headers = sample.body, sample.headers
    query[name] = value  # type: ignore[assignment]
    qs = urlencode({k: v for k, v in query.items() if v is not None})
    source_id = "vec" if method == "GET" else "wc"  # the 2016 URL-check vector needs a wide window
    response = fuzz_client.open(
        f"/hooks/{source_id}?{qs}", method=method, data=body, headers=headers
    )
    if response.status_code == 200 and method == "GET":
        assert response.get_data() == b"1288432023552776189"
    elif response.status_code != 405:
        check(response)


def test_occurred_at_uses_utc() -> None:
    """CreateTime is Unix seconds; milliseconds (13 digits) are read as such."""
    seconds = to_event("wc", {"MsgType": "text", "CreateTime": "1700000000"})
    millis = to_event("wc", {"MsgType": "text", "CreateTime": 1700000000000})
    assert seconds.occurred_at == millis.occurred_at == datetime.fromtimestamp(NOW, UTC)


@pytest.mark.parametrize("echo", [b"1288432023552776189", b"AbC123xyz", b"7"])
def test_url_check_answers_any_echostr_shaped_plaintext(client: FlaskClient, echo: bytes) -> None:
    response = client.get(f"/hooks/wc?{_url_check(_sealed(echo))}")
    assert response.status_code == 200 and response.get_data() == echo
