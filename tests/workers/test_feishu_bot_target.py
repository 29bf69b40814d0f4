"""The ``feishu_bot`` target against a loopback Feishu custom bot that checks what
open.feishu.cn checks: the hook token, the body signature (exactly, with the 1-hour
window), the message shape, the 20 KB body cap, keywords and 5/s + 100/min."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
import requests
from pydantic import ValidationError
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from relay.config.loader import parse_config
from relay.config.people import People, Person
from relay.config.rates import parse_rate_text
from relay.errors import ConfigError, PermanentDeliveryError, RetryableDeliveryError
from tests.workers.support import (
    assert_hidden,
    assert_registered,
    build_target,
    dingtalk_message,
    refusal,
)
from workers.targets.feishu_bot import MAX_BODY, FeishuBotTarget, sign

TOKEN = "2f1a9c3e-7b1d-4e0a-9d55-0c8b1f6e4a21"
SECRET = "kLm4bS3cr3tF0rF3ishu"
HOOK = re.compile(r"^/open-apis/bot/v2/hook/[^/]+$")
PEOPLE = People({"ada": Person(name="Ada", dingtalk="manager4521", feishu="ou_7d8a6e6df7")})


def answer(code: int, msg: str, status: int = 200, **extra: Any) -> Response:
    body = {"code": code, "msg": msg, "data": {}, **extra}
    return Response(json.dumps(body), status=status, content_type="application/json")


class FakeFeishu:
    """One custom bot as open.feishu.cn runs it; records what it accepted."""

    def __init__(self, server: HTTPServer, secret: str | None = None) -> None:
        self.server = server
        self.secret = secret
        self.keywords: list[str] = []
        self.messages: list[dict[str, Any]] = []
        self.script: list[Response] = []  # forced answers, first come first served
        self.skew = 0.0  # added to the rate-limit clock, so tests can let time pass
        self._sent: list[float] = []
        self._lock = threading.Lock()
        server.expect_request(HOOK, method="POST").respond_with_handler(self.handle)

    def url(self, token: str = TOKEN) -> str:
        return self.server.url_for(f"/open-apis/bot/v2/hook/{token}")

    def handle(self, request: Request) -> Response:
        with self._lock:
            if self.script:
                return self.script.pop(0)
            if request.path.rsplit("/", 1)[1] != TOKEN:
                return answer(19001, "param invalid: incoming webhook access token invalid")
            raw = request.get_data()
            try:
                body = json.loads(raw)
            except ValueError:
                return answer(9499, "Bad Request", status=400)
            if len(raw) > 20 * 1024 or not well_formed(body):
                return answer(9499, "Bad Request", status=400)
            if self.secret is not None and not self.signed(body):
                return answer(
                    19021, "sign match fail or timestamp is not within one hour from current time"
                )
            if self.keywords and not any(k in raw.decode() for k in self.keywords):
                return answer(19024, "Key Words Not Found")
            now = time.monotonic() + self.skew
            if (
                sum(now - t < 1 for t in self._sent) >= 5
                or sum(now - t < 60 for t in self._sent) >= 100
            ):
                return answer(11232, "frequency limited psm[lark.oapi.app_platform_runtime]")
            self._sent.append(now)
            self.messages.append(body)
            return answer(0, "success", StatusCode=0, StatusMessage="success")

    def signed(self, body: dict[str, Any]) -> bool:
        """Exactly Feishu's check: key = "{timestamp}\\n{secret}", message empty."""
        timestamp, signature = body.get("timestamp"), body.get("sign")
        if not isinstance(timestamp, str) or not timestamp.isdigit():
            return False
        if not isinstance(signature, str) or abs(time.time() - int(timestamp)) > 3600:
            return False
        assert self.secret is not None
        key = f"{timestamp}\n{self.secret}".encode()
        expected = base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()
        return hmac.compare_digest(expected, signature)


def well_formed(body: Any) -> bool:
    """The shapes the bot accepts for the three message types the target sends."""
    if not isinstance(body, dict):
        return False
    kind, content = body.get("msg_type"), body.get("content")
    if kind == "text":
        return isinstance(content, dict) and isinstance(content.get("text"), str)
    if kind == "post":
        post = content.get("post") if isinstance(content, dict) else None
        languages = list(post.values()) if isinstance(post, dict) else []
        return bool(languages) and all(
            isinstance(lang.get("content"), list)
            and all(
                isinstance(p, list) and all(e.get("tag") in ("text", "a", "at") for e in p)
                for p in lang["content"]
            )
            for lang in languages
        )
    return kind == "interactive" and isinstance(body.get("card"), dict)


@pytest.fixture
def bot(server: HTTPServer) -> FakeFeishu:
    return FakeFeishu(server, secret=SECRET)


def make_target(url: str, *, allow_private: bool = True, **options: Any) -> FeishuBotTarget:
    return build_target(FeishuBotTarget, "feishu", allow_private=allow_private, url=url, **options)


context = partial(dingtalk_message, PEOPLE)


def post_lines(message: dict[str, Any]) -> list[list[dict[str, str]]]:
    lines: list[list[dict[str, str]]] = message["content"]["post"]["zh_cn"]["content"]
    return lines


def test_registered_with_the_platform_limits() -> None:
    assert_registered(FeishuBotTarget, "feishu_bot", "notify")
    rates = [parse_rate_text(r) for r in FeishuBotTarget.default_rate_limits]
    assert rates == [{"limit": 100, "per": 60.0}, {"limit": 5, "per": 1.0}]


def test_signature_matches_the_reference_vector() -> None:
    assert sign("this is secret", 1599360473) == "/eYKrXQBzTjUZJ3s6NX16VxGbTwmK7AEs8/FnvC1CSw="


def test_signed_post_with_group_sender_text_files_and_real_mentions(bot: FakeFeishu) -> None:
    result = make_target(bot.url(), secret=SECRET).deliver(context())
    assert result.status == 200 and '"code": 0' in (result.excerpt or "")
    [message] = bot.messages
    assert message["msg_type"] == "post"
    assert abs(int(message["timestamp"]) - time.time()) < 10
    assert message["content"]["post"]["zh_cn"]["title"] == "Ops room"
    assert post_lines(message) == [
        [{"tag": "text", "text": "Bob: deploy finished ✅"}],
        [
            {"tag": "text", "text": "📎 "},
            {"tag": "a", "text": "report.pdf", "href": "https://files.example.com/report.pdf"},
        ],
        [{"tag": "text", "text": "📎 notes.txt"}],
        [
            {"tag": "at", "user_id": "ou_7d8a6e6df7", "user_name": "Ada"},
            {"tag": "text", "text": " @Zed"},  # no Feishu id in the people map: plain text
        ],
    ]


def test_unsigned_without_a_secret(server: HTTPServer) -> None:
    bot = FakeFeishu(server)
    make_target(bot.url()).deliver(context())
    [message] = bot.messages
    assert "sign" not in message and "timestamp" not in message


def test_wrong_secret_is_a_config_error_naming_the_secret_and_the_clock(bot: FakeFeishu) -> None:
    with pytest.raises(PermanentDeliveryError, match="check the secret and the clock") as info:
        make_target(bot.url(), secret="not-the-secret").deliver(context())
    assert "19021" in str(info.value) and info.value.status == 200
    assert bot.messages == []


def test_the_fake_checks_signatures_exactly(bot: FakeFeishu) -> None:
    """Not a rubber stamp: a stale timestamp or a signature for another second fails."""
    now = int(time.time())
    for timestamp, signed in [(now, now), (now - 7200, now - 7200), (now, now + 1)]:
        body: dict[str, Any] = {"timestamp": str(timestamp), "sign": sign(SECRET, signed)}
        body.update(msg_type="text", content={"text": "hi"})
        code = requests.post(bot.url(), json=body, timeout=5).json()["code"]
        assert code == (0 if (timestamp, signed) == (now, now) else 19021)


def test_text_message_mentions_and_defused_markup(bot: FakeFeishu) -> None:
    ctx = context('ping <at user_id="all">everyone</at>', files=[])
    make_target(bot.url(), secret=SECRET, msg_type="text").deliver(ctx)
    text = bot.messages[0]["content"]["text"]
    assert text.startswith("[Ops room]\nBob: ping <\u200bat user_id=")
    assert '<at user_id="all">' not in text  # chat text cannot @all the Feishu group
    assert text.endswith('<at user_id="ou_7d8a6e6df7">Ada</at> @Zed')


def test_interactive_card(bot: FakeFeishu) -> None:
    ctx = context("<at id=all></at> hello")
    make_target(bot.url(), secret=SECRET, msg_type="interactive").deliver(ctx)
    card = bot.messages[0]["card"]
    assert card["header"]["title"] == {"tag": "plain_text", "content": "Ops room"}
    [element] = card["elements"]
    assert element["tag"] == "markdown"
    assert element["content"] == (
        "Bob: &#60;at id=all&#62;&#60;/at&#62; hello\n"
        "📎 [report.pdf](https://files.example.com/report.pdf)\n"
        "📎 notes.txt\n"
        "<at id=ou_7d8a6e6df7></at> @Zed"
    )


def test_custom_template_and_title(bot: FakeFeishu) -> None:
    target = make_target(bot.url(), secret=SECRET, title="Alert from {{ event.group.name }}")
    target.deliver(context("disk full", "{{ event.text | upper }}\n{{ at | join(', ') }}"))
    [message] = bot.messages
    assert message["content"]["post"]["zh_cn"]["title"] == "Alert from Ops room"
    assert post_lines(message) == [
        [{"tag": "text", "text": "DISK FULL"}],
        [
            {"tag": "at", "user_id": "ou_7d8a6e6df7", "user_name": "Ada"},
            {"tag": "text", "text": ", @Zed"},
        ],
    ]


def test_a_template_that_fails_to_render_is_permanent_and_names_the_line(
    bot: FakeFeishu,
) -> None:
    target = make_target(bot.url(), secret=SECRET)
    with pytest.raises(PermanentDeliveryError, match="template line 2"):
        target.deliver(context(template="ok\n{{ event.nope.deeper }}"))
    target = make_target(bot.url(), secret=SECRET, title="{{ event.group.nope.x }}")
    with pytest.raises(PermanentDeliveryError, match="title template line 1"):
        target.deliver(context())
    assert bot.messages == []


def test_keywords_and_tokens_the_bot_refuses(bot: FakeFeishu) -> None:
    bot.keywords = ["[alert]"]
    with pytest.raises(PermanentDeliveryError, match="19024.*custom keywords"):
        make_target(bot.url(), secret=SECRET).deliver(context())
    assert make_target(bot.url(), secret=SECRET).deliver(context("[alert] cpu")).status == 200
    with pytest.raises(PermanentDeliveryError, match="19001.*webhook URL") as info:
        make_target(bot.url("wrong-token-123"), secret=SECRET).deliver(context())
    assert "wrong-token-123" not in str(info.value)


def test_rate_limits_answer_11232_which_is_retried(bot: FakeFeishu) -> None:
    target = make_target(bot.url(), secret=SECRET)
    for _ in range(5):
        target.deliver(context())
    with pytest.raises(RetryableDeliveryError, match="11232.*rate limited") as info:
        target.deliver(context())
    assert info.value.retry_after is None  # backoff: Feishu says nothing about how long
    sent = 5
    while sent < 100:  # the minute window: 5 a second for 19 more seconds
        bot.skew += 1.01
        for _ in range(5):
            target.deliver(context())
        sent += 5
    bot.skew += 1.01
    with pytest.raises(RetryableDeliveryError, match="11232"):
        target.deliver(context())
    bot.skew += 60
    assert target.deliver(context()).status == 200
    assert len(bot.messages) == 101


@pytest.mark.parametrize(
    ("response", "error", "match", "retry_after"),
    [
        (Response("slow", 429, {"Retry-After": "7"}), RetryableDeliveryError, "HTTP 429", 7.0),
        (Response("oops", 502), RetryableDeliveryError, "HTTP 502", None),
        (answer(2200, "internal error"), RetryableDeliveryError, "2200", None),
        (answer(19022, "Ip Not Allowed"), PermanentDeliveryError, "IP allowlist", None),
        (answer(9499, "Bad Request", 400), PermanentDeliveryError, "9499.*bad request", None),
        (answer(230001, "invalid receive_id"), PermanentDeliveryError, "invalid receive_id", None),
        (
            Response(json.dumps({"StatusCode": 19021, "StatusMessage": "sign match fail"}), 200),
            PermanentDeliveryError,
            "19021.*check the secret and the clock",
            None,
        ),
        (Response("<html>ok</html>", 200), RetryableDeliveryError, "without a result code", None),
        (Response("gone", 404), PermanentDeliveryError, "HTTP 404", None),
    ],
)
def test_answers_are_classified(
    bot: FakeFeishu,
    response: Response,
    error: type[Exception],
    match: str,
    retry_after: float | None,
) -> None:
    bot.script.append(response)
    # Never TargetThrottled: Feishu limits, it does not block.
    refusal(make_target(bot.url(), secret=SECRET), context(), error, match, retry_after)


def test_errors_and_excerpts_never_carry_the_token(bot: FakeFeishu) -> None:
    bot.script.append(Response(f"upstream failed for /hook/{TOKEN}", 503))
    bot.script.append(answer(19021, f"bad sign for {TOKEN}"))
    target = make_target(bot.url(), secret=SECRET)
    for expected in (RetryableDeliveryError, PermanentDeliveryError):
        with pytest.raises(expected) as info:
            target.deliver(context())
        assert_hidden(info.value, TOKEN, SECRET)
        assert "***" in (info.value.excerpt or "")


def test_bodies_over_20_kb_are_cut_and_keep_their_mentions(bot: FakeFeishu) -> None:
    ctx = context("日志" * 20_000)
    for msg_type in ("post", "text", "interactive"):
        make_target(bot.url(), secret=SECRET, msg_type=msg_type).deliver(ctx)
    assert len(bot.messages) == 3
    for message in bot.messages:
        size = len(json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode())
        assert MAX_BODY - 100 < size <= MAX_BODY
        assert "ou_7d8a6e6df7" in json.dumps(message)  # the cut-off mention is appended
        assert "…" in json.dumps(message, ensure_ascii=False)


def test_options_are_validated_without_echoing_secrets() -> None:
    hook = f"https://open.feishu.cn/open-apis/bot/v2/hook/{TOKEN}"
    validate = FeishuBotTarget.Options.model_validate
    with pytest.raises(ValidationError, match="expected the bot's webhook URL") as info:
        validate({"url": f"https://open.feishu.cn/open-apis/im/v1/{TOKEN}"})
    assert TOKEN not in str(info.value)
    with pytest.raises(ValidationError, match="the secret is empty"):
        validate({"url": hook, "secret": " "})
    with pytest.raises(ValidationError, match="msg_type"):
        validate({"url": hook, "msg_type": "image"})
    with pytest.raises(ValidationError, match="template line 1"):
        validate({"url": hook, "title": "{{ x"})
    with pytest.raises(ValidationError, match="sceret"):
        validate({"url": hook, "sceret": SECRET})
    options = validate({"url": hook.replace("feishu.cn", "larksuite.com"), "secret": SECRET})
    assert TOKEN not in repr(options) and SECRET not in repr(options)
    with pytest.raises(ConfigError, match=r"targets\.feishu\.url: .*allow_private: true"):
        make_target(f"http://127.0.0.1:9/open-apis/bot/v2/hook/{TOKEN}", allow_private=False)


def test_built_from_relay_yaml_with_secrets_from_the_environment(bot: FakeFeishu) -> None:
    data = {
        "targets": [
            {
                "id": "feishu",
                "kind": "feishu_bot",
                "allow_private": True,
                "url": "${FEISHU_HOOK}",
                "secret": "${FEISHU_SECRET}",
                "msg_type": "text",
            }
        ]
    }
    env = {"FEISHU_HOOK": bot.url(), "FEISHU_SECRET": SECRET}
    config = parse_config(data, env=env, target_options={"feishu_bot": FeishuBotTarget.Options})
    FeishuBotTarget(config.targets["feishu"]).deliver(context())
    assert bot.messages[0]["content"]["text"].startswith("[Ops room]\nBob: deploy finished")
    with pytest.raises(ConfigError, match=r"targets\[0\]\.url: expected the bot's webhook URL"):
        parse_config(
            data,
            env={**env, "FEISHU_HOOK": "https://open.feishu.cn/"},
            target_options={"feishu_bot": FeishuBotTarget.Options},
        )


def test_end_to_end_through_a_real_worker(
    bot: FakeFeishu, relay_event: Callable[..., None]
) -> None:
    relay_event({"id": "feishu", "kind": "feishu_bot", "url": bot.url(), "secret": SECRET})
    [message] = bot.messages
    assert message["content"]["post"]["zh_cn"]["title"] == "Ops"
    assert post_lines(message) == [[{"tag": "text", "text": "u1: hi"}]]
