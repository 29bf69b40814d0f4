"""``telegram`` source: the secret header, the ``Update`` → ``GroupEvent`` mapping, dedupe.

Telegram (and SafeW) sign nothing: ``setWebhook``'s ``secret_token`` comes back in
``X-Telegram-Bot-Api-Secret-Token`` (protocols.md A5). Requests go through the real
receiver and Redis; stored events are read back from ``relay.state.keys.event(id)``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient
from hypothesis import given
from hypothesis import strategies as st

from relay.errors import ConfigError, Unauthorized
from relay.intake.sources.telegram import TelegramSource
from relay.state import keys
from tests.intake.sources.support import (
    FUZZ,
    LATIN1,
    any_json,
    assert_refused,
    assert_repeated_header_refused,
    build_source,
    fuzz_json,
    inbound,
    stored_event,
)

HEADER = "X-Telegram-Bot-Api-Secret-Token"
SECRET = "s3cr3t_Token-42"
BOT_TOKEN = "7000000001:AAFD39kkdpWt3ywyRZergyOLMaJhac60qc"
BOT_ID = 7000000001
CHAT = {"id": -1001234567890, "title": "Ops", "type": "supergroup"}
ADA = {"id": 42, "is_bot": False, "first_name": "Ada", "last_name": "Lovelace", "username": "ada"}
GRACE = {"id": 43, "is_bot": False, "first_name": "Grace"}
BOT_USER = {"id": BOT_ID, "is_bot": True, "first_name": "Relay", "username": "relay_bot"}
SOURCES: list[dict[str, Any]] = [
    {
        "id": "tg",
        "kind": "telegram",
        "secret_token": SECRET,
        "bot_token": BOT_TOKEN,
        "bot_username": "@Relay_Bot",
    },
    {
        "id": "safew",
        "kind": "telegram",
        "secret_token": SECRET,
        "secret_header": "X-SafeW-Bot-Api-Secret-Token",
        "api_base": "https://api.safew.org",
    },
    {"id": "pollonly", "kind": "telegram", "bot_token": BOT_TOKEN},
]


def message(**fields: Any) -> dict[str, Any]:
    return {"message_id": 7, "from": ADA, "chat": CHAT, "date": 1700000000, **fields}


def update(update_id: int = 1000, kind: str = "message", **fields: Any) -> dict[str, Any]:
    return {"update_id": update_id, kind: message(**fields)}


def headers(secret: str | None = SECRET, name: str = HEADER) -> dict[str, str]:
    result = {"Content-Type": "application/json"}
    if secret is not None:
        result[name] = secret
    return result


def source(**options: Any) -> TelegramSource:
    return build_source(TelegramSource, {"id": "t", "kind": "telegram", **options})


def post(client: FlaskClient, body: Any, hdrs: dict[str, str] | None = None) -> Any:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post("/hooks/tg", data=data, headers=headers() if hdrs is None else hdrs)


def stored(client: FlaskClient, redis_client: redis.Redis, body: Any) -> dict[str, Any]:
    """Post a correctly authenticated update; the event as stored in Redis."""
    response = post(client, body)
    assert response.status_code == 200, response.get_data(as_text=True)
    return stored_event(redis_client, response.get_json()["event_id"])


# -- the protocol facts (protocols.md A5) and options ------------------------------------------


def test_header_name_and_secret_rule_as_documented() -> None:
    """``secret_token``: 1-256 characters of A-Z a-z 0-9 _ - (core.telegram.org#setwebhook)."""
    assert source(secret_token="x").options.secret_header == "X-Telegram-Bot-Api-Secret-Token"
    for good in ("a", "A" * 256, "Az09_-", "-" * 10):
        source(secret_token=good)
    for bad in ("", "A" * 257, "with space", "dot.ted", "ü", "a/b", "a+b="):
        with pytest.raises(ConfigError) as info:
            source(secret_token=bad)
        assert "secret_token" in str(info.value)
        assert bad not in str(info.value) or bad == ""  # the secret is never echoed


@pytest.mark.parametrize(
    ("options", "where"),
    [
        ({}, "set secret_token"),
        ({"secret_token": "x", "bot_token": "no-colon"}, "bot_token"),
        ({"secret_token": "x", "bot_token": "12:ab/cd"}, "bot_token"),
        ({"secret_token": "x", "api_base": "ftp://api.telegram.org"}, "api_base"),
        ({"secret_token": "x", "api_base": "https://u:p@api.telegram.org"}, "api_base"),
        ({"secret_token": "x", "secret_header": "Bad Header"}, "secret_header"),
        ({"secret_token": "x", "bot_username": "not a name"}, "bot_username"),
        ({"secret_token": "x", "poll_timeout": 301}, "poll_timeout"),
        ({"secret_token": "x", "allowed_updates": ["Message!"]}, "allowed_updates"),
        ({"secret_token": "x", "unknown": 1}, "unknown key"),
    ],
)
def test_config_errors(options: dict[str, Any], where: str) -> None:
    with pytest.raises(ConfigError) as info:
        source(**options)
    assert where in str(info.value)
    assert "12:ab/cd" not in str(info.value)


def test_secrets_stay_out_of_repr_and_defaults() -> None:
    tg = source(secret_token=SECRET, bot_token=BOT_TOKEN, api_base="https://api.safew.org/")
    text = repr(tg.options) + repr(tg.config)
    assert SECRET not in text and BOT_TOKEN not in text
    assert tg.options.api_base == "https://api.safew.org"
    assert (tg.options.poll_timeout, tg.options.poll_limit) == (25, 100)
    assert tg.bot.id == BOT_ID  # a bot token starts with the bot's user id
    assert tg.default_dedupe_ttl >= 86400
    assert source(secret_token="x", bot_username="@My_Bot").bot.username == "my_bot"


# -- verification ----------------------------------------------------------------------------


def test_verify_unit() -> None:
    tg = source(secret_token=SECRET)
    tg.verify(inbound(headers()))
    cases = {
        "missing_secret": [headers(None), headers("")],
        "invalid_secret_token": [
            headers(SECRET[:-1]),
            headers(SECRET + "x"),
            headers(SECRET.upper()),
            headers(SECRET[:-1] + chr(ord(SECRET[-1]) ^ 1)),
            headers("x" * 300),
            headers("sécret☃"),
        ],
    }
    for code, requests in cases.items():
        for request in requests:
            with pytest.raises(Unauthorized) as info:
                tg.verify(inbound(request))
            assert info.value.code == code
    assert_repeated_header_refused(tg, {HEADER: SECRET}, HEADER, b"{}")


def test_every_bit_flip_of_the_secret_is_refused(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    body = update()
    for i in range(len(SECRET)):
        for bit in (1, 2, 4, 32):
            char = chr(ord(SECRET[i]) ^ bit)
            if not char.isprintable():
                continue  # a control character cannot be sent in a header at all
            flipped = SECRET[:i] + char + SECRET[i + 1 :]
            response = post(client, body, headers(flipped))
            assert_refused(response, 401, "invalid_secret_token", redis_client)


@pytest.mark.parametrize(
    ("source_id", "hdrs", "code"),
    [
        ("tg", headers(None), "missing_secret"),
        ("tg", headers("wrong"), "invalid_secret_token"),
        ("tg", headers(SECRET, "X-Telegram-Bot-Api-Secret"), "missing_secret"),
        ("safew", headers(SECRET), "missing_secret"),  # only its configured header counts
        ("pollonly", headers(SECRET), "webhook_disabled"),
    ],
)
def test_refused_over_http(
    client: FlaskClient,
    redis_client: redis.Redis,
    source_id: str,
    hdrs: dict[str, str],
    code: str,
) -> None:
    response = client.post(f"/hooks/{source_id}", data=json.dumps(update()), headers=hdrs)
    assert_refused(response, 401, code, redis_client)


def test_safew_header_variant(client: FlaskClient, redis_client: redis.Redis) -> None:
    hdrs = headers(SECRET, "X-SafeW-Bot-Api-Secret-Token")
    response = client.post("/hooks/safew", data=json.dumps(update()), headers=hdrs)
    assert response.status_code == 200
    assert redis_client.llen(keys.FANOUT_QUEUE) == 1


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        (b'{"update_id": 1', "application/json", 400, "invalid_json"),
        (b"\xff\xfe{}", "application/json", 400, "invalid_json"),
        (b'{"update_id": NaN}', "application/json", 400, "invalid_json"),
        (b'{"update_id": 1, "update_id": 2}', "application/json", 400, "invalid_json"),
        (b"[1, 2]", "application/json", 400, "invalid_update"),
        (b'{"message": {}}', "application/json", 400, "invalid_update"),
        (b'{"update_id": "1"}', "application/json", 400, "invalid_update"),
        (b'{"update_id": true}', "application/json", 400, "invalid_update"),
        (b'{"update_id": -5}', "application/json", 400, "invalid_update"),
        (b'{"update_id": 1.5}', "application/json", 400, "invalid_update"),
        (b'{"update_id": 1}', "text/plain", 415, "unsupported_media_type"),
        (b'{"update_id": 1}', "", 415, "unsupported_media_type"),
        (b"update_id=1", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
    ],
)
def test_bad_bodies_after_a_valid_secret(
    client: FlaskClient,
    redis_client: redis.Redis,
    body: bytes,
    content_type: str,
    status: int,
    code: str,
) -> None:
    hdrs = {HEADER: SECRET}
    if content_type:
        hdrs["Content-Type"] = content_type
    assert_refused(post(client, body, hdrs), status, code, redis_client)


def test_secret_checked_before_body(client: FlaskClient, redis_client: redis.Redis) -> None:
    assert_refused(post(client, b"not json", headers("nope")), 401, None, redis_client)


def test_body_bit_flips_never_5xx(client: FlaskClient, redis_client: redis.Redis) -> None:
    """The body is not signed (documented): a flipped body is parsed as sent, or refused."""
    body = json.dumps(update(text="@relay_bot hi", entities=[])).encode()
    for i in range(0, len(body), 3):
        flipped = body[:i] + bytes([body[i] ^ 0x04]) + body[i + 1 :]
        response = post(client, flipped)
        assert response.status_code in (200, 400, 422), response.get_data(as_text=True)


def test_get_is_not_a_handshake(client: FlaskClient) -> None:
    response = client.get("/hooks/tg", headers=headers())
    assert response.status_code == 405


# -- mapping ---------------------------------------------------------------------------------


def test_text_message_with_mentions(client: FlaskClient, redis_client: redis.Redis) -> None:
    text = "😀 @grace and Ada, ping @Relay_Bot"  # the emoji is 2 UTF-16 units
    entities = [
        {"type": "mention", "offset": 3, "length": 6},
        {"type": "text_mention", "offset": 14, "length": 3, "user": ADA},
        {"type": "mention", "offset": 24, "length": 10},
        {"type": "bold", "offset": 0, "length": 2},
    ]
    body = update(555, text=text, entities=entities)
    event = stored(client, redis_client, body)
    assert event["type"] == "message.created"
    assert event["group"] == {"id": "-1001234567890", "name": "Ops"}
    assert event["sender"] == {"id": "42", "name": "Ada Lovelace"}
    assert event["text"] == text
    assert event["mentions"] == [
        {"id": "@grace", "name": None},
        {"id": "42", "name": "Ada Lovelace"},
        {"id": "@Relay_Bot", "name": None},
    ]
    assert event["mentions_bot"] is True
    assert event["message_id"] == "-1001234567890:7"
    assert event["occurred_at"].startswith("2023-11-14T22:13:20")
    assert event["raw"] == body
    assert event["source"] == "tg" and event["files"] == []


@pytest.mark.parametrize(
    ("text", "entity", "to_bot"),
    [
        ("hi @grace", {"type": "mention", "offset": 3, "length": 6}, False),
        ("hi @relay_bot", {"type": "mention", "offset": 3, "length": 10}, True),
        ("hi Relay", {"type": "text_mention", "offset": 3, "length": 5, "user": BOT_USER}, True),
        ("/deploy@relay_bot now", {"type": "bot_command", "offset": 0, "length": 17}, True),
        ("/deploy@other_bot", {"type": "bot_command", "offset": 0, "length": 17}, False),
        ("/deploy", {"type": "bot_command", "offset": 0, "length": 7}, False),
        ("hi @relay_bot", {"type": "mention", "offset": 3, "length": 99}, False),  # out of range
        ("hi @relay_bot", {"type": "mention", "offset": -1, "length": 3}, False),
        ("hi", {"type": "text_mention", "offset": 0, "length": 2, "user": "x"}, False),
    ],
)
def test_mentions_bot(
    client: FlaskClient,
    redis_client: redis.Redis,
    text: str,
    entity: dict[str, Any],
    to_bot: bool,
) -> None:
    event = stored(client, redis_client, update(text=text, entities=[entity]))
    assert event["type"] == "message.created"
    assert event["mentions_bot"] is to_bot


def test_photo_with_caption_is_file_shared(client: FlaskClient, redis_client: redis.Redis) -> None:
    sizes = [
        {"file_id": "small", "file_unique_id": "u1", "width": 90, "height": 60, "file_size": 900},
        {
            "file_id": "big",
            "file_unique_id": "u3",
            "width": 1280,
            "height": 853,
            "file_size": 90000,
        },
        {"file_id": "mid", "file_unique_id": "u2", "width": 320, "height": 213, "file_size": 9000},
    ]
    caption = "look @grace"
    body = update(
        photo=sizes,
        caption=caption,
        caption_entities=[{"type": "mention", "offset": 5, "length": 6}],
    )
    event = stored(client, redis_client, body)
    assert event["type"] == "file.shared"
    assert event["text"] == caption
    assert event["mentions"] == [{"id": "@grace", "name": None}]
    assert event["files"] == [
        {"name": "photo.jpg", "size": 90000, "mime": "image/jpeg", "url": None, "ref": "big"}
    ]


@pytest.mark.parametrize(
    ("field", "obj", "expected"),
    [
        (
            "document",
            {"file_id": "D1", "file_name": "report.pdf", "mime_type": "application/pdf",
             "file_size": 2048},
            {"name": "report.pdf", "size": 2048, "mime": "application/pdf", "ref": "D1"},
        ),
        (
            "audio",
            {"file_id": "A1", "title": "Song", "duration": 3, "mime_type": "audio/mpeg"},
            {"name": "Song", "size": None, "mime": "audio/mpeg", "ref": "A1"},
        ),
        (
            "video",
            {"file_id": "V1", "width": 1, "height": 1, "duration": 1, "file_size": 10},
            {"name": "video.mp4", "size": 10, "mime": "video/mp4", "ref": "V1"},
        ),
        (
            "voice",
            {"file_id": "O1", "duration": 2},
            {"name": "voice.ogg", "size": None, "mime": "audio/ogg", "ref": "O1"},
        ),
    ],
)  # fmt: skip
def test_files(
    client: FlaskClient,
    redis_client: redis.Redis,
    field: str,
    obj: dict[str, Any],
    expected: dict[str, Any],
) -> None:
    event = stored(client, redis_client, {"update_id": 1000, "message": message(**{field: obj})})
    assert event["type"] == "file.shared"
    assert event["text"] is None
    assert event["files"] == [{**expected, "url": None}]


def test_animation_is_one_file_not_two(client: FlaskClient, redis_client: redis.Redis) -> None:
    """Telegram also sets ``document`` on an animation, with the same file_id."""
    gif = {"file_id": "G1", "file_name": "fun.mp4", "mime_type": "video/mp4"}
    event = stored(client, redis_client, update(animation=gif, document=gif))
    assert [f["ref"] for f in event["files"]] == ["G1"]


def test_no_bot_token_in_any_event(client: FlaskClient, redis_client: redis.Redis) -> None:
    event = stored(client, redis_client, update(document={"file_id": "D9"}))
    assert BOT_TOKEN not in json.dumps(event)
    assert event["files"][0]["url"] is None and event["files"][0]["ref"] == "D9"


def test_members_joined_and_left(client: FlaskClient, redis_client: redis.Redis) -> None:
    joined = stored(client, redis_client, update(1, new_chat_members=[GRACE, BOT_USER]))
    assert joined["type"] == "member.joined"
    assert joined["mentions"] == [
        {"id": "43", "name": "Grace"},
        {"id": str(BOT_ID), "name": "Relay"},
    ]
    assert joined["mentions_bot"] is True
    assert joined["sender"]["id"] == "42"
    left = stored(client, redis_client, update(2, left_chat_member=GRACE))
    assert left["type"] == "member.left"
    assert left["mentions"] == [{"id": "43", "name": "Grace"}]
    assert left["mentions_bot"] is False


def test_group_updated(client: FlaskClient, redis_client: redis.Redis) -> None:
    titled = stored(client, redis_client, update(1, new_chat_title="Ops 2"))
    assert titled["type"] == "group.updated"
    assert titled["group"] == {"id": "-1001234567890", "name": "Ops 2"}
    photo = [{"file_id": "P1", "width": 640, "height": 640}]
    pictured = stored(client, redis_client, update(2, new_chat_photo=photo))
    assert pictured["type"] == "group.updated"
    assert [f["ref"] for f in pictured["files"]] == ["P1"]
    removed = stored(client, redis_client, update(3, delete_chat_photo=True))
    assert removed["type"] == "group.updated"


def test_edited_message_is_custom_with_context(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    body = update(9, "edited_message", text="fixed @grace", edit_date=1700000100,
                  entities=[{"type": "mention", "offset": 6, "length": 6}])  # fmt: skip
    event = stored(client, redis_client, body)
    assert event["type"] == "custom"
    assert event["text"] == "fixed @grace"
    assert event["mentions"] == [{"id": "@grace", "name": None}]
    assert event["message_id"] == "-1001234567890:7"
    assert event["occurred_at"].startswith("2023-11-14T22:15:00")
    assert "edited_message" in event["raw"]


def test_channel_post_sender_is_the_channel(client: FlaskClient, redis_client: redis.Redis) -> None:
    channel = {"id": -1009, "title": "News", "type": "channel"}
    post_body = {
        "update_id": 5,
        "channel_post": {
            "message_id": 3,
            "sender_chat": channel,
            "chat": channel,
            "date": 1700000000,
            "text": "release 1.2",
        },
    }
    event = stored(client, redis_client, post_body)
    assert event["type"] == "message.created"
    assert event["group"] == event["sender"] == {"id": "-1009", "name": "News"}


def test_other_updates_are_custom(client: FlaskClient, redis_client: redis.Redis) -> None:
    callback = {
        "update_id": 11,
        "callback_query": {"id": "cb1", "from": ADA, "message": message(), "data": "ack"},
    }
    event = stored(client, redis_client, callback)
    assert event["type"] == "custom"
    assert event["group"]["id"] == "-1001234567890"
    assert event["sender"]["id"] == "42"
    assert event["raw"] == callback
    sticker = stored(client, redis_client, update(12, sticker={"file_id": "S", "type": "x"}))
    assert sticker["type"] == "custom" and sticker["sender"]["id"] == "42"
    bare = stored(client, redis_client, {"update_id": 13})
    assert bare["type"] == "custom" and bare["group"] is None


def test_odd_field_types_give_thinner_events(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    body = {
        "update_id": 14,
        "message": {
            "message_id": "x",
            "from": {"id": True, "first_name": 5},
            "chat": {"id": 1.5, "title": ["t"]},
            "date": 10**20,
            "text": "hi",
            "entities": "not a list",
            "photo": [{"file_id": 3}, "x"],
            "document": {"file_id": "D", "file_size": -4, "file_name": "n" * 5000},
        },
    }
    event = stored(client, redis_client, body)
    assert event["type"] == "file.shared"
    assert event["group"] is None and event["sender"] is None and event["message_id"] is None
    assert event["files"][0]["size"] is None and len(event["files"][0]["name"]) == 1024


# -- dedupe and replies ----------------------------------------------------------------------


def test_duplicate_update_id(client: FlaskClient, redis_client: redis.Redis) -> None:
    body = update(777, text="once")
    first = post(client, body)
    assert first.status_code == 200
    assert first.get_json() == {"event_id": first.get_json()["event_id"]}
    for _ in range(3):
        again = post(client, body)
        assert again.status_code == 200
        assert again.get_json() == {"event_id": first.get_json()["event_id"], "duplicate": True}
    assert redis_client.llen(keys.FANOUT_QUEUE) == 1
    ttl = redis_client.ttl(keys.dedupe("tg", "777"))
    assert 2 * 86400 - 60 < ttl <= 2 * 86400
    assert post(client, update(778, text="other")).get_json().get("duplicate") is None
    assert redis_client.llen(keys.FANOUT_QUEUE) == 2


def test_sample_is_accepted(client: FlaskClient, redis_client: redis.Redis) -> None:
    app = client.application
    tg = app.extensions["relay"].sources["tg"]
    signed = tg.sample()
    assert signed.headers[HEADER] == SECRET
    response = client.post("/hooks/tg", data=signed.body, headers=signed.headers)
    assert response.status_code == 200
    event = stored_event(redis_client, response.get_json()["event_id"])
    assert event["type"] == "message.created" and event["mentions_bot"] is True
    assert {m["id"] for m in event["mentions"]} == {"@Relay_Bot", "@grace"}
    assert tg.sample().body != signed.body  # a fresh update_id: not a duplicate
    custom = tg.sample(b'{"update_id": 1}')
    assert custom.body == b'{"update_id": 1}' and custom.headers[HEADER] == SECRET


# -- property: never a 5xx -------------------------------------------------------------------

json_values = any_json(key=8)
entity = st.fixed_dictionaries(
    {"type": st.sampled_from(["mention", "text_mention", "bot_command", "bold"])},
    optional={
        "offset": st.one_of(st.integers(-3, 40), json_values),
        "length": st.one_of(st.integers(-3, 40), json_values),
        "user": st.one_of(st.fixed_dictionaries({"id": json_values}), json_values),
    },
)
message_like = st.fixed_dictionaries(
    {},
    optional={
        key: st.one_of(json_values, value)
        for key, value in {
            "message_id": st.integers(),
            "from": st.fixed_dictionaries({"id": st.integers(), "first_name": st.text()}),
            "chat": st.fixed_dictionaries({"id": st.integers(), "title": st.text()}),
            "date": st.integers(),
            "text": st.text(max_size=40),
            "caption": st.text(max_size=40),
            "entities": st.lists(entity, max_size=4),
            "photo": st.lists(st.dictionaries(st.sampled_from(["file_id", "width"]), json_values)),
            "document": st.dictionaries(
                st.sampled_from(["file_id", "file_name", "file_size", "mime_type"]), json_values
            ),
            "new_chat_members": st.lists(json_values, max_size=3),
            "left_chat_member": json_values,
            "new_chat_title": json_values,
        }.items()
    },
)
update_like = st.builds(
    lambda update_id, kind, payload: {"update_id": update_id, kind: payload},
    st.one_of(st.integers(min_value=0, max_value=2**63), json_values),
    st.sampled_from(["message", "edited_message", "channel_post", "poll"]),
    message_like,
)


@FUZZ
@given(
    body=st.binary(max_size=1000),
    secret=st.none() | st.just(SECRET) | st.text(LATIN1, max_size=60),
    content_type=st.sampled_from(["application/json", "text/plain", "", "application/x+json"]),
    source_id=st.sampled_from(["tg", "safew", "pollonly"]),
)
def test_arbitrary_bytes_and_headers(
    fuzz_client: FlaskClient, body: bytes, secret: str | None, content_type: str, source_id: str
) -> None:
    hdrs = {"Content-Type": content_type}
    if secret is not None:
        hdrs[HEADER] = secret
    fuzz_json(fuzz_client.post(f"/hooks/{source_id}", data=body, headers=hdrs), "event_id")


@FUZZ
@given(value=st.one_of(json_values, update_like))
def test_arbitrary_json_with_the_secret(fuzz_client: FlaskClient, value: Any) -> None:
    response = fuzz_client.post("/hooks/tg", data=json.dumps(value), headers=headers())
    fuzz_json(response, "event_id")
    assert response.status_code in (200, 400), response.get_data(as_text=True)
    well_formed = (
        isinstance(value, dict) and type(value.get("update_id")) is int and value["update_id"] >= 0
    )
    assert (response.status_code == 200) == well_formed


# -- links back to the message ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("chat", "link"),
    [
        (CHAT, "https://t.me/c/1234567890/7"),  # a private supergroup: for its members
        ({**CHAT, "username": "acme_ops"}, "https://t.me/acme_ops/7"),  # a public one
        ({"id": -4012345, "title": "Ops", "type": "group"}, None),  # a basic group: none
        ({"id": 42, "type": "private"}, None),
    ],
)
def test_a_message_links_back_to_itself_where_telegram_has_a_link(
    client: FlaskClient, redis_client: redis.Redis, chat: dict[str, Any], link: str | None
) -> None:
    event = stored(client, redis_client, update(chat=chat, text="task Fix the login"))
    assert event.get("link") == link


def test_links_follow_the_server_and_the_option(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    public = update(chat={**CHAT, "username": "acme_ops"}, text="hi")
    safew = client.post(
        "/hooks/safew",
        data=json.dumps(public),
        headers=headers(SECRET, "X-SafeW-Bot-Api-Secret-Token"),
    )
    assert safew.status_code == 200  # a SafeW chat has no t.me link
    assert stored_event(redis_client, safew.get_json()["event_id"])["link"] is None

    def link(**options: Any) -> str | None:
        return source(secret_token=SECRET, **options).parse_update(public).event.link

    assert link() == "https://t.me/acme_ops/7"
    assert link(api_base="https://api.safew.org") is None
    own = link(api_base="https://api.safew.org", message_links="https://safew.example/")
    assert own == "https://safew.example/acme_ops/7"
    assert link(message_links="") is None
    with pytest.raises(ConfigError, match="message_links must be an https URL"):
        link(message_links="http://t.me")
