"""``feishu`` source: the official vectors, v2 and v1 events, handshakes, bad input, dedupe.

Requests are sealed and signed here with ``cryptography``/``hashlib`` directly, not with
the module's helpers, so a mistake in the module cannot cancel itself out. Everything
past the vectors goes through the real receiver (Flask test client) and a real Redis.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import redis
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import given
from hypothesis import strategies as st

from relay.errors import BadRequest, ConfigError, Unauthorized
from relay.intake.sources import feishu
from relay.intake.sources.msgcrypt import CryptError
from relay.state import keys
from tests.intake.sources.support import (
    FUZZ,
    LATIN1,
    Mutation,
    any_json,
    assert_refused,
    assert_repeated_header_refused,
    build_source,
    drawn,
    flip,
    fuzz_json,
    inbound,
    post,
    signed_sample,
    stored_event,
    tamper,
    with_header,
)

V_KEY, V_ENCRYPT, V_PLAIN = (
    "test key",
    "P37w+VZImNgPEO1RBhJ6RtKl7n6zymIbEG1pReEzghk=",
    b"hello world",
)
S_TS, S_NONCE, S_KEY, S_BODY = "1700000000", "nonce", "enc", b'{"encrypt":"x"}'
S_SIG = "bbca9ef255d21311cbc88dbfe86eae8a3caf277e9a7f12ad0a0098f423fe80da"

TOKEN = "v3rification-T0ken"
ENC_KEY = "kx8Jm2Qp0sLw9eRt"
APP_ID = "cli_a1b2c3d4e5f60708"
BOT = "ou_bot0000000000000000000000000001"
SENDER = "ou_sender00000000000000000000000001"
CHAT = "oc_chat000000000000000000000000001"
SOURCES: list[dict[str, Any]] = [
    {
        "id": "fs",
        "kind": "feishu",
        "verification_token": TOKEN,
        "encrypt_key": ENC_KEY,
        "bot_open_id": BOT,
        "app_id": APP_ID,
    },
    {"id": "plain", "kind": "feishu", "verification_token": TOKEN},
]


# -- building requests independently of the module ----------------------------------------


def seal(plaintext: bytes, key: str = ENC_KEY, iv: bytes | None = None) -> str:
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plaintext) + padder.finalize()
    iv = os.urandom(16) if iv is None else iv
    enc = Cipher(algorithms.AES(hashlib.sha256(key.encode()).digest()), modes.CBC(iv)).encryptor()
    return base64.b64encode(iv + enc.update(padded) + enc.finalize()).decode()


def sign(
    body: bytes, *, ts: str | None = None, nonce: str = "n0nce", key: str = ENC_KEY
) -> dict[str, str]:
    stamp = str(int(time.time())) if ts is None else ts
    digest = hashlib.sha256((stamp + nonce + key).encode() + body).hexdigest()
    return {
        "Content-Type": "application/json; charset=utf-8",
        "X-Lark-Request-Timestamp": stamp,
        "X-Lark-Request-Nonce": nonce,
        "X-Lark-Signature": digest,
    }


def sealed(payload: Any, **sign_args: Any) -> tuple[dict[str, str], bytes]:
    """An encrypted, signed request as Feishu sends it with an Encrypt Key."""
    plain = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    body = json.dumps({"encrypt": seal(plain)}).encode()
    return sign(body, **sign_args), body


def sealed_pair(payload: Any) -> tuple[bytes, dict[str, str]]:
    headers, body = sealed(payload)
    return body, headers


def v2(event_type: str, event: dict[str, Any], **header: Any) -> dict[str, Any]:
    return {
        "schema": "2.0",
        "header": {
            "event_id": uuid.uuid4().hex,
            "event_type": event_type,
            "create_time": "1700000000123",
            "token": TOKEN,
            "app_id": APP_ID,
            "tenant_key": "tenant-1",
            **header,
        },
        "event": event,
    }


def message(
    kind: str, content: dict[str, Any], mentions: list[Any] | None = None
) -> dict[str, Any]:
    return v2(
        "im.message.receive_v1",
        {
            "sender": {
                "sender_id": {"open_id": SENDER, "union_id": "on_s", "user_id": "s1"},
                "sender_type": "user",
                "tenant_key": "tenant-1",
            },
            "message": {
                "message_id": "om_msg1",
                "root_id": "",
                "parent_id": "",
                "create_time": "1700000000456",
                "chat_id": CHAT,
                "chat_type": "group",
                "message_type": kind,
                "content": json.dumps(content),
                "mentions": mentions or [],
            },
        },
    )


def mention(key: str, open_id: str, name: str) -> dict[str, Any]:
    return {
        "key": key,
        "id": {"open_id": open_id, "union_id": "on_x", "user_id": "x"},
        "name": name,
    }


def v1(event: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {
        "uuid": uuid.uuid4().hex,
        "token": TOKEN,
        "ts": "1700000000.5",
        "type": "event_callback",
        "event": {"app_id": APP_ID, "tenant_key": "tenant-1", **event},
        **top,
    }


def source(**options: Any) -> feishu.FeishuSource:
    return build_source(feishu.FeishuSource, {"id": "f", "kind": "feishu", **options})


def accepted(
    client: FlaskClient, redis_client: redis.Redis, payload: Any, source_id: str = "fs"
) -> dict[str, Any]:
    """Post ``payload`` (sealed and signed for ``fs``), expect 200 and return the stored event."""
    if source_id == "fs":
        headers, body = sealed(payload)
    else:
        body, headers = json.dumps(payload).encode(), {"Content-Type": "application/json"}
    response = post(client, source_id, body, headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    answer = response.get_json()
    assert answer["msg"] == "success" and "duplicate" not in answer
    event = stored_event(redis_client, answer["event_id"])
    assert event["id"] == answer["event_id"] and event["source"] == source_id
    return event


# -- the official vectors ----------------------------------------------------------------


def test_decrypt_vector() -> None:
    assert feishu.decrypt(V_KEY, V_ENCRYPT) == V_PLAIN


def test_decrypt_vector_independently() -> None:
    blob = base64.b64decode(V_ENCRYPT)
    key = hashlib.sha256(V_KEY.encode()).digest()
    dec = Cipher(algorithms.AES(key), modes.CBC(blob[:16])).decryptor()
    plain = dec.update(blob[16:]) + dec.finalize()
    assert plain[: -plain[-1]] == V_PLAIN


def test_signature_vector() -> None:
    assert hashlib.sha256((S_TS + S_NONCE + S_KEY).encode() + S_BODY).hexdigest() == S_SIG
    assert feishu.signature(S_TS, S_NONCE, S_KEY, S_BODY) == S_SIG


def test_signature_vector_through_verify(monkeypatch: pytest.MonkeyPatch) -> None:
    """At the vector's time the signature passes; the body ("x") then fails to decrypt."""
    monkeypatch.setattr(time, "time", lambda: int(S_TS) + 60)
    fs = source(verification_token=TOKEN, encrypt_key=S_KEY)
    headers = {
        "Content-Type": "application/json",
        "X-Lark-Request-Timestamp": S_TS,
        "X-Lark-Request-Nonce": S_NONCE,
        "X-Lark-Signature": S_SIG,
    }
    with pytest.raises(BadRequest) as caught:
        fs.verify(inbound(headers, S_BODY))
    assert caught.value.code == "decrypt_failed"
    with pytest.raises(Unauthorized) as refused:
        fs.verify(inbound({**headers, "X-Lark-Signature": S_SIG[:-1] + "0"}, S_BODY))
    assert refused.value.code == "invalid_signature"
    monkeypatch.setattr(time, "time", lambda: int(S_TS) + 8 * 3600 + 1)
    with pytest.raises(Unauthorized) as stale:
        fs.verify(inbound(headers, S_BODY))
    assert stale.value.code == "stale_timestamp"


def test_encrypt_round_trip_both_ways() -> None:
    plain = json.dumps({"text": "héllo ✓"}).encode()
    assert feishu.decrypt(ENC_KEY, seal(plain)) == plain
    iv = bytes(range(16))
    assert feishu.encrypt(ENC_KEY, plain, iv=iv) == seal(plain, iv=iv)
    for size in (0, 1, 15, 16, 17, 31, 32, 1000):
        data = os.urandom(size)
        assert feishu.decrypt("k", feishu.encrypt("k", data)) == data


@pytest.mark.parametrize(
    "encrypted",
    [
        "not base64!",
        "abc",  # bad padding
        base64.b64encode(b"x" * 16).decode(),  # an IV and nothing else
        base64.b64encode(b"x" * 40).decode(),  # not whole blocks
        base64.b64decode(V_ENCRYPT)[:-5].hex(),  # hex is not base64 of whole blocks either
        base64.b64encode(base64.b64decode(V_ENCRYPT)[:-5]).decode(),  # truncated
        "ünïcødé",
        "",
    ],
)
def test_decrypt_refuses_malformed(encrypted: str) -> None:
    with pytest.raises(CryptError):
        feishu.decrypt(V_KEY, encrypted)


def test_decrypt_with_wrong_key_fails_or_is_not_the_plaintext() -> None:
    for i in range(50):
        try:
            assert feishu.decrypt(f"other-{i}", V_ENCRYPT) != V_PLAIN
        except CryptError:
            pass


# -- options ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({}, "verification_token: required key is missing"),
        ({"verification_token": ""}, "verification_token"),
        ({"verification_token": TOKEN, "encrypt_key": ""}, "encrypt_key"),
        ({"verification_token": TOKEN, "tolerance": 0}, "tolerance"),
        ({"verification_token": TOKEN, "secret": "x"}, "secret: unknown key"),
    ],
)
def test_config_errors(options: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        source(**options)
    assert problem in str(caught.value)


def test_secrets_stay_out_of_repr_and_errors() -> None:
    fs = source(verification_token=TOKEN, encrypt_key=ENC_KEY)
    assert TOKEN not in repr(fs.options) and ENC_KEY not in repr(fs.options)
    with pytest.raises(ConfigError) as caught:
        source(verification_token=TOKEN, encrypt_key=ENC_KEY, tolerance="soon")
    assert ENC_KEY not in str(caught.value) and TOKEN not in str(caught.value)


def test_defaults() -> None:
    fs = source(verification_token=TOKEN)
    assert fs.options.tolerance == 8 * 3600 and fs.options.encrypt_key is None
    assert feishu.FeishuSource.default_dedupe_ttl == 24 * 3600


# -- v2 events through the receiver ---------------------------------------------------------


def test_text_message_with_mentions(client: FlaskClient, redis_client: redis.Redis) -> None:
    payload = message(
        "text",
        {"text": "@_user_1 @_user_2 deploy done, @_user_10 too @_all"},
        [mention("@_user_1", BOT, "Relay Bot"), mention("@_user_2", "ou_ada", "Ada")]
        + [mention("@_user_10", "ou_bob", "Bob")],
    )
    event = accepted(client, redis_client, payload)
    assert event["type"] == "message.created"
    assert event["text"] == "@Relay Bot @Ada deploy done, @Bob too @all"
    assert event["group"] == {"id": CHAT, "name": None}
    assert event["sender"] == {"id": SENDER, "name": None}
    assert event["mentions"] == [
        {"id": BOT, "name": "Relay Bot"},
        {"id": "ou_ada", "name": "Ada"},
        {"id": "ou_bob", "name": "Bob"},
    ]
    assert event["mentions_bot"] is True
    assert event["message_id"] == "om_msg1"
    assert event["occurred_at"].startswith("2023-11-14T22:13:20.456")
    assert event["raw"]["event"]["message"]["content"] == payload["event"]["message"]["content"]
    assert event["raw"]["header"]["token"] == "[redacted]"
    ttl = redis_client.ttl(keys.dedupe("fs", payload["header"]["event_id"]))
    assert 24 * 3600 - 60 < ttl <= 24 * 3600


def test_text_message_without_bot_mention(client: FlaskClient, redis_client: redis.Redis) -> None:
    event = accepted(
        client,
        redis_client,
        message("text", {"text": "@_user_1 hi"}, [mention("@_user_1", "ou_ada", "Ada")]),
    )
    assert event["mentions_bot"] is False and event["text"] == "@Ada hi"


def test_post_is_flattened(client: FlaskClient, redis_client: redis.Redis) -> None:
    content = {
        "title": "Release",
        "content": [
            [
                {"tag": "text", "text": "Line one: ", "style": ["bold"]},
                {"tag": "a", "href": "https://example.com", "text": "the notes"},
                {"tag": "at", "user_id": "@_user_1", "user_name": ""},
            ],
            [{"tag": "img", "image_key": "img_v2_abc"}],
            [{"tag": "text", "text": "Line two"}, {"tag": "emotion", "emoji_type": "SMILE"}],
            [{"tag": "media", "file_key": "file_v2_vid", "image_key": "img_cover"}],
            [{"tag": "code_block", "language": "GO", "text": "func main() {}"}],
            [{"tag": "hr"}],
        ],
    }
    event = accepted(
        client, redis_client, message("post", content, [mention("@_user_1", BOT, "Relay Bot")])
    )
    assert event["type"] == "message.created"
    assert event["text"] == "Release\nLine one: the notes@Relay Bot\nLine two\nfunc main() {}"
    assert [f["ref"] for f in event["files"]] == ["om_msg1/img_v2_abc", "om_msg1/file_v2_vid"]
    assert event["mentions_bot"] is True


def test_post_wrapped_by_locale(client: FlaskClient, redis_client: redis.Redis) -> None:
    content = {"zh_cn": {"title": "标题", "content": [[{"tag": "text", "text": "内容"}]]}}
    assert accepted(client, redis_client, message("post", content))["text"] == "标题\n内容"


@pytest.mark.parametrize(
    ("kind", "content", "ref", "name"),
    [
        ("image", {"image_key": "img_v2_1"}, "om_msg1/img_v2_1", "img_v2_1"),
        (
            "file",
            {"file_key": "file_v2_1", "file_name": "report.pdf"},
            "om_msg1/file_v2_1",
            "report.pdf",
        ),
        ("audio", {"file_key": "file_v2_a", "duration": 2000}, "om_msg1/file_v2_a", "file_v2_a"),
        (
            "media",
            {"file_key": "file_v2_m", "image_key": "img_c", "file_name": "demo.mp4", "duration": 9},
            "om_msg1/file_v2_m",
            "demo.mp4",
        ),
    ],
)
def test_files(
    client: FlaskClient,
    redis_client: redis.Redis,
    kind: str,
    content: dict[str, Any],
    ref: str,
    name: str,
) -> None:
    event = accepted(client, redis_client, message(kind, content))
    assert event["type"] == "file.shared"
    assert event["files"] == [{"name": name, "size": None, "mime": None, "url": None, "ref": ref}]
    assert event["group"]["id"] == CHAT and event["sender"]["id"] == SENDER
    assert event["message_id"] == "om_msg1"


def test_other_message_types_keep_their_place(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    event = accepted(client, redis_client, message("sticker", {"file_key": "file_s"}))
    assert event["type"] == "message.created" and event["text"] is None and event["files"] == []
    assert event["message_id"] == "om_msg1" and event["group"]["id"] == CHAT


MEMBER_EVENT = {
    "chat_id": CHAT,
    "operator_id": {"open_id": "ou_op", "union_id": "on_op", "user_id": "op"},
    "external": False,
    "operator_tenant_key": "tenant-1",
    "name": "Ops room",
    "users": [
        {
            "name": "Ada",
            "tenant_key": "t",
            "user_id": {"open_id": "ou_ada", "union_id": "on_a", "user_id": "a"},
        },
        {"name": "Bob", "tenant_key": "t", "user_id": {"union_id": "on_bob"}},
    ],
}


@pytest.mark.parametrize(
    ("event_type", "expected"),
    [
        ("im.chat.member.user.added_v1", "member.joined"),
        ("im.chat.member.user.deleted_v1", "member.left"),
        ("im.chat.member.user.withdrawn_v1", "member.left"),
    ],
)
def test_member_events(
    client: FlaskClient, redis_client: redis.Redis, event_type: str, expected: str
) -> None:
    event = accepted(client, redis_client, v2(event_type, MEMBER_EVENT))
    assert event["type"] == expected
    assert event["group"] == {"id": CHAT, "name": "Ops room"}
    assert event["sender"] == {"id": "ou_op", "name": None}
    assert event["mentions"] == [{"id": "ou_ada", "name": "Ada"}, {"id": "on_bob", "name": "Bob"}]
    assert event["mentions_bot"] is False
    assert event["occurred_at"].startswith("2023-11-14T22:13:20.123")


@pytest.mark.parametrize(
    ("event_type", "expected"),
    [
        ("im.chat.member.bot.added_v1", "member.joined"),
        ("im.chat.member.bot.deleted_v1", "member.left"),
    ],
)
def test_bot_member_events(
    client: FlaskClient, redis_client: redis.Redis, event_type: str, expected: str
) -> None:
    body = {k: v for k, v in MEMBER_EVENT.items() if k != "users"}
    event = accepted(client, redis_client, v2(event_type, body))
    assert event["type"] == expected and event["mentions_bot"] is True
    assert event["mentions"] == [{"id": BOT, "name": None}]
    assert event["group"] == {"id": CHAT, "name": "Ops room"}


def test_bot_without_open_id_is_named_by_app(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    payload = v2("im.chat.member.bot.added_v1", {"chat_id": CHAT, "name": "Ops"})
    event = accepted(client, redis_client, payload, source_id="plain")
    assert event["mentions"] == [{"id": APP_ID, "name": None}] and event["mentions_bot"] is True


def test_group_updated(client: FlaskClient, redis_client: redis.Redis) -> None:
    body = {
        "chat_id": CHAT,
        "operator_id": {"open_id": "ou_op"},
        "after_change": {"name": "New name", "description": "d"},
        "before_change": {"name": "Old name", "description": ""},
    }
    event = accepted(client, redis_client, v2("im.chat.updated_v1", body))
    assert event["type"] == "group.updated"
    assert event["group"] == {"id": CHAT, "name": "New name"}
    assert event["sender"]["id"] == "ou_op"


@pytest.mark.parametrize(
    "event_type", ["im.chat.disbanded_v1", "im.message.reaction.created_v1", "x.y"]
)
def test_other_v2_events_are_custom(
    client: FlaskClient, redis_client: redis.Redis, event_type: str
) -> None:
    payload = v2(event_type, {"chat_id": CHAT, "operator_id": {"open_id": "ou_op"}})
    event = accepted(client, redis_client, payload)
    assert event["type"] == "custom" and event["group"]["id"] == CHAT
    assert event["raw"]["header"]["event_type"] == event_type


# -- v1 events ---------------------------------------------------------------------------------


def v1_message(kind: str, **fields: Any) -> dict[str, Any]:
    return v1(
        {
            "type": "message",
            "root_id": "",
            "parent_id": "",
            "open_chat_id": CHAT,
            "chat_type": "group",
            "msg_type": kind,
            "open_id": SENDER,
            "union_id": "on_s",
            "open_message_id": "om_v1",
            "is_mention": False,
            **fields,
        }
    )


def test_v1_text(client: FlaskClient, redis_client: redis.Redis) -> None:
    text = f'<at open_id="{BOT}">@Relay Bot</at> hello <at open_id="ou_ada">@Ada</at>'
    payload = v1_message("text", text=text, is_mention=True)
    event = accepted(client, redis_client, payload)
    assert event["type"] == "message.created"
    assert event["text"] == "@Relay Bot hello @Ada"
    assert event["mentions"] == [{"id": BOT, "name": "Relay Bot"}, {"id": "ou_ada", "name": "Ada"}]
    assert event["mentions_bot"] is True
    assert event["group"]["id"] == CHAT and event["sender"]["id"] == SENDER
    assert event["message_id"] == "om_v1"
    assert event["occurred_at"].startswith("2023-11-14T22:13:20.5")
    assert event["raw"]["token"] == "[redacted]"
    assert redis_client.exists(keys.dedupe("fs", payload["uuid"]))


def test_v1_is_mention_without_bot_open_id(client: FlaskClient, redis_client: redis.Redis) -> None:
    payload = v1_message("text", text='<at open_id="ou_x">@X</at> hi', is_mention=True)
    assert accepted(client, redis_client, payload, source_id="plain")["mentions_bot"] is True


def test_v1_post(client: FlaskClient, redis_client: redis.Redis) -> None:
    payload = v1_message(
        "post",
        title="Title",
        text='<p>first &amp; line</p><figure><img src="http://x/y"/></figure><p>second</p>',
        image_keys=["k-1", "k-2"],
    )
    event = accepted(client, redis_client, payload)
    assert event["text"] == "Title\nfirst & line\nsecond"
    assert [f["ref"] for f in event["files"]] == ["om_v1/k-1", "om_v1/k-2"]


@pytest.mark.parametrize(
    ("kind", "fields", "ref"),
    [
        ("image", {"image_key": "img-1"}, "om_v1/img-1"),
        ("file", {"file_key": "file-1"}, "om_v1/file-1"),
    ],
)
def test_v1_files(
    client: FlaskClient, redis_client: redis.Redis, kind: str, fields: dict[str, Any], ref: str
) -> None:
    event = accepted(client, redis_client, v1_message(kind, **fields))
    assert event["type"] == "file.shared" and event["files"][0]["ref"] == ref


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("add_user_to_chat", "member.joined"),
        ("remove_user_from_chat", "member.left"),
        ("revoke_add_user_from_chat", "member.left"),
    ],
)
def test_v1_members(
    client: FlaskClient, redis_client: redis.Redis, kind: str, expected: str
) -> None:
    payload = v1(
        {
            "type": kind,
            "chat_id": CHAT,
            "operator": {"open_id": "ou_op", "user_id": "op"},
            "users": [{"name": "James", "open_id": "ou_james", "user_id": "j"}],
        }
    )
    event = accepted(client, redis_client, payload)
    assert event["type"] == expected
    assert event["mentions"] == [{"id": "ou_james", "name": "James"}]
    assert event["group"]["id"] == CHAT and event["sender"]["id"] == "ou_op"


@pytest.mark.parametrize(
    ("kind", "expected"), [("add_bot", "member.joined"), ("remove_bot", "member.left")]
)
def test_v1_bot(client: FlaskClient, redis_client: redis.Redis, kind: str, expected: str) -> None:
    payload = v1(
        {
            "type": kind,
            "chat_name": "Ops",
            "open_chat_id": CHAT,
            "operator_name": "Ann",
            "operator_open_id": "ou_ann",
            "owner_is_bot": False,
        }
    )
    event = accepted(client, redis_client, payload)
    assert event["type"] == expected and event["mentions_bot"] is True
    assert event["mentions"] == [{"id": BOT, "name": None}]
    assert event["group"] == {"id": CHAT, "name": "Ops"}
    assert event["sender"] == {"id": "ou_ann", "name": "Ann"}


def test_v1_group_setting_update(client: FlaskClient, redis_client: redis.Redis) -> None:
    payload = v1(
        {
            "type": "group_setting_update",
            "chat_id": CHAT,
            "after_change": {"add_member_permission": "everyone"},
            "before_change": {"add_member_permission": "owner"},
            "operator": {"open_id": "ou_op"},
        }
    )
    event = accepted(client, redis_client, payload)
    assert event["type"] == "group.updated" and event["group"]["id"] == CHAT


@pytest.mark.parametrize("kind", ["chat_disband", "message_read", "p2p_chat_create"])
def test_v1_others_are_custom(client: FlaskClient, redis_client: redis.Redis, kind: str) -> None:
    event = accepted(client, redis_client, v1({"type": kind, "chat_id": CHAT}))
    assert event["type"] == "custom" and event["raw"]["event"]["type"] == kind


# -- handshakes ----------------------------------------------------------------------------------


def challenge(token: str = TOKEN) -> dict[str, Any]:
    return {"challenge": "ajls384kdjx98XX", "token": token, "type": "url_verification"}


def bad_signature(payload: Any) -> tuple[bytes, dict[str, str]]:
    body, headers = sealed_pair(payload)
    return body, {**headers, "X-Lark-Signature": "0" * 64}


def test_url_verification_plain(client: FlaskClient, redis_client: redis.Redis) -> None:
    body = json.dumps(challenge()).encode()
    response = post(client, "plain", body, {"Content-Type": "application/json"})
    assert response.status_code == 200
    assert response.get_json() == {"challenge": "ajls384kdjx98XX"}
    assert redis_client.llen(keys.FANOUT_QUEUE) == 0


def test_url_verification_encrypted_unsigned(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    """As in the Lark SDK, the challenge needs the token (and the key to open it), no signature."""
    body = json.dumps({"encrypt": seal(json.dumps(challenge()).encode())}).encode()
    response = post(client, "fs", body, {"Content-Type": "application/json"})
    assert response.status_code == 200 and response.get_json() == {"challenge": "ajls384kdjx98XX"}
    assert redis_client.llen(keys.FANOUT_QUEUE) == 0


def test_url_verification_encrypted_signed(client: FlaskClient) -> None:
    headers, body = sealed(challenge())
    response = post(client, "fs", body, headers)
    assert response.status_code == 200 and response.get_json() == {"challenge": "ajls384kdjx98XX"}


@pytest.mark.parametrize(
    ("source_id", "make", "status", "code"),
    [
        ("plain", lambda: (json.dumps(challenge("wrong")).encode(), {}), 401, "invalid_token"),
        (
            "plain",
            lambda: (json.dumps({**challenge(), "token": None}).encode(), {}),
            401,
            "missing_token",
        ),
        (
            "plain",
            lambda: (json.dumps({**challenge(), "challenge": ""}).encode(), {}),
            400,
            "invalid_payload",
        ),
        ("fs", lambda: sealed_pair(challenge("wrong")), 401, "invalid_token"),
        (
            "fs",
            lambda: (
                json.dumps(
                    {"encrypt": seal(json.dumps(challenge()).encode(), key="other")}
                ).encode(),
                {},
            ),
            400,
            "decrypt_failed",
        ),
        ("fs", lambda: bad_signature(challenge()), 401, "invalid_signature"),
        (
            "plain",
            lambda: (json.dumps({"encrypt": seal(json.dumps(challenge()).encode())}).encode(), {}),
            400,
            "unexpected_encryption",
        ),
    ],
)
def test_url_verification_refused(
    client: FlaskClient,
    redis_client: redis.Redis,
    source_id: str,
    make: Callable[[], tuple[bytes, dict[str, str]]],
    status: int,
    code: str,
) -> None:
    body, headers = make()
    headers = {"Content-Type": "application/json", **headers}
    assert_refused(post(client, source_id, body, headers), status, code, redis_client)


def test_get_is_not_allowed(client: FlaskClient) -> None:
    response = client.get("/hooks/fs")
    assert response.status_code == 405 and response.headers["Allow"] == "POST"


# -- the bad-input matrix ------------------------------------------------------------------------


def _flip_hex(value: str) -> str:
    return value[:10] + ("1" if value[10] != "1" else "2") + value[11:]


SHORT_NAMES = {
    "ts": "X-Lark-Request-Timestamp",
    "nonce": "X-Lark-Request-Nonce",
    "sig": "X-Lark-Signature",
    "ctype": "Content-Type",
}


def _case(**changes: Any) -> Mutation:
    """A mutation of a valid request, its headers named short (``ts``, ``nonce``, ``sig``)."""
    return tamper(**{SHORT_NAMES.get(name, name): change for name, change in changes.items()})


def signed(body: bytes) -> Mutation:
    """A correctly signed request with another body: the checks past the signature."""
    return lambda _h, _b: (list(sign(body).items()), body)


def payload(value: Any, ts: str | None = None) -> Mutation:
    """``value`` sealed and correctly signed (at ``ts``)."""
    body = json.dumps({"encrypt": seal(json.dumps(value).encode())}).encode()
    return lambda _h, _b: (list(sign(body, ts=ts).items()), body)


def encrypt(value: Any) -> Mutation:
    """A signed body whose ``encrypt`` is ``value``; bytes are base64-encoded first."""
    if isinstance(value, bytes):
        value = base64.b64encode(value).decode()
    return signed(json.dumps({"encrypt": value}).encode())


def plaintext(data: bytes) -> Mutation:
    return encrypt(seal(data))


def good(**header: Any) -> dict[str, Any]:
    """The good event with header fields changed; ``None`` removes one."""
    changed = {k: v for k, v in {**GOOD["header"], **header}.items() if v is not None}
    return {**GOOD, "header": changed}


NOW = int(time.time())
GOOD = message("text", {"text": "hi"})
BLOB = base64.b64decode(seal(json.dumps(GOOD).encode()))
SURROGATE = json.dumps(message("text", {"text": "x"})).replace('"x', '"\\ud800').encode()
DEEP = json.loads("[" * 400 + "]" * 400)
MATRIX: dict[str, tuple[Mutation, int, str | None]] = {
    "body bit flip": (_case(body=lambda b: flip(b, 20)), 401, "invalid_signature"),
    "body last byte flip": (_case(body=lambda b: flip(b, len(b) - 1)), 401, "invalid_signature"),
    "body appended": (_case(body=lambda b: b + b" "), 401, "invalid_signature"),
    "timestamp changed": (_case(ts=lambda t: str(int(t) - 1)), 401, "invalid_signature"),
    "nonce changed": (_case(nonce=lambda n: n + "x"), 401, "invalid_signature"),
    "signature bit flip": (_case(sig=_flip_hex), 401, "invalid_signature"),
    "signature truncated": (_case(sig=lambda s: s[:-2]), 401, "invalid_signature"),
    "signature not hex": (_case(sig="ü" * 64), 401, "invalid_signature"),
    "signature of plaintext": (
        _case(sig=hashlib.sha256(b"x").hexdigest()),
        401,
        "invalid_signature",
    ),
    "stale timestamp": (payload(GOOD, ts=str(NOW - 9 * 3600)), 401, "stale_timestamp"),
    "future timestamp": (payload(GOOD, ts=str(NOW + 9 * 3600)), 401, "stale_timestamp"),
    "timestamp in ms": (payload(GOOD, ts=str(NOW * 1000)), 401, "invalid_timestamp"),
    "timestamp not digits": (_case(ts="yesterday"), 401, "invalid_timestamp"),
    "timestamp negative": (_case(ts="-5"), 401, "invalid_timestamp"),
    "timestamp superscript": (_case(ts=lambda t: t[:-1] + "²"), 401, "invalid_timestamp"),
    "missing timestamp": (_case(ts=None), 401, "missing_signature"),
    "missing nonce": (_case(nonce=None), 401, "missing_signature"),
    "missing signature": (_case(sig=None), 401, "missing_signature"),
    "empty signature": (_case(sig=""), 401, "missing_signature"),
    "no signature headers": (_case(ts=None, nonce=None, sig=None), 401, "missing_signature"),
    "duplicate signature": (_case(sig=lambda v: [v, v]), 401, "invalid_signature"),
    "duplicate timestamp": (_case(ts=lambda v: [v, v]), 401, "invalid_timestamp"),
    "wrong token": (payload(good(token="nope")), 401, "invalid_token"),
    "no token": (payload(good(token=None)), 401, "missing_token"),
    "v1 token in a v2 event": (payload({**good(token="x"), "token": TOKEN}), 401, "invalid_token"),
    "other app": (payload(good(app_id="cli_other")), 401, "invalid_app_id"),
    "no app id": (payload(good(app_id=None)), 401, "invalid_app_id"),
    "v1 other app": (payload(v1({"type": "x", "app_id": "cli_other"})), 401, "invalid_app_id"),
    "another key": (encrypt(seal(json.dumps(GOOD).encode(), key="other")), 400, "decrypt_failed"),
    "malformed base64": (encrypt("!!not base64!!"), 400, "decrypt_failed"),
    "bad base64 padding": (encrypt(base64.b64encode(BLOB).decode()[:-2]), 400, "decrypt_failed"),
    "truncated ciphertext": (encrypt(BLOB[:-16]), 400, "decrypt_failed"),
    "ciphertext not whole blocks": (encrypt(BLOB[:-3]), 400, "decrypt_failed"),
    "only an iv": (encrypt(BLOB[:16]), 400, "decrypt_failed"),
    "empty encrypt": (encrypt(""), 400, "decrypt_failed"),
    "encrypt not a string": (encrypt(12345), 400, "decrypt_failed"),
    "plaintext not json": (plaintext(b"hello world"), 400, "decrypt_failed"),
    "plaintext not utf-8": (plaintext(b"\xff\xfe{}"), 400, "decrypt_failed"),
    "plaintext NaN": (plaintext(b'{"a": NaN}'), 400, "decrypt_failed"),
    "plaintext a list": (plaintext(b"[1, 2]"), 400, "invalid_payload"),
    "no event id": (payload(good(event_id=None)), 400, "missing_event_id"),
    "long event id": (payload(good(event_id="e" * 300)), 400, "invalid_event_id"),
    "neither v1 nor v2": (payload({"token": TOKEN, "event": {"app_id": APP_ID}}), 400, None),
    "lone surrogate in text": (plaintext(SURROGATE), 400, "invalid_payload"),
    "nested too deeply to store": (payload({**GOOD, "event": DEEP}), 400, "invalid_payload"),
    "content type text/plain": (_case(ctype="text/plain"), 415, None),
    "no content type": (_case(ctype=None), 415, None),
    "body not json": (signed(b"not json"), 400, "invalid_json"),
    "body a json array": (signed(b"[]"), 400, "invalid_payload"),
}


@pytest.mark.parametrize("name", list(MATRIX))
def test_bad_input_matrix(client: FlaskClient, redis_client: redis.Redis, name: str) -> None:
    mutate, status, code = MATRIX[name]
    headers, body = sealed(GOOD)
    out, body = mutate(headers, body)
    assert_refused(post(client, "fs", body, out), status, code, redis_client)
    assert not redis_client.exists(keys.dedupe("fs", GOOD["header"]["event_id"]))


def test_plain_source_checks_the_token(client: FlaskClient, redis_client: redis.Redis) -> None:
    wrong = {**GOOD, "header": {**GOOD["header"], "token": TOKEN + "x"}}
    headers = {"Content-Type": "application/json"}
    assert_refused(
        post(client, "plain", json.dumps(wrong).encode(), headers),
        401,
        "invalid_token",
        redis_client,
    )
    payload = json.dumps({"encrypt": seal(json.dumps(GOOD).encode())}).encode()
    assert_refused(
        post(client, "plain", payload, headers), 400, "unexpected_encryption", redis_client
    )


def test_plain_source_ignores_signature_headers(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    """Without an Encrypt Key there is nothing to check them against: the token decides."""
    body = json.dumps(message("text", {"text": "hi"})).encode()
    headers = {**sign(body), "X-Lark-Signature": "0" * 64}
    assert post(client, "plain", body, headers).status_code == 200


def test_signed_plaintext_is_accepted(client: FlaskClient, redis_client: redis.Redis) -> None:
    """The Lark SDK accepts a plaintext body under an Encrypt Key when the signature holds."""
    body = json.dumps(message("text", {"text": "plain"})).encode()
    response = post(client, "fs", body, sign(body))
    assert response.status_code == 200, response.get_json()
    assert redis_client.llen(keys.FANOUT_QUEUE) == 1


def test_uppercase_signature_is_accepted(client: FlaskClient) -> None:
    headers, body = sealed(message("text", {"text": "x"}))
    headers["X-Lark-Signature"] = headers["X-Lark-Signature"].upper()
    assert post(client, "fs", body, headers).status_code == 200


@pytest.mark.parametrize("offset", [-299, 299])
def test_timestamp_within_tolerance(client: FlaskClient, offset: int) -> None:
    headers, body = sealed(message("text", {"text": "x"}), ts=str(int(time.time()) + offset))
    assert post(client, "fs", body, headers).status_code == 200


def test_duplicate_header_seen_by_source_is_400() -> None:
    fs = source(verification_token=TOKEN, encrypt_key=ENC_KEY)
    headers, body = sealed(GOOD)
    assert_repeated_header_refused(fs, headers, "X-Lark-Signature", body)


# -- dedupe and the reply ------------------------------------------------------------------------


def test_retry_is_a_duplicate(client: FlaskClient, redis_client: redis.Redis) -> None:
    payload = message("text", {"text": "once"})
    first = post(client, "fs", *sealed_pair(payload))
    assert first.status_code == 200 and "duplicate" not in first.get_json()
    original = first.get_json()["event_id"]
    for i in range(3):  # Feishu resends with a fresh timestamp, nonce, IV and signature
        headers, body = sealed(payload, nonce=f"retry-{i}")
        again = post(client, "fs", body, headers)
        assert again.status_code == 200
        assert again.get_json() == {"msg": "success", "event_id": original, "duplicate": True}
    assert redis_client.llen(keys.FANOUT_QUEUE) == 1


def test_v1_retry_is_a_duplicate(client: FlaskClient, redis_client: redis.Redis) -> None:
    payload = v1_message("text", text="hi")
    body, headers = json.dumps(payload).encode(), {"Content-Type": "application/json"}
    assert "duplicate" not in post(client, "plain", body, headers).get_json()
    assert post(client, "plain", body, headers).get_json()["duplicate"] is True
    assert redis_client.llen(keys.FANOUT_QUEUE) == 1


def test_different_events_are_different(client: FlaskClient, redis_client: redis.Redis) -> None:
    ids = {
        post(client, "fs", *sealed_pair(message("text", {"text": "x"}))).get_json()["event_id"]
        for _ in range(3)
    }
    assert len(ids) == 3 and redis_client.llen(keys.FANOUT_QUEUE) == 3


@pytest.mark.parametrize("source_id", ["fs", "plain"])
def test_sample_is_accepted(
    app: Flask, client: FlaskClient, redis_client: redis.Redis, source_id: str
) -> None:
    sample = app.extensions["relay"].sources[source_id].sample()
    if source_id == "fs":
        assert set(json.loads(sample.body)) == {"encrypt"}
        assert (
            sample.headers["X-Lark-Signature"]
            == hashlib.sha256(
                (
                    sample.headers["X-Lark-Request-Timestamp"]
                    + sample.headers["X-Lark-Request-Nonce"]
                    + ENC_KEY
                ).encode()
                + sample.body
            ).hexdigest()
        )
    response = post(client, source_id, sample.body, sample.headers)
    assert response.status_code == 200, response.get_json()
    stored = stored_event(redis_client, response.get_json()["event_id"])
    assert stored["type"] == "message.created" and stored["text"].startswith("@Ada ")
    assert stored["mentions"][0]["name"] == "Ada" and stored["group"]["id"].startswith("oc_")


def test_sample_with_body(app: Flask, client: FlaskClient) -> None:
    fs = app.extensions["relay"].sources["fs"]
    sample = fs.sample(json.dumps(v1_message("text", text="hi")).encode())
    assert post(client, "fs", sample.body, sample.headers).status_code == 200


# -- property tests: never a 5xx ------------------------------------------------------------

HEADER_NAMES = [
    "X-Lark-Request-Timestamp",
    "X-Lark-Request-Nonce",
    "X-Lark-Signature",
    "Content-Type",
]
header_values = st.one_of(
    st.text(LATIN1, max_size=80),
    st.from_regex(r"\A[0-9a-f]{0,70}\Z"),
    st.integers(min_value=-(10**15), max_value=10**15).map(str),
)
json_values = any_json()
ids = st.one_of(st.text(max_size=300), json_values)
user_ids = st.one_of(
    json_values,
    st.fixed_dictionaries({}, optional={"open_id": ids, "union_id": ids, "user_id": ids}),
)
mentions = st.lists(
    st.one_of(
        json_values, st.fixed_dictionaries({}, optional={"key": ids, "id": user_ids, "name": ids})
    ),
    max_size=3,
)
contents = st.one_of(
    json_values.map(json.dumps),
    st.fixed_dictionaries(
        {},
        optional={
            "text": ids,
            "image_key": ids,
            "file_key": ids,
            "file_name": ids,
            "title": ids,
            "content": json_values,
        },
    ).map(json.dumps),
    json_values,
)
v2_events = st.builds(
    lambda event_type, event, header: v2(event_type, event, **header),
    st.sampled_from(
        [
            "im.message.receive_v1",
            "im.chat.member.user.added_v1",
            "im.chat.member.bot.added_v1",
            "im.chat.updated_v1",
            "im.chat.disbanded_v1",
            "other",
        ]
    ),
    st.fixed_dictionaries(
        {},
        optional={
            "message": st.fixed_dictionaries(
                {},
                optional={
                    "message_id": ids,
                    "chat_id": ids,
                    "message_type": st.sampled_from(
                        ["text", "post", "image", "file", "audio", "media", "sticker"]
                    ),
                    "content": contents,
                    "mentions": st.one_of(mentions, json_values),
                    "create_time": st.one_of(json_values, st.integers().map(str)),
                },
            ),
            "sender": st.one_of(json_values, st.fixed_dictionaries({"sender_id": user_ids})),
            "chat_id": ids,
            "operator_id": user_ids,
            "users": st.one_of(
                json_values,
                st.lists(
                    st.fixed_dictionaries({}, optional={"user_id": user_ids, "name": ids}),
                    max_size=3,
                ),
            ),
            "after_change": json_values,
            "name": ids,
        },
    ),
    st.fixed_dictionaries({}, optional={"event_id": ids, "create_time": json_values}),
)
v1_events = st.builds(
    lambda event, top: v1(event, **top),
    st.fixed_dictionaries(
        {
            "type": st.sampled_from(
                [
                    "message",
                    "add_user_to_chat",
                    "add_bot",
                    "remove_bot",
                    "group_setting_update",
                    "other",
                ]
            )
        },
        optional={
            "msg_type": st.sampled_from(["text", "post", "image", "file", "other"]),
            "text": ids,
            "title": ids,
            "image_keys": json_values,
            "image_key": ids,
            "file_key": ids,
            "open_chat_id": ids,
            "open_id": ids,
            "open_message_id": ids,
            "is_mention": json_values,
            "chat_id": ids,
            "operator": json_values,
            "users": st.one_of(
                json_values,
                st.lists(
                    st.fixed_dictionaries({}, optional={"open_id": ids, "name": ids}), max_size=3
                ),
            ),
            "chat_name": ids,
            "operator_open_id": ids,
            "app_id": st.sampled_from([APP_ID, "cli_other"]),
        },
    ),
    st.fixed_dictionaries({}, optional={"uuid": ids, "ts": json_values}),
)


def check(response: Any) -> dict[str, Any]:
    """The property: below 500, JSON, and either an error, a challenge or an event id."""
    return fuzz_json(response, "event_id", "challenge")


@FUZZ
@given(source_id=st.sampled_from(["fs", "plain"]), body=st.binary(max_size=2000), data=st.data())
def test_unsigned_garbage(
    fuzz_client: FlaskClient, source_id: str, body: bytes, data: st.DataObject
) -> None:
    headers = drawn(data, HEADER_NAMES, header_values)
    response = fuzz_client.post(f"/hooks/{source_id}", data=body, headers=headers)
    check(response)
    assert response.status_code >= 400


@FUZZ
@given(source_id=st.sampled_from(["fs", "plain"]), plaintext=st.binary(max_size=2000))
def test_signed_bytes(
    fuzz_app: Flask, fuzz_client: FlaskClient, source_id: str, plaintext: bytes
) -> None:
    headers, body = signed_sample(fuzz_app, source_id, plaintext)
    check(fuzz_client.post(f"/hooks/{source_id}", data=body, headers=headers))


@FUZZ
@given(
    source_id=st.sampled_from(["fs", "plain"]), value=st.one_of(json_values, v2_events, v1_events)
)
def test_signed_json(fuzz_app: Flask, fuzz_client: FlaskClient, source_id: str, value: Any) -> None:
    headers, body = signed_sample(fuzz_app, source_id, json.dumps(value).encode())
    response = fuzz_client.post(f"/hooks/{source_id}", data=body, headers=headers)
    check(response)


@FUZZ
@given(value=st.one_of(v2_events, v1_events))
def test_well_formed_events_are_accepted(
    fuzz_app: Flask, fuzz_client: FlaskClient, value: dict[str, Any]
) -> None:
    """An authentic event with any field shapes maps to *some* event, unless its id is bad."""
    headers, body = signed_sample(fuzz_app, "plain", json.dumps(value).encode())
    response = fuzz_client.post("/hooks/plain", data=body, headers=headers)
    result = check(response)
    dedupe = value["header"].get("event_id") if "header" in value else value.get("uuid")
    if isinstance(dedupe, str) and 0 < len(dedupe) <= 256:
        assert response.status_code == 200, result
    else:
        assert response.status_code == 400 and result["error"] in (
            "missing_event_id",
            "invalid_event_id",
        )


@FUZZ
@given(name=st.sampled_from(HEADER_NAMES), value=header_values)
def test_one_header_replaced(
    fuzz_app: Flask, fuzz_client: FlaskClient, name: str, value: str
) -> None:
    headers, body = signed_sample(
        fuzz_app, "fs", json.dumps(message("text", {"text": "hi"})).encode()
    )
    check(fuzz_client.post("/hooks/fs", data=body, headers=with_header(headers, name, value)))
