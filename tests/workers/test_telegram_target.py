"""The ``telegram`` target against a loopback server that speaks the Bot API:
``/bot<token>/sendMessage`` and ``/sendDocument`` (JSON or form), the token checked,
HTML parsed as strictly as Telegram does, a per-chat limit answered with 429 +
``retry_after``, and every message recorded."""

from __future__ import annotations

import json
import math
import re
import socket
import threading
import time
from collections.abc import Callable
from functools import partial
from html.parser import HTMLParser
from typing import Any

import pytest
import redis
from pydantic import ValidationError
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from relay.config.loader import parse_config
from relay.config.models import TargetConfig
from relay.config.people import Person
from relay.errors import (
    ConfigError,
    PermanentDeliveryError,
    RetryableDeliveryError,
    TargetThrottled,
)
from relay.events import FileRef, Party
from relay.state import keys
from tests.workers.support import (
    assert_hidden,
    assert_registered,
    build_target,
    delivery_context,
    markup_message,
)
from workers.targets.telegram import TelegramTarget

TOKEN = "123456789:AAHs3cretT0kenValue_-xyz"
GROUP = -1001234567890
ALLOWED_TAGS = {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "a", "code", "pre"}
ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}


class TelegramHTML(HTMLParser):
    """Telegram's HTML parse mode: a few tags, four named entities, balanced tags."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.text: list[str] = []
        self.links: list[str] = []
        self.open: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in ALLOWED_TAGS:
            raise ValueError(f'Unsupported start tag "{tag}"')
        if tag == "a":
            self.links.append(dict(attrs).get("href") or "")
        self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.open or self.open.pop() != tag:
            raise ValueError(f'Unexpected end tag "{tag}"')

    def handle_data(self, data: str) -> None:
        if "<" in data or ">" in data:
            raise ValueError("Unexpected character")
        self.text.append(data)

    def handle_entityref(self, name: str) -> None:
        if name not in ENTITIES:
            raise ValueError(f'Unsupported entity "{name}"')
        self.text.append(ENTITIES[name])

    def handle_charref(self, name: str) -> None:
        self.text.append(chr(int(name[1:], 16) if name.lower().startswith("x") else int(name)))


def parse_html(text: str) -> tuple[str, list[str]]:
    parser = TelegramHTML()
    if re.search(r"&(?![A-Za-z]+;|#[0-9]+;|#x[0-9A-Fa-f]+;)", text):
        raise ValueError("Unexpected character: a bare &")
    parser.feed(text)
    parser.close()
    if parser.open:
        raise ValueError(f'Can\'t find end tag corresponding to start tag "{parser.open[-1]}"')
    return "".join(parser.text), parser.links


class FakeBotAPI:
    """A Bot API server for one bot; ``script`` answers come first, for error codes."""

    def __init__(self, server: HTTPServer, *, per_minute: int = 20) -> None:
        self.server = server
        self.per_minute = per_minute
        self.messages: list[dict[str, Any]] = []
        self.requests: list[Request] = []
        self.script: list[Response] = []
        self.chats: dict[int | str, str] = {GROUP: "ok", -42: "migrated", -43: "kicked"}
        self.sent: dict[str, list[float]] = {}
        self.lock = threading.Lock()
        uri = re.compile(r"^/bot[^/]*/[A-Za-z]+$")
        server.expect_request(uri, method="POST").respond_with_handler(self.handle)

    @property
    def api_base(self) -> str:
        return self.server.url_for("").rstrip("/")

    def handle(self, request: Request) -> Response:
        with self.lock:
            self.requests.append(request)
            if self.script:
                return self.script.pop(0)
            _, token, method = request.path.split("/", 2)
            if token.removeprefix("bot") != TOKEN:
                return error(401, "Unauthorized")
            if method not in ("sendMessage", "sendDocument"):
                return error(404, "Not Found")
            params = self.params(request)
            return self.send(method, params)

    @staticmethod
    def params(request: Request) -> dict[str, Any]:
        if request.mimetype == "application/json":
            data: dict[str, Any] = json.loads(request.get_data())
            return data
        return dict(request.form)

    def send(self, method: str, params: dict[str, Any]) -> Response:
        raw_chat = str(params.get("chat_id"))
        chat: int | str = int(raw_chat) if re.fullmatch(r"-?\d+", raw_chat) else raw_chat
        state = self.chats.get(chat)
        if state is None:
            return error(400, "Bad Request: chat not found")
        if state == "migrated":
            return error(
                400,
                "Bad Request: group chat was upgraded to a supergroup chat",
                migrate_to_chat_id=-1009999,
            )
        if state == "kicked":
            return error(403, "Forbidden: bot was kicked from the group chat")
        record = dict(params, method=method)
        if method == "sendMessage":
            text = str(params.get("text") or "")
            if params.get("parse_mode") == "HTML":
                try:
                    record["plain"], record["links"] = parse_html(text)
                except ValueError as exc:
                    return error(400, f"Bad Request: can't parse entities: {exc}")
            else:
                record["plain"] = text
            if not record["plain"].strip():
                return error(400, "Bad Request: message text is empty")
            if len(record["plain"]) > 4096:
                return error(400, "Bad Request: message is too long")
        elif "/private/" in str(params.get("document")):
            return error(400, "Bad Request: failed to get HTTP URL content")
        if wait := self.limited(str(chat)):
            return error(429, f"Too Many Requests: retry after {wait}", retry_after=wait)
        self.messages.append(record)
        return Response(
            json.dumps({"ok": True, "result": {"message_id": len(self.messages)}}),
            content_type="application/json",
        )

    def limited(self, chat: str) -> int:
        """Seconds to wait if the chat had ``per_minute`` messages in the last minute."""
        now = time.monotonic()
        recent = [t for t in self.sent.get(chat, []) if now - t < 60]
        self.sent[chat] = recent
        if len(recent) >= self.per_minute:
            return max(1, math.ceil(60 - (now - recent[0])))
        recent.append(now)
        return 0


def error(code: int, description: str, **parameters: Any) -> Response:
    body: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
    if parameters:
        body["parameters"] = parameters
    return Response(json.dumps(body), status=code, content_type="application/json")


@pytest.fixture
def bot(server: HTTPServer) -> FakeBotAPI:
    return FakeBotAPI(server)


def make_target(
    api_base: str, *, token: str = TOKEN, chat_id: int | str = GROUP, **options: Any
) -> TelegramTarget:
    return build_target(
        TelegramTarget, "tg", bot_token=token, chat_id=chat_id, api_base=api_base, **options
    )


context = partial(markup_message, "slack")


def assert_no_token(error: BaseException) -> None:
    assert_hidden(error, TOKEN, TOKEN.split(":")[1])


def test_registered_as_entry_point() -> None:
    assert_registered(TelegramTarget, "telegram", "notify")
    assert TelegramTarget.default_rate_limits == ("20/min", "1/s")


def test_send_message_in_html_with_user_content_escaped(bot: FakeBotAPI) -> None:
    text = "<script>alert(1)</script> & \"quotes\" 'single' &amp;"
    result = make_target(bot.api_base).deliver(context(text=text))
    assert result.status == 200 and result.excerpt == "message: ok"
    [message] = bot.messages
    assert message["method"] == "sendMessage" and message["chat_id"] == GROUP
    assert message["parse_mode"] == "HTML"
    assert message["text"].startswith("<b>Ops &amp; &lt;Infra&gt;</b> · Grace\n")
    assert message["plain"] == f"Ops & <Infra> · Grace\n{text}"
    assert "disable_notification" not in message and "message_thread_id" not in message
    assert bot.requests[-1].path == f"/bot{TOKEN}/sendMessage"


def test_notification_and_thread_options(bot: FakeBotAPI) -> None:
    target = make_target(bot.api_base, disable_notification=True, message_thread_id=77)
    target.deliver(context())
    message = bot.messages[-1]
    assert (message["disable_notification"], message["message_thread_id"]) == (True, 77)


def test_reply_answers_the_events_own_telegram_message(bot: FakeBotAPI) -> None:
    """A confirmation (a chained delivery of a Telegram event) answers the message."""
    target = make_target(bot.api_base, reply=True)
    from_telegram = delivery_context(message_id=f"{GROUP}:4242", source_kind="telegram")
    target.deliver(from_telegram)
    assert bot.messages[-1]["reply_parameters"] == {
        "message_id": 4242,
        "allow_sending_without_reply": True,
    }
    from_elsewhere = delivery_context(message_id="om_1", source_kind="feishu")
    target.deliver(from_elsewhere)
    assert "reply_parameters" not in bot.messages[-1]


def test_plain_parse_mode_sends_text_as_it_is(bot: FakeBotAPI) -> None:
    make_target(bot.api_base, parse_mode="none").deliver(context(text="a <b>not bold</b> &"))
    message = bot.messages[-1]
    assert "parse_mode" not in message
    assert message["text"] == "Ops & <Infra> · Grace\na <b>not bold</b> &"


def test_mentions_become_real_telegram_mentions(bot: FakeBotAPI) -> None:
    people = {
        "ada": Person(name="Ada <3", slack="U1", telegram="123456"),
        "bob": Person(name="Bob", slack="U2", telegram="@bob_ops"),
        "cy": Person(name="Cy", slack="U3", telegram="cy_handle"),
    }
    mentions = [Party(id=i, name=i) for i in ("U1", "U2", "U3")] + [Party(id="U4", name="Di&")]
    make_target(bot.api_base).deliver(context(mentions=mentions, people=people))
    message = bot.messages[-1]
    assert message["text"].endswith(
        '\ncc <a href="tg://user?id=123456">Ada &lt;3</a> @bob_ops @cy_handle @Di&amp;'
    )
    assert message["links"] == ["tg://user?id=123456"]
    assert message["plain"].endswith("\ncc Ada <3 @bob_ops @cy_handle @Di&")
    make_target(bot.api_base, parse_mode="none").deliver(context(mentions=mentions, people=people))
    assert bot.messages[-1]["text"].endswith("\ncc @Ada <3 @bob_ops @cy_handle @Di&")


def test_shared_files_with_urls_go_as_documents(bot: FakeBotAPI) -> None:
    files = [
        FileRef(name="report.pdf", url="https://files.example.com/report.pdf?x=1&y=2"),
        FileRef(name="from-slack.png", url="https://files.slack.com/priv", ref="F1"),
        FileRef(name="feishu.doc", ref="file_v2_abc"),
    ]
    target = make_target(bot.api_base, disable_notification=True)
    result = target.deliver(context(type_="file.shared", text=None, files=files))
    assert result.excerpt == "message: ok; document:0: ok"
    text, document = bot.messages
    assert text["plain"].splitlines()[1:] == [
        "file.shared",
        "📎 report.pdf",
        "📎 from-slack.png",
        "📎 feishu.doc",
    ]
    assert text["links"] == [
        "https://files.example.com/report.pdf?x=1&y=2",
        "https://files.slack.com/priv",
    ]
    assert document["method"] == "sendDocument"
    assert document["document"] == "https://files.example.com/report.pdf?x=1&y=2"
    assert (document["chat_id"], document["disable_notification"]) == (GROUP, True)


def test_messages_with_files_are_not_sent_as_documents(bot: FakeBotAPI) -> None:
    files = [FileRef(name="a.pdf", url="https://files.example.com/a.pdf")]
    make_target(bot.api_base).deliver(context(files=files))
    assert [m["method"] for m in bot.messages] == ["sendMessage"]


def test_document_telegram_cannot_fetch_is_noted_not_failed(bot: FakeBotAPI) -> None:
    files = [FileRef(name="x.pdf", url="https://files.example.com/private/x.pdf")]
    result = make_target(bot.api_base).deliver(context(type_="file.shared", files=files))
    assert result.excerpt == (
        "message: ok; document:0: not attached (Bad Request: failed to get HTTP URL content)"
    )
    assert [m["method"] for m in bot.messages] == ["sendMessage"]


def test_a_retry_skips_the_steps_already_sent(bot: FakeBotAPI, redis_client: redis.Redis) -> None:
    files = [FileRef(name=f"{i}.pdf", url=f"https://files.example.com/{i}.pdf") for i in range(2)]
    ctx = context(type_="file.shared", files=files, state=redis_client, delivery_id="dlv_f")
    bot.per_minute = 2
    target = make_target(bot.api_base)
    with pytest.raises(TargetThrottled) as info:
        target.deliver(ctx)
    assert 55 <= (info.value.retry_after or 0) <= 60
    assert [m["method"] for m in bot.messages] == ["sendMessage", "sendDocument"]
    bot.sent.clear()  # the minute has passed
    result = target.deliver(ctx)
    assert result.excerpt == "message: sent before; document:0: sent before; document:1: ok"
    assert [m.get("document") for m in bot.messages] == [None, *(f.url for f in files)]
    assert redis_client.ttl(f"{keys.PREFIX}telegram:sent:dlv_f") > 6 * 24 * 3600


def test_per_chat_limit_throttles_the_target(bot: FakeBotAPI) -> None:
    bot.per_minute = 1
    target = make_target(bot.api_base)
    target.deliver(context())
    with pytest.raises(TargetThrottled, match="throttles the bot in chat -1001234567890") as info:
        target.deliver(context())
    assert info.value.status == 429 and 55 <= (info.value.retry_after or 0) <= 60
    assert len(bot.messages) == 1


def test_wrong_token_is_permanent_and_never_shown(bot: FakeBotAPI) -> None:
    other = "987654321:AAwrongTokenValue"
    with pytest.raises(PermanentDeliveryError, match="Unauthorized: .*check bot_token") as info:
        make_target(bot.api_base, token=other).deliver(context())
    assert_no_token(info.value)
    assert "987654321" not in str(info.value)
    assert str(info.value).startswith(f"sendMessage via http://127.0.0.1:{bot.server.port}/:")


@pytest.mark.parametrize(
    ("chat_id", "pattern"),
    [
        (-5, r"chat not found: check chat_id \(-5\)"),
        ("@nosuchchannel", r"chat not found: check chat_id \(@nosuchchannel\)"),
        (-42, "became a supergroup; set chat_id to -1009999"),
        (-43, "Forbidden: bot was kicked from the group chat: .*add it back"),
    ],
)
def test_chat_problems_are_permanent(bot: FakeBotAPI, chat_id: int | str, pattern: str) -> None:
    with pytest.raises(PermanentDeliveryError, match=pattern) as info:
        make_target(bot.api_base, chat_id=chat_id).deliver(context())
    assert_no_token(info.value)


def test_message_problems_are_permanent(bot: FakeBotAPI) -> None:
    target = make_target(bot.api_base)
    with pytest.raises(PermanentDeliveryError, match="message is too long: .*truncate_text"):
        target.deliver(context(text="z" * 4097))
    with pytest.raises(PermanentDeliveryError, match="message text is empty"):
        target.deliver(context(template="{{ '' }}"))
    with pytest.raises(PermanentDeliveryError, match="can't parse entities"):
        target.deliver(context(template="{{ event.text | safe }}", text="<blink>"))


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (error(403, "Forbidden: bot was blocked by the user"), PermanentDeliveryError),
        (error(400, "Bad Request: message thread not found"), PermanentDeliveryError),
        (error(404, "Not Found"), PermanentDeliveryError),
        (error(500, "Internal Server Error"), RetryableDeliveryError),
        (error(502, "Bad Gateway"), RetryableDeliveryError),
        (Response("<html>502 Bad Gateway</html>", status=502), RetryableDeliveryError),
        (Response("<html>hello</html>", status=200), PermanentDeliveryError),
        (Response("slow down", status=429, headers={"Retry-After": "9"}), TargetThrottled),
    ],
)
def test_answers_are_classified(
    bot: FakeBotAPI, answer: Response, expected: type[Exception]
) -> None:
    bot.script.append(answer)
    with pytest.raises(expected) as info:
        make_target(bot.api_base).deliver(context())
    assert type(info.value) is expected
    assert_no_token(info.value)


def test_hints_name_what_to_fix(bot: FakeBotAPI) -> None:
    bot.script.append(error(400, "Bad Request: message thread not found"))
    with pytest.raises(PermanentDeliveryError, match="check message_thread_id"):
        make_target(bot.api_base).deliver(context())
    bot.script.append(Response("<html>hello</html>", status=200))
    with pytest.raises(PermanentDeliveryError, match="not Bot API JSON; check api_base"):
        make_target(bot.api_base).deliver(context())


def test_network_failure_is_retryable_without_the_token() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(RetryableDeliveryError) as info:
        make_target(f"http://127.0.0.1:{port}").deliver(context())
    assert_no_token(info.value)


def test_configured_template_is_autoescaped_in_html_mode(bot: FakeBotAPI) -> None:
    template = "<i>{{ event.sender.name }}</i>: {{ event.text }} {{ escape('&') }}"
    make_target(bot.api_base).deliver(context(text="1 < 2", template=template))
    assert bot.messages[-1]["text"] == "<i>Grace</i>: 1 &lt; 2 &amp;"


def test_template_that_fails_names_the_line(bot: FakeBotAPI) -> None:
    with pytest.raises(PermanentDeliveryError, match="template line 3"):
        make_target(bot.api_base).deliver(context(template="a\nb\n{{ event.nope.x }}"))
    assert bot.requests == []


def test_options_validation_is_clear_and_hides_the_token() -> None:
    options = TelegramTarget.Options
    with pytest.raises(ValidationError, match="must be a bot token") as info:
        options(bot_token="123:abc/../x?y", chat_id=GROUP)
    assert "abc/../x" not in str(info.value)
    for bad in ("group", "12ab", "@ab", True):
        with pytest.raises(ValidationError, match="numeric chat id"):
            options(bot_token=TOKEN, chat_id=bad)
    assert options(bot_token=TOKEN, chat_id="-100123").chat_id == -100123
    assert options(bot_token=TOKEN, chat_id="@ops_news").chat_id == "@ops_news"
    with pytest.raises(ValidationError, match="parse_mode"):
        options(bot_token=TOKEN, chat_id=GROUP, parse_mode="Markdown")
    assert TOKEN not in repr(options(bot_token=TOKEN, chat_id=GROUP))
    safew = options(bot_token=TOKEN, chat_id=GROUP, api_base="https://api.safew.org/")
    assert safew.api_base == "https://api.safew.org"
    config = TargetConfig(id="tg", kind="telegram", options=options(bot_token=TOKEN, chat_id=1))
    assert TelegramTarget(config).options.api_base == "https://api.telegram.org"


def test_private_api_base_refused_unless_allowed() -> None:
    options = TelegramTarget.Options(bot_token=TOKEN, chat_id=1, api_base="http://127.0.0.1:8081")
    config = TargetConfig(id="tg", kind="telegram", options=options)
    with pytest.raises(ConfigError, match=r"targets\.tg\.api_base: .*allow_private: true"):
        TelegramTarget(config)


def test_config_file_shape() -> None:
    data = {
        "targets": [
            {"id": "tg", "kind": "telegram", "bot_token": "${TG_TOKEN}", "chat_id": "-100123"},
            {
                "id": "safew",
                "kind": "telegram",
                "bot_token": TOKEN,
                "chat_id": 5,
                "api_base": "https://api.safew.org",
                "parse_mode": "none",
            },
            {"id": "bad", "kind": "telegram", "bot_token": TOKEN},
        ]
    }
    options = {"telegram": TelegramTarget.Options}
    with pytest.raises(ConfigError) as info:
        parse_config(data, env={"TG_TOKEN": TOKEN}, target_options=options)
    assert info.value.problems == ["targets[2].chat_id: required key is missing"]
    del data["targets"][2]
    config = parse_config(data, env={"TG_TOKEN": TOKEN}, target_options=options)
    assert TelegramTarget(config.targets["tg"]).options.chat_id == -100123
    assert TOKEN in config.secrets


def test_end_to_end_through_a_real_worker(
    bot: FakeBotAPI, relay_event: Callable[..., None]
) -> None:
    target = {
        "id": "tg",
        "kind": "telegram",
        "bot_token": TOKEN,
        "chat_id": GROUP,
        "api_base": bot.api_base,
    }
    relay_event(target, {"group": {"id": "g1"}, "text": "x < y"})
    assert bot.messages[0]["text"] == "<b>g1</b>\nx &lt; y"


def test_json_is_sent_as_utf8_with_its_charset(bot: FakeBotAPI) -> None:
    """As Telegram's SDKs send it: UTF-8 bytes, not ``\\u`` escapes, and the charset said."""
    make_target(bot.api_base).deliver(context(text="部署完成 ✅"))
    request = bot.requests[-1]
    assert request.headers["Content-Type"] == "application/json; charset=utf-8"
    assert "部署完成 ✅".encode() in request.get_data() and b"\\u" not in request.get_data()
    assert bot.messages[-1]["plain"].endswith("部署完成 ✅")
