"""``in_reply_to``: a reply names its original in the original's own ``message_id`` form.

Each platform's request goes through the real receiver (Flask test client, real Redis)
and is read back as intake stored it, so the check covers verification, parsing and
storage together. Payloads follow the platforms' documented examples: Feishu
``im.message.receive_v1`` (root_id / parent_id / thread_id), Slack ``message`` events
in a thread (``thread_ts``), a Telegram ``Message`` with ``reply_to_message``, and a
WeCom 智能机器人 message with a ``quote``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from typing import Any
from urllib.parse import urlencode

import pytest
import redis
from flask.testing import FlaskClient

from relay.intake.sources.msgcrypt import MsgCrypt
from tests.intake.sources.support import stored_event

FEISHU_TOKEN = "v3rification-T0ken"
SLACK_SECRET = "9e3c1f0a6b2d4e8f7a5c3b1d0e9f8a7b"
TELEGRAM_SECRET = "s3cr3t_Token-42"
WECOM_TOKEN = "hJqcu3uJ9Tn2gXPmxx2w9kkCkCE2EPYo"
WECOM_KEY = "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt"
SOURCES: list[dict[str, Any]] = [
    {"id": "fs", "kind": "feishu", "verification_token": FEISHU_TOKEN},
    {"id": "slack", "kind": "slack", "signing_secret": SLACK_SECRET},
    {"id": "tg", "kind": "telegram", "secret_token": TELEGRAM_SECRET},
    # A 智能机器人 seals its callbacks for ReceiveId "": corp_id is empty.
    {
        "id": "wbot",
        "kind": "wecom",
        "token": WECOM_TOKEN,
        "encoding_aes_key": WECOM_KEY,
        "corp_id": "",
    },
]


def stored(client: FlaskClient, redis_client: redis.Redis, url: str, **request: Any) -> Any:
    response = client.post(url, **request)
    assert response.status_code == 200, response.get_data(as_text=True)
    event_id = response.headers.get("X-Relay-Event-Id") or response.get_json()["event_id"]
    return stored_event(redis_client, event_id)


# -- Feishu ------------------------------------------------------------------------------------


def feishu_message(message_id: str, *, root_id: str = "", parent_id: str = "") -> dict[str, Any]:
    """An ``im.message.receive_v1`` callback shaped as the open-platform example."""
    message = {
        "message_id": message_id,
        "root_id": root_id,
        "parent_id": parent_id,
        "create_time": "1700000000456",
        "chat_id": "oc_5ad11d72b830411d72b836c20",
        "chat_type": "group",
        "message_type": "text",
        "content": json.dumps({"text": "on it"}),
        "mentions": [],
    }
    if root_id:
        message["thread_id"] = "omt_d4be107c616"
    return {
        "schema": "2.0",
        "header": {
            "event_id": uuid.uuid4().hex,
            "event_type": "im.message.receive_v1",
            "create_time": "1700000000123",
            "token": FEISHU_TOKEN,
            "app_id": "cli_9e28cb7ba56a100e",
            "tenant_key": "736588c9260f175e",
        },
        "event": {
            "sender": {
                "sender_id": {"open_id": "ou_84aad35d084aa403a838cf73ee18467"},
                "sender_type": "user",
                "tenant_key": "736588c9260f175e",
            },
            "message": message,
        },
    }


def feishu(client: FlaskClient, redis_client: redis.Redis, payload: dict[str, Any]) -> Any:
    return stored(client, redis_client, "/hooks/fs", json=payload)


def test_feishu_thread_reply_names_the_thread_root(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    root = feishu(client, redis_client, feishu_message("om_root0001"))
    assert root["in_reply_to"] is None
    # A reply to a reply inside the thread: parent is the middle message, root the first.
    payload = feishu_message("om_reply0003", root_id="om_root0001", parent_id="om_reply0002")
    reply = feishu(client, redis_client, payload)
    assert reply["message_id"] == "om_reply0003"
    assert reply["in_reply_to"] == root["message_id"]


def test_feishu_quoted_reply_without_a_root_names_its_parent(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    payload = feishu_message("om_reply0004", parent_id="om_root0001")
    assert feishu(client, redis_client, payload)["in_reply_to"] == "om_root0001"


# -- Slack -------------------------------------------------------------------------------------


def slack(client: FlaskClient, redis_client: redis.Redis, event: dict[str, Any]) -> Any:
    body = json.dumps(
        {
            "team_id": "T061EG9R6",
            "api_app_id": "A0APP0001",
            "event": event,
            "type": "event_callback",
            "event_id": "Ev" + uuid.uuid4().hex[:10].upper(),
            "event_time": 1700000000,
        }
    ).encode()
    stamp = str(int(time.time()))
    mac = hmac.new(SLACK_SECRET.encode(), f"v0:{stamp}:".encode() + body, hashlib.sha256)
    headers = {
        "Content-Type": "application/json",
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": "v0=" + mac.hexdigest(),
    }
    return stored(client, redis_client, "/hooks/slack", data=body, headers=headers)


ROOT_TS = "1482960137.003543"


def slack_message(ts: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": "message",
        "channel": "C061EG9SL",
        "user": "U061F7AUR",
        "text": "on it",
        "ts": ts,
        "event_ts": ts,
        "channel_type": "channel",
        **extra,
    }


@pytest.mark.parametrize(
    "extra",
    [{}, {"thread_ts": ROOT_TS, "reply_count": 1, "latest_reply": "1483037603.017503"}],
    ids=["plain", "root-of-a-thread"],
)
def test_slack_root_message_answers_nothing(
    client: FlaskClient, redis_client: redis.Redis, extra: dict[str, Any]
) -> None:
    root = slack(client, redis_client, slack_message(ROOT_TS, **extra))
    assert root["message_id"] == f"C061EG9SL:{ROOT_TS}"
    assert root["in_reply_to"] is None


@pytest.mark.parametrize("kind", ["message", "app_mention"])
def test_slack_thread_reply_names_the_root(
    client: FlaskClient, redis_client: redis.Redis, kind: str
) -> None:
    root = slack(client, redis_client, slack_message(ROOT_TS))
    event = slack_message(
        "1483037603.017503", type=kind, thread_ts=ROOT_TS, parent_user_id="U0G9QF9C6"
    )
    reply = slack(client, redis_client, event)
    assert reply["message_id"] == "C061EG9SL:1483037603.017503"
    assert reply["in_reply_to"] == root["message_id"]


def test_slack_edited_thread_reply_keeps_its_root(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    inner = {k: v for k, v in slack_message("1483037603.017503").items() if k != "channel"}
    edited = {
        "type": "message",
        "subtype": "message_changed",
        "channel": "C061EG9SL",
        "hidden": True,
        "message": {**inner, "thread_ts": ROOT_TS, "text": "on it (edited)"},
        "ts": "1483037604.017600",
    }
    assert slack(client, redis_client, edited)["in_reply_to"] == f"C061EG9SL:{ROOT_TS}"


# -- Telegram ----------------------------------------------------------------------------------

CHAT = {"id": -1001234567890, "title": "Ops", "type": "supergroup"}
ADA = {"id": 42, "is_bot": False, "first_name": "Ada"}
GRACE = {"id": 43, "is_bot": False, "first_name": "Grace"}


def telegram(client: FlaskClient, redis_client: redis.Redis, update: dict[str, Any]) -> Any:
    headers = {"X-Telegram-Bot-Api-Secret-Token": TELEGRAM_SECRET}
    return stored(client, redis_client, "/hooks/tg", json=update, headers=headers)


def test_telegram_reply_names_the_message_it_answers(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    original = {
        "message_id": 7,
        "from": ADA,
        "chat": CHAT,
        "date": 1700000000,
        "text": "disk full on db-2",
    }
    first = telegram(client, redis_client, {"update_id": 1000, "message": original})
    assert first["in_reply_to"] is None
    answer = {
        "message_id": 9,
        "from": GRACE,
        "chat": CHAT,
        "date": 1700000300,
        "text": "done",
        "reply_to_message": original,
    }
    reply = telegram(client, redis_client, {"update_id": 1001, "message": answer})
    assert reply["message_id"] == "-1001234567890:9"
    assert reply["in_reply_to"] == first["message_id"] == "-1001234567890:7"


# -- WeCom 智能机器人 ---------------------------------------------------------------------------


def wecom(client: FlaskClient, redis_client: redis.Redis, message: dict[str, Any]) -> Any:
    encrypt = MsgCrypt(WECOM_KEY, "").encrypt(json.dumps(message).encode())
    stamp, nonce = str(int(time.time())), "1597212914"
    parts = "".join(sorted([WECOM_TOKEN, stamp, nonce, encrypt]))
    query = {
        "msg_signature": hashlib.sha1(parts.encode()).hexdigest(),
        "timestamp": stamp,
        "nonce": nonce,
    }
    return stored(
        client,
        redis_client,
        f"/hooks/wbot?{urlencode(query)}",
        data=json.dumps({"encrypt": encrypt}).encode(),
        headers={"Content-Type": "application/json"},
    )


def wecom_text(msgid: str, content: str, **extra: Any) -> dict[str, Any]:
    return {
        "msgid": msgid,
        "aibotid": "AIBOTID",
        "chatid": "CHATID",
        "chattype": "group",
        "from": {"userid": "USERID"},
        "response_url": "https://qyapi.weixin.qq.com/cgi-bin/aibot/response?response_code=X",
        "msgtype": "text",
        "text": {"content": content},
        **extra,
    }


def test_wecom_documented_quote_has_no_id_to_follow(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    """The documented ``quote`` carries the quoted content only: nothing to link."""
    quote = {"msgtype": "text", "text": {"content": "disk full on db-2"}}
    event = wecom(client, redis_client, wecom_text("CAIQ16HMjQYY01", "@Bot done", quote=quote))
    assert event["text"] == "@Bot done" and event["in_reply_to"] is None


def test_wecom_quote_with_an_id_names_the_original(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    original = wecom(client, redis_client, wecom_text("CAIQ16HMjQYY02", "@Bot disk full"))
    quote = {"msgid": "CAIQ16HMjQYY02", "msgtype": "text", "text": {"content": "disk full"}}
    reply = wecom(client, redis_client, wecom_text("CAIQ16HMjQYY03", "@Bot done", quote=quote))
    assert reply["in_reply_to"] == original["message_id"] == "CAIQ16HMjQYY02"
