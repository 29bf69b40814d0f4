"""The ``wecom_bot`` target against a loopback WeCom group robot that checks what
qyapi.weixin.qq.com checks: the key, the message type, empty and over-long content
(bytes of UTF-8) and 20 messages a minute, answering errors in an HTTP 200."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
from pydantic import ValidationError
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from relay.config.loader import parse_config
from relay.config.people import People, Person
from relay.config.rates import parse_rate_text
from relay.errors import (
    ConfigError,
    PermanentDeliveryError,
    RetryableDeliveryError,
    TargetThrottled,
)
from tests.workers.support import (
    assert_hidden,
    assert_registered,
    build_target,
    dingtalk_message,
    refusal,
)
from workers.targets.wecom_bot import WeComBotTarget

KEY = "693a91f6-7b1d-4bc4-97a0-0ec2f1a5aaa1"
PEOPLE = People({"ada": Person(name="Ada", dingtalk="manager4521", wecom="ada.lovelace")})
LIMITS = {"text": 2048, "markdown": 4096}


def answer(errcode: int, errmsg: str, status: int = 200) -> Response:
    body = json.dumps({"errcode": errcode, "errmsg": errmsg})
    return Response(body, status=status, content_type="application/json")


class FakeWeCom:
    """One group robot as qyapi.weixin.qq.com runs it; records what it accepted."""

    def __init__(self, server: HTTPServer) -> None:
        self.server = server
        self.messages: list[dict[str, Any]] = []
        self.script: list[Response] = []  # forced answers, first come first served
        self._sent: list[float] = []
        self._lock = threading.Lock()
        server.expect_request("/cgi-bin/webhook/send", method="POST").respond_with_handler(
            self.handle
        )

    def url(self, key: str = KEY) -> str:
        return self.server.url_for(f"/cgi-bin/webhook/send?key={key}")

    def handle(self, request: Request) -> Response:
        with self._lock:
            if self.script:
                return self.script.pop(0)
            if request.args.get("key") != KEY:
                return answer(
                    93000,
                    "invalid webhook url, hint: [1700000000_9_abc], from ip: 127.0.0.1, "
                    "more info at https://open.work.weixin.qq.com/devtool/query?e=93000",
                )
            try:
                body = json.loads(request.get_data())
            except ValueError:
                return answer(40035, "invalid parameter, Warning: wrong json format.")
            kind = body.get("msgtype") if isinstance(body, dict) else None
            if kind not in LIMITS:
                return answer(40008, "invalid message type")
            content = (body.get(kind) or {}).get("content")
            if not isinstance(content, str) or not content:
                return answer(44004, "empty content")
            if len(content.encode()) > LIMITS[kind]:
                return answer(40058, f"content exceed max length {LIMITS[kind]}")
            now = time.monotonic()
            if sum(now - t < 60 for t in self._sent) >= 20:
                return answer(45009, "api freq out of limit")
            self._sent.append(now)
            self.messages.append(body)
            return answer(0, "ok")


@pytest.fixture
def robot(server: HTTPServer) -> FakeWeCom:
    return FakeWeCom(server)


def make_target(url: str, *, allow_private: bool = True, **options: Any) -> WeComBotTarget:
    return build_target(WeComBotTarget, "wecom", allow_private=allow_private, url=url, **options)


context = partial(dingtalk_message, PEOPLE)


def test_registered_with_the_platform_limit() -> None:
    assert_registered(WeComBotTarget, "wecom_bot", "notify")
    rates = [parse_rate_text(r) for r in WeComBotTarget.default_rate_limits]
    assert rates == [{"limit": 20, "per": 60.0}]


def test_markdown_with_group_sender_text_files_and_real_mentions(robot: FakeWeCom) -> None:
    result = make_target(robot.url()).deliver(context("ping <@boss> please"))
    assert result.status == 200 and '"errcode": 0' in (result.excerpt or "")
    assert robot.messages == [
        {
            "msgtype": "markdown",
            "markdown": {
                "content": "**Ops room**\n"
                '<font color="comment">Bob</font>: ping &#60;@boss&#62; please\n'
                "📎 [report.pdf](https://files.example.com/report.pdf)\n"
                "📎 notes.txt\n"
                "<@ada.lovelace> @Zed"  # Zed has no WeCom userid: plain text
            },
        }
    ]


def test_text_mentions_through_the_lists(robot: FakeWeCom) -> None:
    target = make_target(
        robot.url(), msgtype="text", at_all=True, mentioned_mobile_list=["13800001111"]
    )
    target.deliver(context())
    assert robot.messages == [
        {
            "msgtype": "text",
            "text": {
                "content": "[Ops room]\nBob: deploy finished ✅\n"
                "📎 report.pdf https://files.example.com/report.pdf\n"
                "📎 notes.txt\n"
                "@Zed",
                "mentioned_list": ["ada.lovelace", "@all"],
                "mentioned_mobile_list": ["13800001111"],
            },
        }
    ]


def test_custom_template(robot: FakeWeCom) -> None:
    ctx = context("disk full", "# {{ event.text | upper }}\n{{ at | join(', ') }}")
    make_target(robot.url()).deliver(ctx)
    assert robot.messages[0]["markdown"]["content"] == "# DISK FULL\n<@ada.lovelace>, @Zed"


def test_a_template_that_fails_to_render_is_permanent_and_names_the_line(
    robot: FakeWeCom,
) -> None:
    with pytest.raises(PermanentDeliveryError, match="template line 3"):
        make_target(robot.url()).deliver(context(template="a\nb\n{{ event.nope.deeper }}"))
    assert robot.messages == []


@pytest.mark.parametrize("msgtype", ["markdown", "text"])
def test_long_content_is_cut_at_a_utf8_boundary_and_keeps_its_mentions(
    robot: FakeWeCom, msgtype: str
) -> None:
    make_target(robot.url(), msgtype=msgtype).deliver(context("日志" * 3000))
    [message] = robot.messages
    content = message[msgtype]["content"]
    assert LIMITS[msgtype] - 4 < len(content.encode()) <= LIMITS[msgtype]
    assert "…" in content
    if msgtype == "markdown":
        assert content.endswith("…\n<@ada.lovelace>")  # cut off with the tail, put back
    else:
        assert message["text"]["mentioned_list"] == ["ada.lovelace"]


def test_45009_throttles_the_whole_robot_for_a_minute(robot: FakeWeCom) -> None:
    target = make_target(robot.url())
    for _ in range(20):
        target.deliver(context())
    with pytest.raises(TargetThrottled, match="45009.*20 messages a minute") as info:
        target.deliver(context())
    assert info.value.retry_after == 60.0
    assert len(robot.messages) == 20


def test_an_empty_message_is_permanent(robot: FakeWeCom) -> None:
    with pytest.raises(PermanentDeliveryError, match="44004.*the message is empty"):
        make_target(robot.url()).deliver(context(template="{{ '' }}"))


def test_a_wrong_key_is_permanent_and_never_shown(robot: FakeWeCom) -> None:
    wrong = "00000000-dead-beef-0000-000000000000"
    with pytest.raises(PermanentDeliveryError, match="93000.*webhook key is not valid") as info:
        make_target(robot.url(wrong)).deliver(context())
    assert "hint" not in str(info.value)  # WeCom's request hint stays in the excerpt
    assert_hidden(info.value, wrong, KEY)


@pytest.mark.parametrize(
    ("response", "error", "match", "retry_after"),
    [
        (answer(-1, "system busy"), RetryableDeliveryError, "-1.*busy", None),
        (Response("slow", 429, {"Retry-After": "9"}), RetryableDeliveryError, "HTTP 429", 9.0),
        (Response("oops", 503), RetryableDeliveryError, "HTTP 503", None),
        (answer(40008, "invalid message type"), PermanentDeliveryError, "40008.*msgtype", None),
        (answer(40058, "invalid content"), PermanentDeliveryError, "40058.*content", None),
        (answer(93004, "robot disabled"), PermanentDeliveryError, "93004 .robot disabled", None),
        (Response("<html>ok</html>", 200), RetryableDeliveryError, "without an errcode", None),
        (Response("no", 403), PermanentDeliveryError, "HTTP 403", None),
    ],
)
def test_answers_are_classified(
    robot: FakeWeCom,
    response: Response,
    error: type[Exception],
    match: str,
    retry_after: float | None,
) -> None:
    robot.script.append(response)
    refusal(make_target(robot.url()), context(), error, match, retry_after)


def test_excerpts_never_carry_the_key(robot: FakeWeCom) -> None:
    robot.script.append(Response(f"bad gateway for key={KEY}", 502))
    robot.script.append(answer(40058, f"invalid key {KEY} in content"))
    target = make_target(robot.url())
    for expected in (RetryableDeliveryError, PermanentDeliveryError):
        with pytest.raises(expected) as info:
            target.deliver(context())
        assert_hidden(info.value, KEY)
        assert "***" in (info.value.excerpt or "")


def test_options_are_validated_without_echoing_the_key() -> None:
    url = f"https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key={KEY}"
    validate = WeComBotTarget.Options.model_validate
    for wrong in (
        "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=",
        f"https://x.cn/?key={KEY}",
    ):
        with pytest.raises(ValidationError, match="expected the robot's webhook URL") as info:
            validate({"url": wrong})
        assert KEY not in str(info.value)
    with pytest.raises(ValidationError, match="need msgtype: text"):
        validate({"url": url, "at_all": True})
    with pytest.raises(ValidationError, match="need msgtype: text"):
        validate({"url": url, "mentioned_mobile_list": ["13800001111"]})
    with pytest.raises(ValidationError, match=r"\[1\] is not a mobile number"):
        mobiles = ["+8613800001111", "Ada"]
        validate({"url": url, "msgtype": "text", "mentioned_mobile_list": mobiles})
    with pytest.raises(ValidationError, match="msgtype"):
        validate({"url": url, "msgtype": "news"})
    assert KEY not in repr(validate({"url": url}))
    with pytest.raises(ConfigError, match=r"targets\.wecom\.url: .*allow_private: true"):
        make_target(f"http://127.0.0.1:9/cgi-bin/webhook/send?key={KEY}", allow_private=False)


def test_built_from_relay_yaml_with_the_url_from_the_environment(robot: FakeWeCom) -> None:
    data = {
        "targets": [
            {
                "id": "wecom",
                "kind": "wecom_bot",
                "allow_private": True,
                "url": "${WECOM_HOOK}",
                "msgtype": "text",
                "at_all": True,
            }
        ]
    }
    options = {"wecom_bot": WeComBotTarget.Options}
    config = parse_config(data, env={"WECOM_HOOK": robot.url()}, target_options=options)
    WeComBotTarget(config.targets["wecom"]).deliver(context())
    assert robot.messages[0]["text"]["mentioned_list"] == ["ada.lovelace", "@all"]
    data["targets"][0]["msgtype"] = "markdown"
    with pytest.raises(ConfigError, match=r"targets\[0\]: at_all and mentioned_mobile_list"):
        parse_config(data, env={"WECOM_HOOK": robot.url()}, target_options=options)


def test_end_to_end_through_a_real_worker(
    robot: FakeWeCom, relay_event: Callable[..., None]
) -> None:
    relay_event({"id": "wecom", "kind": "wecom_bot", "url": robot.url()})
    assert robot.messages == [
        {
            "msgtype": "markdown",
            "markdown": {"content": '**Ops**\n<font color="comment">u1</font>: hi'},
        }
    ]


@pytest.mark.parametrize("msgtype", ["markdown", "text"])
def test_json_is_sent_as_utf8_with_its_charset(robot: FakeWeCom, msgtype: str) -> None:
    """As WeCom's SDKs send it: UTF-8 bytes, not ``\\u`` escapes, and the charset said."""
    make_target(robot.url(), msgtype=msgtype).deliver(context("部署完成 ✅"))
    request, _ = robot.server.log[-1]
    assert request.headers["Content-Type"] == "application/json; charset=utf-8"
    assert "部署完成 ✅".encode() in request.get_data() and b"\\u" not in request.get_data()
    assert "部署完成 ✅" in robot.messages[-1][msgtype]["content"]
