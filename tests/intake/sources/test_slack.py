"""``slack`` source: Slack's official vector, handshakes, every event kind, slash commands,
a bad-input matrix, dedupe of Slack's retries and a property test that never sees a 5xx.

Signatures are computed here with ``hmac``/``hashlib`` directly, not with the module's
own helper, so a mistake in the module cannot cancel itself out. Everything past the
vector goes through the real receiver (Flask test client) and a real Redis.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any
from urllib.parse import urlencode

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import given
from hypothesis import strategies as st

from relay.config.loader import parse_config
from relay.errors import ConfigError, Unauthorized
from relay.intake.sources import slack
from relay.state import keys
from tests.intake.sources.support import (
    FUZZ,
    LATIN1,
    Headers,
    Mutation,
    any_json,
    assert_refused,
    assert_repeated_header_refused,
    build_source,
    drawn,
    flip,
    fuzz_answer,
    inbound,
    signed_sample,
    stored_event,
    tamper,
    with_header,
)

# -- Slack's own vector (slackapi/python-slack-sdk, from Slack's docs) ---------------------------
V_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
V_TS = "1531420618"
V_BODY = (
    b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&"
    b"channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&"
    b"command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands"
    b"%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&"
    b"trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
)
V_SIG = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"

SECRET = "9e3c1f0a6b2d4e8f7a5c3b1d0e9f8a7b"
OLD_SECRET = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
BOT = "U0BOT0001"
TEAM = "T0TEAM001"
FORM = "application/x-www-form-urlencoded"
WORKSPACE = "https://acme.slack.com"
SOURCES: list[dict[str, Any]] = [
    {
        "id": "slack",
        "kind": "slack",
        "signing_secret": SECRET,
        "signing_secrets": [OLD_SECRET],
        "bot_user_id": BOT,
    },
    {"id": "team", "kind": "slack", "signing_secret": SECRET, "team_id": TEAM},
    {"id": "vector", "kind": "slack", "signing_secret": V_SECRET, "tolerance": "100000d"},
    {"id": "quiet", "kind": "slack", "signing_secret": SECRET, "command_ack": ""},
    {"id": "linked", "kind": "slack", "signing_secret": SECRET, "workspace_url": WORKSPACE},
]


def mac(secret: str, ts: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), b"v0:" + ts.encode() + b":" + body, hashlib.sha256)
    return "v0=" + digest.hexdigest()


def sign(
    body: bytes, *, secret: str = SECRET, ts: int | None = None, content_type: str | None = None
) -> dict[str, str]:
    """The headers Slack sends with ``body``."""
    stamp = str(int(time.time()) if ts is None else ts)
    if content_type is None:
        content_type = "application/json" if body[:1] == b"{" else FORM
    return {
        "Content-Type": content_type,
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": mac(secret, stamp, body),
    }


def envelope(event: dict[str, Any], *, event_id: str = "Ev0000001", team: str = TEAM) -> bytes:
    body = {
        "token": "XXYYZZ",
        "team_id": team,
        "api_app_id": "A0APP0001",
        "event": event,
        "type": "event_callback",
        "event_id": event_id,
        "event_time": 1700000000,
        "authorizations": [{"team_id": team, "user_id": BOT, "is_bot": True}],
    }
    return json.dumps(body).encode()


def command(**extra: str) -> bytes:
    fields = {
        "token": "unused",
        "team_id": TEAM,
        "team_domain": "acme",
        "channel_id": "C0OPS0001",
        "channel_name": "ops",
        "user_id": "U0ADA0001",
        "user_name": "ada",
        "command": "/deploy",
        "text": f"relay to prod, cc <@U0GRACE01|grace> and <@{BOT}>",
        "api_app_id": "A0APP0001",
        "response_url": "https://hooks.slack.com/commands/T0TEAM001/1234/abcd",
        "trigger_id": "13345224609.738474920.8088930838d88f008e0",
        **extra,
    }
    return urlencode(fields).encode()


def source(**options: Any) -> slack.SlackSource:
    entry = {"id": "s", "kind": "slack", "signing_secret": SECRET, **options}
    return build_source(slack.SlackSource, entry)


def post(
    client: FlaskClient, body: bytes, headers: dict[str, str] | Headers, source_id: str = "slack"
) -> Any:
    return client.post(f"/hooks/{source_id}", data=body, headers=headers)


def accept(client: FlaskClient, redis_client: redis.Redis, body: bytes) -> dict[str, Any]:
    """Post a signed event; it must be answered 200 and queued. Returns the stored event."""
    response = post(client, body, sign(body))
    assert response.status_code == 200, response.get_data(as_text=True)
    event_id = response.headers["X-Relay-Event-Id"]
    if response.mimetype == "application/json" and body[:1] == b"{":
        assert response.get_json() == {"event_id": event_id}
    return stored_event(redis_client, event_id)


# -- the official vector -----------------------------------------------------------------------


def test_vector_signature() -> None:
    assert slack.signature(V_SECRET, V_TS, V_BODY) == V_SIG
    assert mac(V_SECRET, V_TS, V_BODY) == V_SIG


@pytest.mark.parametrize("skew", [0, 300, -300])
def test_vector_verifies_at_pinned_time(monkeypatch: pytest.MonkeyPatch, skew: int) -> None:
    monkeypatch.setattr("relay.intake.sources.slack.time.time", lambda: int(V_TS) + skew)
    headers = {"X-Slack-Request-Timestamp": V_TS, "X-Slack-Signature": V_SIG}
    source(signing_secret=V_SECRET).verify(inbound(headers, V_BODY))


@pytest.mark.parametrize("skew", [301, -301])
def test_vector_outside_window(monkeypatch: pytest.MonkeyPatch, skew: int) -> None:
    monkeypatch.setattr("relay.intake.sources.slack.time.time", lambda: int(V_TS) + skew)
    headers = {"X-Slack-Request-Timestamp": V_TS, "X-Slack-Signature": V_SIG}
    with pytest.raises(Unauthorized) as caught:
        source(signing_secret=V_SECRET).verify(inbound(headers, V_BODY))
    assert caught.value.code == "stale_timestamp"


def test_vector_through_receiver(client: FlaskClient, redis_client: redis.Redis) -> None:
    headers = {
        "Content-Type": FORM,
        "X-Slack-Request-Timestamp": V_TS,
        "X-Slack-Signature": V_SIG,
    }
    response = post(client, V_BODY, headers, "vector")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json() == {"response_type": "ephemeral", "text": "Received"}
    event = stored_event(redis_client, response.headers["X-Relay-Event-Id"])
    assert event["type"] == "message.created"
    assert event["text"] == "/webhook-collect"
    assert event["group"] == {"id": "G8PSS9T3V", "name": "foobar"}
    assert event["sender"] == {"id": "U2CERLKJA", "name": "roadrunner"}
    assert event["occurred_at"].startswith("2018-07-12T18:36:58")
    assert event["reply"]["kind"] == "slack_response_url"
    assert event["reply"]["url"] == (
        "https://hooks.slack.com/commands/T1DC2JH3J/397700885554/96rGlfmibIGlgcZRskXaIFfN"
    )
    assert event["reply"]["expires_at"].startswith("2018-07-12T19:06:58")
    assert event["raw"]["trigger_id"] == "398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
    assert event["raw"]["text"] == ""
    trigger = "trigger:398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
    assert redis_client.exists(keys.dedupe("vector", trigger))
    assert redis_client.llen(keys.FANOUT_QUEUE) == 1


def test_vector_refused_with_default_tolerance(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    headers = {"Content-Type": FORM, "X-Slack-Request-Timestamp": V_TS, "X-Slack-Signature": V_SIG}
    assert_refused(post(client, V_BODY, headers, "team"), 401, "stale_timestamp", redis_client)


# -- handshakes ----------------------------------------------------------------------------------

CHALLENGE = {
    "token": "Jhj5dZrVaK7ZwHHjRyZWjbDl",
    "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
    "type": "url_verification",
}


def test_url_verification(client: FlaskClient, redis_client: redis.Redis) -> None:
    body = json.dumps(CHALLENGE).encode()
    response = post(client, body, sign(body))
    assert response.status_code == 200
    assert response.get_json() == {"challenge": CHALLENGE["challenge"]}
    assert redis_client.llen(keys.FANOUT_QUEUE) == 0


@pytest.mark.parametrize(
    "headers, code",
    [
        ({"Content-Type": "application/json"}, "missing_signature"),
        ({"X-Slack-Signature": "v0=" + "0" * 64}, "missing_timestamp"),
        ({"X-Slack-Signature": "v0=" + "0" * 64, "X-Slack-Request-Timestamp": "1"}, None),
    ],
)
def test_url_verification_must_be_signed(
    client: FlaskClient, redis_client: redis.Redis, headers: dict[str, str], code: str | None
) -> None:
    body = json.dumps(CHALLENGE).encode()
    headers = {"Content-Type": "application/json", **headers}
    assert_refused(post(client, body, headers), 401, code, redis_client)


def test_url_verification_with_wrong_secret(client: FlaskClient, redis_client: redis.Redis) -> None:
    body = json.dumps(CHALLENGE).encode()
    response = post(client, body, sign(body, secret="not-the-secret"))
    assert_refused(response, 401, "invalid_signature", redis_client)


def test_url_verification_without_challenge(client: FlaskClient, redis_client: redis.Redis) -> None:
    body = json.dumps({"type": "url_verification", "challenge": 5}).encode()
    assert_refused(post(client, body, sign(body)), 400, "missing_challenge", redis_client)


def test_url_verification_in_escapes_is_not_queued(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    body = b'{"type": "url\\u005fverification", "challenge": "x"}'
    assert_refused(post(client, body, sign(body)), 400, "invalid_payload", redis_client)


def test_ssl_check(client: FlaskClient, redis_client: redis.Redis) -> None:
    body = b"ssl_check=1&token=unused"
    response = post(client, body, {"Content-Type": FORM})
    assert response.status_code == 200 and response.get_data() == b""
    assert redis_client.llen(keys.FANOUT_QUEUE) == 0


def test_get_is_not_allowed(client: FlaskClient) -> None:
    assert client.get("/hooks/slack").status_code == 405


# -- events, kind by kind ---------------------------------------------------------------------

MESSAGE = {
    "type": "message",
    "channel": "C0OPS0001",
    "channel_type": "channel",
    "user": "U0ADA0001",
    "text": "deploy done <@U0GRACE01> <@U0LIN0001|lin> <@U0GRACE01|grace> <!here> <#C0OTHER01>",
    "ts": "1700000123.000200",
    "event_ts": "1700000123.000200",
}


@pytest.mark.parametrize(
    ("markup", "plain"),
    [
        ("a&lt;b &amp; c&gt;d", "a<b & c>d"),
        ("&amp;lt; stays one level deep", "&lt; stays one level deep"),
        (
            "<https://ci.example.com/42|build 42> failed",
            "build 42 (https://ci.example.com/42) failed",
        ),
        ("see <https://example.com>", "see https://example.com"),
        ("mail <mailto:ada@example.com|Ada>", "mail Ada (mailto:ada@example.com)"),
        ("in <#C0OPS0001|ops> and <#C0OTHER01>", "in #ops and #C0OTHER01"),
        ("<!here> <!channel> <!everyone>", "@here @channel @everyone"),
        ("<!subteam^S0TEAM001|@oncall> please", "@oncall please"),
        ("<!date^1392734382^{date}|Feb 18, 2014> it is", "Feb 18, 2014 it is"),
        ("*bold* _it_ `code` ~s~", "*bold* _it_ `code` ~s~"),
    ],
)
def test_text_is_plain_text_with_the_markup_kept_in_raw(
    client: FlaskClient, redis_client: redis.Redis, markup: str, plain: str
) -> None:
    event = accept(client, redis_client, envelope({**MESSAGE, "text": markup}))
    assert event["text"] == plain
    assert event["raw"]["event"]["text"] == markup


def test_plain_message(client: FlaskClient, redis_client: redis.Redis) -> None:
    event = accept(client, redis_client, envelope(MESSAGE))
    assert event["type"] == "message.created"
    assert event["group"] == {"id": "C0OPS0001", "name": None}
    assert event["sender"] == {"id": "U0ADA0001", "name": None}
    assert event["text"] == "deploy done @U0GRACE01 @lin @grace @here #C0OTHER01"
    assert event["raw"]["event"]["text"] == MESSAGE["text"]  # the platform's own markup
    assert event["mentions"] == [
        {"id": "U0GRACE01", "name": "grace"},
        {"id": "U0LIN0001", "name": "lin"},
    ]
    assert event["mentions_bot"] is False
    assert event["message_id"] == "C0OPS0001:1700000123.000200"
    assert event["occurred_at"].startswith("2023-11-14T22:15:23.0002")
    assert event["raw"]["event"] == MESSAGE and event["raw"]["event_id"] == "Ev0000001"
    assert event["raw"]["authorizations"][0]["user_id"] == BOT and "token" not in event["raw"]
    assert redis_client.exists(keys.dedupe("slack", "Ev0000001"))


def test_message_mentioning_the_bot(client: FlaskClient, redis_client: redis.Redis) -> None:
    event = accept(client, redis_client, envelope({**MESSAGE, "text": f"<@{BOT}> status?"}))
    assert event["mentions_bot"] is True
    assert event["mentions"] == [{"id": BOT, "name": None}]


def test_app_mention(client: FlaskClient, redis_client: redis.Redis) -> None:
    mention = {
        "type": "app_mention",
        "user": "U061F7AUR",
        "text": "<@U0LAN0Z89> is it everything a river should be?",
        "ts": "1515449522.000016",
        "channel": "C0LAN2Q65",
        "event_ts": "1515449522000016",
    }
    event = accept(client, redis_client, envelope(mention))
    assert event["type"] == "message.created"
    assert event["mentions_bot"] is True  # app_mention means the bot, whatever its id
    assert event["group"]["id"] == "C0LAN2Q65" and event["sender"]["id"] == "U061F7AUR"
    assert event["message_id"] == "C0LAN2Q65:1515449522.000016"
    assert event["occurred_at"].startswith("2018-01-08T22:12:02.000016")


def test_bot_message(client: FlaskClient, redis_client: redis.Redis) -> None:
    bot = {
        "type": "message",
        "subtype": "bot_message",
        "channel": "C0OPS0001",
        "bot_id": "B0CI00001",
        "username": "ci",
        "text": "build 42 passed",
        "ts": "1700000200.000100",
    }
    event = accept(client, redis_client, envelope(bot))
    assert event["type"] == "message.created"
    assert event["sender"] == {"id": "B0CI00001", "name": "ci"}
    assert event["text"] == "build 42 passed"


FILE = {
    "id": "F04EEHX1EES",
    "name": "report.pdf",
    "title": "Report",
    "mimetype": "application/pdf",
    "size": 12345,
    "url_private": "https://files.slack.com/files-pri/T0TEAM001-F04EEHX1EES/report.pdf",
}


def test_file_share_message(client: FlaskClient, redis_client: redis.Redis) -> None:
    share = {
        **MESSAGE,
        "subtype": "file_share",
        "text": "here it is",
        "files": [FILE, {"id": "F12345678", "mode": "file_access"}, "junk", {"name": "no id"}],
        "upload": True,
    }
    event = accept(client, redis_client, envelope(share))
    assert event["type"] == "file.shared"
    assert event["text"] == "here it is"
    assert event["files"] == [
        {
            "name": "report.pdf",
            "size": 12345,
            "mime": "application/pdf",
            "url": FILE["url_private"],
            "ref": "F04EEHX1EES",
        },
        {"name": "F12345678", "size": None, "mime": None, "url": None, "ref": "F12345678"},
    ]


def test_file_shared_event(client: FlaskClient, redis_client: redis.Redis) -> None:
    shared = {
        "type": "file_shared",
        "channel_id": "C0OPS0001",
        "file_id": "F2147483862",
        "user_id": "U0ADA0001",
        "file": {"id": "F2147483862"},
        "event_ts": "1700000300.000100",
    }
    event = accept(client, redis_client, envelope(shared))
    assert event["type"] == "file.shared"
    assert event["group"]["id"] == "C0OPS0001" and event["sender"]["id"] == "U0ADA0001"
    assert event["files"] == [
        {"name": "F2147483862", "size": None, "mime": None, "url": None, "ref": "F2147483862"}
    ]
    assert event["message_id"] is None
    assert event["occurred_at"].startswith("2023-11-14T22:18:20")


@pytest.mark.parametrize(
    "inner, kind, sender",
    [
        (
            {
                "type": "member_joined_channel",
                "user": "W06GH7XHN",
                "channel": "C0OPS0001",
                "channel_type": "C",
                "team": TEAM,
                "inviter": "U0ADA0001",
            },
            "member.joined",
            "U0ADA0001",
        ),
        (
            {
                "type": "member_joined_channel",
                "user": "W06GH7XHN",
                "channel": "C0OPS0001",
                "channel_type": "C",
                "team": TEAM,
            },
            "member.joined",
            "W06GH7XHN",
        ),
        (
            {
                "type": "member_left_channel",
                "user": "W06GH7XHN",
                "channel": "C0OPS0001",
                "channel_type": "C",
                "team": TEAM,
            },
            "member.left",
            "W06GH7XHN",
        ),
        (
            {
                "type": "message",
                "subtype": "channel_join",
                "channel": "C0OPS0001",
                "ts": "1358877458.000011",
                "user": "W06GH7XHN",
                "text": "<@W06GH7XHN|cal> has joined the channel",
                "inviter": "U0ADA0001",
            },
            "member.joined",
            "U0ADA0001",
        ),
        (
            {
                "type": "message",
                "subtype": "channel_leave",
                "channel": "C0OPS0001",
                "ts": "1358877458.000012",
                "user": "W06GH7XHN",
                "text": "<@W06GH7XHN|cal> has left the channel",
            },
            "member.left",
            "W06GH7XHN",
        ),
    ],
)
def test_member_events(
    client: FlaskClient, redis_client: redis.Redis, inner: dict[str, Any], kind: str, sender: str
) -> None:
    event = accept(client, redis_client, envelope(inner))
    assert event["type"] == kind
    assert event["group"]["id"] == "C0OPS0001"
    assert [m["id"] for m in event["mentions"]] == ["W06GH7XHN"]
    assert event["sender"]["id"] == sender
    if inner["type"] == "message":  # the name Slack wrote in the text is kept
        assert event["mentions"][0]["name"] == "cal"


def test_channel_rename(client: FlaskClient, redis_client: redis.Redis) -> None:
    rename = {
        "type": "channel_rename",
        "channel": {"id": "C02ELGNBH", "name": "new_name", "created": 1360782804},
        "event_ts": "1700000400.000100",
    }
    event = accept(client, redis_client, envelope(rename))
    assert event["type"] == "group.updated"
    assert event["group"] == {"id": "C02ELGNBH", "name": "new_name"}


@pytest.mark.parametrize(
    "inner",
    [
        {"type": "channel_archive", "channel": "C0OPS0001", "user": "U0ADA0001"},
        {"type": "group_unarchive", "channel": "C0OPS0001", "user": "U0ADA0001"},
        {
            "type": "message",
            "subtype": "channel_topic",
            "channel": "C0OPS0001",
            "user": "U0ADA0001",
            "topic": "hello world",
            "text": "<@U0ADA0001|ada> set the channel topic: hello world",
            "ts": "1358877455.000010",
        },
    ],
)
def test_other_group_updates(
    client: FlaskClient, redis_client: redis.Redis, inner: dict[str, Any]
) -> None:
    event = accept(client, redis_client, envelope(inner))
    assert event["type"] == "group.updated"
    assert event["group"]["id"] == "C0OPS0001" and event["sender"]["id"] == "U0ADA0001"


def test_channel_name_message(client: FlaskClient, redis_client: redis.Redis) -> None:
    renamed = {
        "type": "message",
        "subtype": "channel_name",
        "channel": "C0OPS0001",
        "ts": "1358877455.000010",
        "user": "U0ADA0001",
        "old_name": "random",
        "name": "watercooler",
        "text": '<@U0ADA0001|ada> has renamed the channel from "random" to "watercooler"',
    }
    event = accept(client, redis_client, envelope(renamed))
    assert event["type"] == "group.updated"
    assert event["group"] == {"id": "C0OPS0001", "name": "watercooler"}


def test_message_changed_is_custom(client: FlaskClient, redis_client: redis.Redis) -> None:
    changed = {
        "type": "message",
        "subtype": "message_changed",
        "hidden": True,
        "channel": "C0OPS0001",
        "ts": "1358878755.000001",
        "message": {
            "type": "message",
            "user": "U0ADA0001",
            "text": "Hello, world!",
            "ts": "1355517523.000005",
            "edited": {"user": "U0ADA0001", "ts": "1358878755.000001"},
        },
    }
    event = accept(client, redis_client, envelope(changed))
    assert event["type"] == "custom"
    assert event["text"] == "Hello, world!" and event["sender"]["id"] == "U0ADA0001"
    assert event["message_id"] == "C0OPS0001:1355517523.000005"  # the message that was edited


def test_message_deleted_is_custom(client: FlaskClient, redis_client: redis.Redis) -> None:
    deleted = {
        "type": "message",
        "subtype": "message_deleted",
        "hidden": True,
        "channel": "C0OPS0001",
        "ts": "1358878755.000001",
        "deleted_ts": "1358878749.000002",
    }
    event = accept(client, redis_client, envelope(deleted))
    assert event["type"] == "custom"
    assert event["message_id"] == "C0OPS0001:1358878749.000002"
    assert event["occurred_at"].startswith("2013-01-22T18:19:15")


def test_unknown_event_is_custom(client: FlaskClient, redis_client: redis.Redis) -> None:
    reaction = {
        "type": "reaction_added",
        "user": "U0ADA0001",
        "reaction": "thumbsup",
        "item": {"type": "message", "channel": "C0OPS0001", "ts": "1360782400.498405"},
        "event_ts": "1360782804.083113",
    }
    event = accept(client, redis_client, envelope(reaction))
    assert event["type"] == "custom" and event["raw"]["event"] == reaction
    assert event["sender"]["id"] == "U0ADA0001"


def test_app_rate_limited(client: FlaskClient, redis_client: redis.Redis) -> None:
    body = json.dumps(
        {
            "token": "x",
            "type": "app_rate_limited",
            "team_id": TEAM,
            "minute_rate_limited": 1518467820,
            "api_app_id": "A0APP0001",
        }
    ).encode()
    event = accept(client, redis_client, body)
    assert event["type"] == "custom"
    assert event["occurred_at"].startswith("2018-02-12T20:37:00")
    assert redis_client.exists(keys.dedupe("slack", "app_rate_limited:1518467820"))


def test_rich_text_without_text(client: FlaskClient, redis_client: redis.Redis) -> None:
    blocks = [
        {
            "type": "rich_text",
            "elements": [
                {
                    "type": "rich_text_section",
                    "elements": [
                        {"type": "text", "text": "ping "},
                        {"type": "user", "user_id": BOT},
                        {"type": "text", "text": " see "},
                        {"type": "link", "url": "https://example.com"},
                        {"type": "emoji", "name": "tada"},
                    ],
                },
                {
                    "type": "rich_text_list",
                    "elements": [
                        {"type": "rich_text_section", "elements": [{"type": "text", "text": "a"}]},
                        {"type": "rich_text_section", "elements": [{"type": "text", "text": "b"}]},
                    ],
                },
            ],
        }
    ]
    event = accept(client, redis_client, envelope({**MESSAGE, "text": "", "blocks": blocks}))
    assert event["text"] == f"ping @{BOT} see https://example.com:tada:\n- a\n- b"
    assert event["mentions_bot"] is True


# -- slash commands ------------------------------------------------------------------------------


def test_slash_command(client: FlaskClient, redis_client: redis.Redis) -> None:
    body = command()
    response = post(client, body, sign(body))
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.get_json() == {"response_type": "ephemeral", "text": "Received"}
    event = stored_event(redis_client, response.headers["X-Relay-Event-Id"])
    assert event["type"] == "message.created"
    assert event["text"] == f"/deploy relay to prod, cc @grace and @{BOT}"
    assert event["group"] == {"id": "C0OPS0001", "name": "ops"}
    assert event["sender"] == {"id": "U0ADA0001", "name": "ada"}
    assert event["mentions"] == [{"id": "U0GRACE01", "name": "grace"}, {"id": BOT, "name": None}]
    assert event["mentions_bot"] is True
    assert event["reply"]["url"] == "https://hooks.slack.com/commands/T0TEAM001/1234/abcd"
    assert event["raw"]["command"] == "/deploy" and event["raw"]["team_domain"] == "acme"
    assert "token" not in event["raw"]  # Slack's deprecated verification token is not passed on


def test_slash_command_with_empty_ack(client: FlaskClient, redis_client: redis.Redis) -> None:
    body = command()
    response = post(client, body, sign(body), "quiet")
    assert response.status_code == 200 and response.get_data() == b""
    assert redis_client.llen(keys.FANOUT_QUEUE) == 1


def test_slash_command_foreign_response_url_is_not_a_reply_handle(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    body = command(response_url="https://evil.example/commands/1")
    event = stored_event(redis_client, post(client, body, sign(body)).headers["X-Relay-Event-Id"])
    assert event["reply"] is None
    assert event["raw"]["response_url"] == "https://evil.example/commands/1"


def test_command_then_event_answers_differ(client: FlaskClient) -> None:
    """The reply kind is per request: an event after a command gets the event answer."""
    body = command()
    assert post(client, body, sign(body)).get_json()["response_type"] == "ephemeral"
    body = envelope(MESSAGE)
    assert set(post(client, body, sign(body)).get_json()) == {"event_id"}


# -- workspace check and rotation ------------------------------------------------------------------


def test_team_id_accepts_own_workspace(client: FlaskClient, redis_client: redis.Redis) -> None:
    body = envelope(MESSAGE)
    assert post(client, body, sign(body), "team").status_code == 200
    body = command()
    assert post(client, body, sign(body), "team").status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        envelope(MESSAGE, team="T0OTHER01"),
        command(team_id="T0OTHER01"),
        json.dumps({"type": "event_callback", "event_id": "Ev1", "event": MESSAGE}).encode(),
    ],
)
def test_team_id_refuses_other_workspace(
    client: FlaskClient, redis_client: redis.Redis, body: bytes
) -> None:
    assert_refused(post(client, body, sign(body), "team"), 401, "wrong_team", redis_client)


@pytest.mark.parametrize("secret", [SECRET, OLD_SECRET])
def test_rotation(client: FlaskClient, redis_client: redis.Redis, secret: str) -> None:
    body = envelope(MESSAGE)
    assert post(client, body, sign(body, secret=secret)).status_code == 200


@pytest.mark.parametrize(
    "options, message",
    [
        ({}, "set signing_secret"),
        ({"signing_secret": ""}, "signing_secret is empty"),
        ({"signing_secrets": []}, "set signing_secret"),
        ({"signing_secrets": ["a", ""]}, "signing_secrets[1] is empty"),
        ({"signing_secret": "a", "bot_user_id": "<@U1>"}, "bot_user_id"),
        ({"signing_secret": "a", "token": "x"}, "unknown key"),
    ],
)
def test_config_errors(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"sources": [{"id": "s", "kind": "slack", **options}]})
    assert message in str(caught.value)
    assert "<@U1>" not in str(caught.value)


def test_secrets_are_not_in_repr() -> None:
    assert SECRET not in repr(source().options)


# -- the bad-input matrix ----------------------------------------------------------------------


def _flip_hex(signature: str) -> str:
    last = "0" if signature[-1] != "0" else "1"
    return signature[:-1] + last


NOW = int(time.time())
SIG = "x_slack_signature"
TS = "x_slack_request_timestamp"
MATRIX: dict[str, tuple[Mutation, int, str | None]] = {
    "body bit flip": (tamper(body=lambda b: flip(b, 5)), 401, "invalid_signature"),
    "body last byte flip": (tamper(body=lambda b: flip(b, len(b) - 1)), 401, "invalid_signature"),
    "body appended": (tamper(body=lambda b: b + b" "), 401, "invalid_signature"),
    "body truncated": (tamper(body=lambda b: b[:-1]), 401, "invalid_signature"),
    "timestamp changed": (tamper(**{TS: lambda t: str(int(t) - 1)}), 401, "invalid_signature"),
    "signature bit flip": (tamper(**{SIG: _flip_hex}), 401, "invalid_signature"),
    "signature upper-case v0": (
        tamper(**{SIG: lambda s: "V0" + s[2:]}),
        401,
        "malformed_signature",
    ),
    "signature v1": (tamper(**{SIG: lambda s: "v1" + s[2:]}), 401, "malformed_signature"),
    "signature without prefix": (tamper(**{SIG: lambda s: s[3:]}), 401, "malformed_signature"),
    "signature short": (tamper(**{SIG: lambda s: s[:-2]}), 401, "malformed_signature"),
    "signature long": (tamper(**{SIG: lambda s: s + "00"}), 401, "malformed_signature"),
    "signature not hex": (tamper(**{SIG: "v0=" + "zz" * 32}), 401, "malformed_signature"),
    "signature unicode": (tamper(**{SIG: "v0=✓☃"}), 401, "malformed_signature"),
    "signature of the wrong secret": (
        tamper(**{SIG: lambda s: mac("wrong", str(NOW), b"")}),
        401,
        "invalid_signature",
    ),
    "stale timestamp": (tamper(**{TS: str(NOW - 301)}), 401, "stale_timestamp"),
    "future timestamp": (tamper(**{TS: str(NOW + 3600)}), 401, "stale_timestamp"),
    "timestamp in ms": (tamper(**{TS: str(NOW * 1000)}), 401, "invalid_timestamp"),
    "timestamp not digits": (tamper(**{TS: "yesterday"}), 401, "invalid_timestamp"),
    "timestamp negative": (tamper(**{TS: "-5"}), 401, "invalid_timestamp"),
    "timestamp superscript": (tamper(**{TS: lambda t: t[:-1] + "²"}), 401, "invalid_timestamp"),
    "timestamp arabic digits": (tamper(**{TS: "١٢٣"}), 401, "invalid_timestamp"),
    "missing signature": (tamper(**{SIG: None}), 401, "missing_signature"),
    "empty signature": (tamper(**{SIG: ""}), 401, "missing_signature"),
    "missing timestamp": (tamper(**{TS: None}), 401, "missing_timestamp"),
    "no Slack headers": (tamper(**{SIG: None, TS: None}), 401, "missing_signature"),
    "duplicate signature": (tamper(**{SIG: lambda v: [v, v]}), 401, "malformed_signature"),
    "duplicate timestamp": (tamper(**{TS: lambda v: [v, v]}), 401, "invalid_timestamp"),
}


@pytest.mark.parametrize("name", list(MATRIX))
@pytest.mark.parametrize("kind", ["event", "command"])
def test_bad_input_matrix(
    client: FlaskClient, redis_client: redis.Redis, name: str, kind: str
) -> None:
    mutate, status, code = MATRIX[name]
    body = envelope(MESSAGE, event_id="EvMatrix") if kind == "event" else command()
    headers, body = mutate(sign(body), body)
    assert_refused(post(client, body, headers), status, code, redis_client)
    assert not redis_client.keys(keys.dedupe("slack", "*"))


SIGNED_BAD: dict[str, tuple[bytes, str, int, str]] = {
    "text/plain": (envelope(MESSAGE), "text/plain", 415, "unsupported_media_type"),
    "no content type": (envelope(MESSAGE), "", 415, "unsupported_media_type"),
    "multipart": (command(), "multipart/form-data", 415, "unsupported_media_type"),
    "form as json": (command(), "application/json", 400, "invalid_json"),
    "json as form": (envelope(MESSAGE), FORM, 400, "invalid_form"),
    "invalid json": (b'{"type": "event_callback",', "application/json", 400, "invalid_json"),
    "json not utf-8": (b'{"type": "\xff"}', "application/json", 400, "invalid_json"),
    "json NaN": (b'{"type": "event_callback", "x": NaN}', "application/json", 400, "invalid_json"),
    "json duplicate key": (b'{"type": "a", "type": "b"}', "application/json", 400, "invalid_json"),
    "json array": (b"[1, 2]", "application/json", 400, "invalid_payload"),
    "json without type": (b'{"event": {}}', "application/json", 400, "invalid_payload"),
    "callback without event_id": (
        json.dumps({"type": "event_callback", "event": MESSAGE}).encode(),
        "application/json",
        400,
        "invalid_payload",
    ),
    "callback event not object": (
        json.dumps({"type": "event_callback", "event_id": "Ev1", "event": "x"}).encode(),
        "application/json",
        400,
        "invalid_payload",
    ),
    "over-long channel": (
        envelope({**MESSAGE, "channel": "C" * 300}),
        "application/json",
        422,
        "invalid_event",
    ),
    "form duplicate field": (command() + b"&text=again", FORM, 400, "duplicate_field"),
    "form bare word": (command() + b"&oops", FORM, 400, "invalid_form"),
    "form empty pair": (command() + b"&&", FORM, 400, "invalid_form"),
    "form nameless": (command() + b"&=x", FORM, 400, "invalid_form"),
    "form bad utf-8 escape": (
        command(text="%ff").replace(b"%25ff", b"%ff"),
        FORM,
        400,
        "invalid_form",
    ),
    "form raw bad utf-8": (b"command=/x&text=\xff", FORM, 400, "invalid_form"),
    "form too many fields": (
        b"&".join(b"f%d=1" % i for i in range(100)),
        FORM,
        400,
        "invalid_form",
    ),
    "form empty": (b"", FORM, 400, "not_a_command"),
    "form without command": (b"payload=%7B%7D", FORM, 400, "not_a_command"),
    "form command without slash": (command(command="deploy"), FORM, 400, "not_a_command"),
    "form over-long user": (command(user_id="U" * 300), FORM, 422, "invalid_event"),
}


@pytest.mark.parametrize("name", list(SIGNED_BAD))
def test_signed_but_malformed(client: FlaskClient, redis_client: redis.Redis, name: str) -> None:
    body, content_type, status, code = SIGNED_BAD[name]
    response = post(client, body, sign(body, content_type=content_type))
    assert_refused(response, status, code, redis_client)


@pytest.mark.parametrize("name", ["x-slack-signature", "x-slack-request-timestamp"])
def test_duplicate_header_seen_by_source_is_400(name: str) -> None:
    """Where a server keeps repeated headers apart, the source refuses them with a 400."""
    body = envelope(MESSAGE)
    assert_repeated_header_refused(source(), sign(body), name, body)


# -- dedupe of Slack's retries -------------------------------------------------------------------


def test_retry_after_success_is_a_duplicate(client: FlaskClient, redis_client: redis.Redis) -> None:
    body = envelope(MESSAGE, event_id="Ev0RETRY01")
    first = post(client, body, sign(body))
    assert first.status_code == 200
    original = first.get_json()["event_id"]
    for attempt in ("1", "2", "3"):
        headers = {
            **sign(body),  # Slack signs each attempt afresh
            "X-Slack-Retry-Num": attempt,
            "X-Slack-Retry-Reason": "http_timeout",
        }
        again = post(client, body, headers)
        assert again.status_code == 200
        assert again.get_json() == {"event_id": original, "duplicate": True}
    assert redis_client.llen(keys.FANOUT_QUEUE) == 1
    ttl = redis_client.ttl(keys.dedupe("slack", "Ev0RETRY01"))
    assert 86400 - 60 < ttl <= 86400


def test_same_trigger_twice(client: FlaskClient, redis_client: redis.Redis) -> None:
    body = command()
    assert post(client, body, sign(body)).status_code == 200
    again = post(client, body, sign(body))
    assert again.status_code == 200
    assert again.get_json() == {"response_type": "ephemeral", "text": "Received"}
    assert redis_client.llen(keys.FANOUT_QUEUE) == 1


def test_different_event_ids_are_different_events(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    for i in range(3):
        body = envelope(MESSAGE, event_id=f"Ev{i}")
        assert post(client, body, sign(body)).status_code == 200
    assert redis_client.llen(keys.FANOUT_QUEUE) == 3


# -- samples ---------------------------------------------------------------------------------------


def test_sample_is_accepted(app: Flask, client: FlaskClient, redis_client: redis.Redis) -> None:
    sample = app.extensions["relay"].sources["slack"].sample()
    response = post(client, sample.body, sample.headers)
    assert response.status_code == 200
    event = stored_event(redis_client, response.get_json()["event_id"])
    assert event["type"] == "message.created" and event["group"]["id"] == "C0OPSROOM"
    assert event["mentions_bot"] is True  # the sample mentions the configured bot
    assert [m["id"] for m in event["mentions"]] == [BOT, "U0GRACE07"]
    again = app.extensions["relay"].sources["slack"].sample()
    assert post(client, again.body, again.headers).status_code == 200
    assert redis_client.llen(keys.FANOUT_QUEUE) == 2  # a fresh event_id each time


@pytest.mark.parametrize("source_id", ["team", "quiet"])
def test_sample_fits_the_source(
    app: Flask, client: FlaskClient, redis_client: redis.Redis, source_id: str
) -> None:
    """A workspace-restricted source accepts its sample; without bot_user_id, no bot mention."""
    sample = app.extensions["relay"].sources[source_id].sample()
    response = post(client, sample.body, sample.headers, source_id)
    assert response.status_code == 200
    event = stored_event(redis_client, response.get_json()["event_id"])
    assert event["mentions_bot"] is False
    assert event["mentions"][0]["id"] == slack.SAMPLE_BOT


def test_sample_signs_a_given_form(app: Flask, client: FlaskClient) -> None:
    sample = app.extensions["relay"].sources["slack"].sample(command())
    assert sample.headers["content-type"] == FORM
    assert post(client, sample.body, sample.headers).status_code == 200


# -- property: never a 5xx -----------------------------------------------------------------------

header_values = st.one_of(
    st.text(LATIN1, max_size=80),
    st.from_regex(r"\Av0=[0-9a-fA-F]{0,70}\Z"),
    st.integers(min_value=-(10**14), max_value=10**14).map(str),
)
content_types = st.sampled_from(["application/json", FORM, "text/plain", "", "application/x+json"])
json_values = any_json(text=30)
ids = st.one_of(st.from_regex(r"\A[A-Z0-9]{1,12}\Z"), json_values)
slack_event = st.fixed_dictionaries(
    {
        "type": st.sampled_from(
            ["message", "app_mention", "file_shared", "member_joined_channel", "channel_rename"]
            + ["member_left_channel", "group_archive", "reaction_added"]
        )
    },
    optional={
        "subtype": st.sampled_from(
            [None, "bot_message", "file_share", "channel_join", "channel_leave", "channel_name"]
            + ["message_changed", "message_deleted", "channel_topic", "ekm_access_denied"]
        ),
        "channel": st.one_of(ids, st.fixed_dictionaries({"id": ids, "name": json_values})),
        "channel_id": ids,
        "user": ids,
        "user_id": ids,
        "bot_id": ids,
        "inviter": ids,
        "username": json_values,
        "text": st.one_of(st.text(max_size=60), st.from_regex(r"\A(<@[A-Z0-9|a-z]{0,12}>| )*\Z")),
        "ts": st.one_of(st.from_regex(r"\A[0-9]{1,12}(\.[0-9]{0,9})?\Z"), json_values),
        "event_ts": json_values,
        "deleted_ts": json_values,
        "file_id": ids,
        "file": json_values,
        "files": st.lists(st.dictionaries(st.sampled_from(list(FILE)), json_values), max_size=2),
        "blocks": json_values,
        "message": json_values,
        "name": json_values,
    },
)
callback_body = st.fixed_dictionaries(
    {
        "type": st.just("event_callback"),
        "event": slack_event,
        "event_id": st.from_regex(r"\AEv[A-Z0-9]{1,10}\Z"),
    },
    optional={"event_time": json_values, "team_id": st.sampled_from([TEAM, "T0OTHER01"])},
)
envelope_like = st.fixed_dictionaries(
    {"type": st.sampled_from(["event_callback", "app_rate_limited", "url_verification", "other"])},
    optional={
        "event": st.one_of(slack_event, json_values),
        "event_id": ids,
        "event_time": json_values,
        "team_id": ids,
        "challenge": json_values,
        "minute_rate_limited": json_values,
    },
)
slack_body = st.one_of(callback_body, envelope_like)
form_fields = st.dictionaries(
    st.sampled_from(
        ["command", "text", "channel_id", "channel_name", "user_id", "user_name", "trigger_id"]
        + ["response_url", "team_id", "ssl_check"]
    ),
    st.one_of(st.text(max_size=40), st.sampled_from(["/deploy", "1", "https://hooks.slack.com/x"])),
)


def signed(app: Flask, body: bytes, content_type: str, source_id: str = "slack") -> dict[str, str]:
    headers, _ = signed_sample(app, source_id, body)
    headers["content-type"] = content_type
    return headers


@FUZZ
@given(body=st.binary(max_size=1500), content_type=content_types, data=st.data())
def test_fuzz_unsigned(
    fuzz_client: FlaskClient, body: bytes, content_type: str, data: st.DataObject
) -> None:
    names = ("X-Slack-Signature", "X-Slack-Request-Timestamp", "X-Slack-Retry-Num")
    headers = drawn(data, names, header_values, {"Content-Type": content_type})
    response = fuzz_client.post("/hooks/slack", data=body, headers=headers)
    fuzz_answer(response)
    if response.status_code < 300:  # only Slack's unsigned certificate probe gets through
        assert response.get_data() == b""


@FUZZ
@given(body=st.binary(max_size=1500), content_type=content_types)
def test_fuzz_signed_bytes(
    fuzz_app: Flask, fuzz_client: FlaskClient, body: bytes, content_type: str
) -> None:
    fuzz_answer(
        fuzz_client.post("/hooks/slack", data=body, headers=signed(fuzz_app, body, content_type))
    )


@FUZZ
@given(value=st.one_of(slack_body, json_values), source_id=st.sampled_from(["slack", "team"]))
def test_fuzz_signed_json(
    fuzz_app: Flask, fuzz_client: FlaskClient, value: Any, source_id: str
) -> None:
    body = json.dumps(value).encode()
    headers = signed(fuzz_app, body, "application/json", source_id)
    response = fuzz_client.post(f"/hooks/{source_id}", data=body, headers=headers)
    fuzz_answer(response)
    assert response.status_code in (200, 400, 401, 422)


@FUZZ
@given(fields=form_fields, source_id=st.sampled_from(["slack", "team"]))
def test_fuzz_signed_form(
    fuzz_app: Flask, fuzz_client: FlaskClient, fields: dict[str, str], source_id: str
) -> None:
    body = urlencode(fields).encode()
    response = fuzz_client.post(
        f"/hooks/{source_id}", data=body, headers=signed(fuzz_app, body, FORM, source_id)
    )
    fuzz_answer(response)
    assert response.status_code in (200, 400, 401, 422)


@FUZZ
@given(
    name=st.sampled_from(
        ["X-Slack-Signature", "X-Slack-Request-Timestamp", "Content-Type", "X-Slack-Retry-Num"]
    ),
    value=header_values,
)
def test_fuzz_one_header_replaced(
    fuzz_app: Flask, fuzz_client: FlaskClient, name: str, value: str
) -> None:
    body = envelope(MESSAGE, event_id="EvFuzzHeader")
    headers = with_header(signed(fuzz_app, body, "application/json"), name, value)
    fuzz_answer(fuzz_client.post("/hooks/slack", data=body, headers=headers))


# -- X-Slack-No-Retry on refusals a resend cannot fix -----------------------------------------


def test_a_body_that_is_not_an_event_tells_slack_not_to_resend(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    body = b'{"type": "event_callback"'  # cut short: never valid, however often resent
    response = post(client, body, sign(body))
    assert_refused(response, 400, "invalid_json", redis_client)
    assert response.headers["X-Slack-No-Retry"] == "1"


def test_a_wrong_content_type_tells_slack_not_to_resend(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    body = b"<xml/>"
    response = post(client, body, sign(body, content_type="application/xml"))
    assert_refused(response, 415, None, redis_client)
    assert response.headers["X-Slack-No-Retry"] == "1"


def test_a_bad_signature_leaves_slack_retrying(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    """A wrong signing secret may be corrected within Slack's retry window."""
    body = envelope({"type": "message", "text": "hi", "channel": "C1", "user": "U1"})
    response = post(client, body, sign(body, secret="not-the-secret"))
    assert_refused(response, 401, "invalid_signature", redis_client)
    assert "X-Slack-No-Retry" not in response.headers


def test_other_sources_never_send_the_slack_header(client: FlaskClient) -> None:
    response = client.post("/hooks/nope", data=b"{", headers={"Content-Type": "application/json"})
    assert response.status_code == 404
    assert "X-Slack-No-Retry" not in response.headers


# -- links back to the message ------------------------------------------------------------------


def test_with_workspace_url_a_message_links_back_as_chat_getpermalink_would(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    def linked(event: dict[str, Any], source_id: str = "linked") -> Any:
        body = envelope(event, event_id=f"Ev{len(event)}{event.get('ts', '')}")
        response = post(client, body, sign(body), source_id)
        assert response.status_code == 200, response.get_data(as_text=True)
        return stored_event(redis_client, response.headers["X-Relay-Event-Id"])["link"]

    base = f"{WORKSPACE}/archives/C0OPS0001/p1700000123000200"
    assert linked(MESSAGE) == base
    reply = {**MESSAGE, "ts": "1700000200.000300", "thread_ts": "1700000123.000200"}
    assert linked(reply) == (
        f"{WORKSPACE}/archives/C0OPS0001/p1700000200000300"
        "?thread_ts=1700000123.000200&cid=C0OPS0001"
    )
    joined = {"type": "member_joined_channel", "channel": "C0OPS0001", "user": "U0ADA0001"}
    assert linked(joined) is None  # not a message
    assert linked({**MESSAGE, "ts": "1700000999.000100"}, source_id="slack") is None


def test_workspace_url_is_a_slack_workspace() -> None:
    assert source(workspace_url="https://acme.enterprise.slack.com").options.workspace_url
    with pytest.raises(ConfigError, match="workspace_url"):
        source(workspace_url="https://evil.example/acme")
