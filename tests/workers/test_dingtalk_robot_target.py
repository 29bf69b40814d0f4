"""The ``dingtalk_robot`` target against a loopback fake of DingTalk's custom robot.

The fake checks what DingTalk checks, the way DingTalk does: the access_token, the
加签 signature (HMAC-SHA256 over "<ms>\\n<secret>", timestamp within 1 h), the security
keyword, and 20 messages a minute; every refusal is an ``errcode`` in an HTTP 200.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import ValidationError
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from relay.config.loader import parse_config
from relay.config.models import TargetConfig
from relay.config.people import People, Person
from relay.errors import (
    ConfigError,
    PermanentDeliveryError,
    RetryableDeliveryError,
    TargetThrottled,
)
from relay.events import Party
from tests.workers.support import (
    assert_hidden,
    assert_registered,
    build_target,
    delivery_context,
    refusal,
)
from workers.targets.base import DeliveryContext
from workers.targets.dingtalk_robot import DingTalkRobotTarget, signed_url

TOKEN = "a1b2c3d4e5f6robotaccesstoken0001"
SECRET = "SEC0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd"
PEOPLE = People(
    {
        "ada": Person(name="Ada", dingtalk="manager4521", feishu="ou_ada"),
        "bob": Person(name="Bob", dingtalk_mobile="13800000000", feishu="ou_bob"),
        "cy": Person(name="Cy", slack="U024BE7LH", feishu="ou_cy"),
    }
)


def errcode(code: int, message: str) -> Response:
    return Response(
        json.dumps({"errcode": code, "errmsg": message}), 200, mimetype="application/json"
    )


class FakeRobot:
    """DingTalk's ``/robot/send`` for one robot, with its security settings."""

    def __init__(
        self,
        server: HTTPServer,
        *,
        secret: str | None = SECRET,
        keyword: str | None = None,
        per_minute: int = 20,
    ) -> None:
        self.secret, self.keyword, self.per_minute = secret, keyword, per_minute
        self.messages: list[dict[str, Any]] = []
        self.requests: list[Request] = []
        self.accepted_at: list[float] = []
        self.lock = threading.Lock()
        self.url = server.url_for("/robot/send") + f"?access_token={TOKEN}"
        server.expect_request("/robot/send", method="POST").respond_with_handler(self.handle)

    def handle(self, request: Request) -> Response:
        with self.lock:
            self.requests.append(request)
            return self._answer(request)

    def _answer(self, request: Request) -> Response:
        token = request.args.get("access_token")
        if not token:
            return errcode(40035, "缺少参数 access_token")
        if token != TOKEN:
            return errcode(300001, "token is not exist")
        if self.secret is not None:
            stamp, given = request.args.get("timestamp", ""), request.args.get("sign", "")
            if not stamp.isdigit() or abs(time.time() * 1000 - int(stamp)) > 3600 * 1000:
                return errcode(310000, "invalid timestamp")
            key = self.secret.encode()
            digest = hmac.new(key, f"{stamp}\n{self.secret}".encode(), hashlib.sha256).digest()
            if not hmac.compare_digest(given, base64.b64encode(digest).decode()):
                return errcode(310000, "sign not match, more: [https://ding-doc.dingtalk.com]")
        body = json.loads(request.get_data().decode("utf-8"))
        if self.keyword and self.keyword not in json.dumps(body, ensure_ascii=False):
            return errcode(310000, "keywords not in content")
        now = time.monotonic()
        self.accepted_at = [t for t in self.accepted_at if now - t < 60]
        if len(self.accepted_at) >= self.per_minute:
            return errcode(130101, "send too fast, exceed 20 times per minute")
        self.accepted_at.append(now)
        self.messages.append(body)
        return errcode(0, "ok")


def make_target(url: str, **options: Any) -> DingTalkRobotTarget:
    return build_target(DingTalkRobotTarget, "ding", url=url, **options)


def context(
    text: str = "deploy finished ✅",
    *,
    mentions: list[Party] | None = None,
    template: str | None = None,
    source_kind: str | None = "feishu",
) -> DeliveryContext:
    return delivery_context(
        template=template,
        source_kind=source_kind,
        people=PEOPLE,
        text=text,
        mentions=mentions or [],
    )


def test_registered_as_entry_point() -> None:
    assert_registered(DingTalkRobotTarget, "dingtalk_robot", "notify")
    assert DingTalkRobotTarget.default_rate_limits == ("20/min",)


def test_signature_matches_dingtalks_published_vector() -> None:
    url = signed_url(
        "https://oapi.dingtalk.com/robot/send?access_token=x", "this is secret", 1577262236757
    )
    assert url.endswith(
        "&timestamp=1577262236757&sign=hmPWwU%2B7lVdm3ZZz0r9tSfx0L4Q26jWOZr9%2BGs6EZQM%3D"
    )
    assert (
        signed_url("https://h/robot/send?access_token=x", None, 1)
        == "https://h/robot/send?access_token=x"
    )


def test_signed_markdown_is_accepted_and_well_formed(server: HTTPServer) -> None:
    fake = FakeRobot(server)
    result = make_target(fake.url, secret=SECRET).deliver(context())
    assert result.status == 200 and '"errcode": 0' in (result.excerpt or "")
    [body] = fake.messages
    assert body["msgtype"] == "markdown"
    assert body["markdown"]["title"] == "Ops room"
    text = body["markdown"]["text"]
    assert "Ops room" in text and "**Grace**" in text and "deploy finished ✅" in text
    assert body["at"] == {"atUserIds": [], "atMobiles": [], "isAtAll": False}
    request = fake.requests[0]
    assert request.headers["content-type"] == "application/json; charset=utf-8"
    assert "deploy finished ✅".encode() in request.get_data()  # UTF-8, not \\u escapes


def test_wrong_or_missing_secret_is_a_permanent_config_error(server: HTTPServer) -> None:
    fake = FakeRobot(server)
    for target in (make_target(fake.url, secret="SECwrong"), make_target(fake.url)):
        with pytest.raises(PermanentDeliveryError, match="errcode 310000") as info:
            target.deliver(context())
        assert "check `secret`" in str(info.value)
        assert TOKEN not in str(info.value) and SECRET not in str(info.value)
    assert fake.messages == []


def test_fake_refuses_a_correct_sign_an_hour_old(server: HTTPServer) -> None:
    """The fake is as strict as DingTalk: the timestamp must be within an hour."""
    import requests

    fake = FakeRobot(server)
    old = int(time.time() * 1000) - 3601 * 1000
    answer = requests.post(signed_url(fake.url, SECRET, old), json={"msgtype": "text"}, timeout=5)
    assert answer.json()["errcode"] == 310000
    fresh = int(time.time() * 1000)
    body = {"msgtype": "text", "text": {"content": "x"}}
    answer = requests.post(signed_url(fake.url, SECRET, fresh), json=body, timeout=5)
    assert answer.json()["errcode"] == 0


def test_keyword_security_mode(server: HTTPServer) -> None:
    fake = FakeRobot(server, secret=None, keyword="[relay]")
    with pytest.raises(PermanentDeliveryError, match="keywords not in content.*set `keyword`"):
        make_target(fake.url, msgtype="text").deliver(context())
    make_target(fake.url, msgtype="text", keyword="[relay]").deliver(context())
    assert fake.messages[0]["text"]["content"].startswith("[relay]\n[Ops room] Grace: deploy")
    make_target(fake.url, msgtype="text", keyword="[relay]").deliver(context("[relay] there"))
    assert fake.messages[1]["text"]["content"].startswith("[Ops room] Grace: [relay] there")
    # markdown shows the event's "[relay]" escaped, so the keyword still goes first
    make_target(fake.url, keyword="[relay]").deliver(context("[relay] already there"))
    assert fake.messages[2]["markdown"]["text"].startswith("[relay]\n#### Ops room")


def test_twenty_a_minute_then_the_whole_robot_is_throttled(server: HTTPServer) -> None:
    fake = FakeRobot(server)
    target = make_target(fake.url, secret=SECRET, msgtype="text")
    for i in range(20):
        target.deliver(context(f"message {i}"))
    with pytest.raises(TargetThrottled, match="130101") as info:
        target.deliver(context("one too many"))
    assert info.value.retry_after == 600
    assert len(fake.messages) == 20


def test_mentions_become_real_dingtalk_mentions(server: HTTPServer) -> None:
    fake = FakeRobot(server)
    mentioned = [
        Party(id="ou_ada"),
        Party(id="ou_bob"),
        Party(id="ou_cy"),
        Party(id="ou_x", name="Xu"),
    ]
    target = make_target(fake.url, secret=SECRET, msgtype="text", at_user_ids=["ops01"])
    target.deliver(context("please look", mentions=mentioned))
    [body] = fake.messages
    assert body["at"] == {
        "atUserIds": ["manager4521", "ops01"],
        "atMobiles": ["13800000000"],
        "isAtAll": False,
    }
    content = body["text"]["content"]
    assert "@manager4521 @13800000000 @Cy @Xu" in content  # no DingTalk id: @name text
    assert content.endswith("@ops01")  # a static mention is still written into the text


def test_custom_template_without_mentions_gets_the_tags_appended(server: HTTPServer) -> None:
    fake = FakeRobot(server)
    template = "{{ event.text }} ({{ mentions | length }} people)"
    target = make_target(fake.url, secret=SECRET)
    target.deliver(context("hi", mentions=[Party(id="ou_ada")], template=template))
    [body] = fake.messages
    assert body["markdown"]["text"] == "hi (1 people)\n\n@manager4521"
    assert body["at"]["atUserIds"] == ["manager4521"]


def test_template_placing_the_tags_itself_is_left_alone(server: HTTPServer) -> None:
    fake = FakeRobot(server)
    template = (
        "{% for m in mentions %}{{ at[loop.index0] }} ({{ m.name }}) {% endfor %}: {{ event.text }}"
    )
    make_target(fake.url, secret=SECRET, msgtype="text", at_all=True).deliver(
        context("hi", mentions=[Party(id="ou_ada"), Party(id="ou_bob")], template=template)
    )
    assert fake.messages[0]["text"]["content"] == "@manager4521 (Ada) @13800000000 (Bob) : hi"
    assert fake.messages[0]["at"]["isAtAll"] is True


def test_configured_template_used_and_render_error_names_the_line(server: HTTPServer) -> None:
    """``context.template`` is the route's template, else the target's (workers.delivery)."""
    fake = FakeRobot(server)
    target = make_target(fake.url, secret=SECRET)
    target.deliver(context("a", template="custom: {{ event.text | upper }}"))
    assert fake.messages[0]["markdown"]["text"] == "custom: A"
    with pytest.raises(PermanentDeliveryError, match="template line 2"):
        target.deliver(context(template="fine\n{{ event.nope.deeper }}"))
    broken_title = make_target(fake.url, secret=SECRET, title="{{ event.group.nope.x }}")
    with pytest.raises(PermanentDeliveryError, match="^title: template line 1"):
        broken_title.deliver(context())


def test_link_and_action_card_payloads(server: HTTPServer) -> None:
    fake = FakeRobot(server)
    link = make_target(
        fake.url, secret=SECRET, msgtype="link", message_url="https://ops.example/e/{{ event.id }}"
    )
    link.deliver(context("see the run", mentions=[Party(id="ou_ada")]))
    single = make_target(
        fake.url,
        secret=SECRET,
        msgtype="actionCard",
        title="Deploy",
        single_title="Open",
        single_url="https://ops.example/{{ event.group.id }}",
    )
    single.deliver(context())
    buttons = make_target(
        fake.url,
        secret=SECRET,
        msgtype="actionCard",
        btn_orientation="horizontal",
        btns=[
            {"title": "Yes", "action_url": "https://y/{{ event.id }}"},
            {"title": "No", "action_url": "https://n"},
        ],
    )
    buttons.deliver(context())
    first, second, third = fake.messages
    assert first["msgtype"] == "link" and "at" not in first
    assert first["link"]["messageUrl"] == "https://ops.example/e/evt_1"
    assert first["link"]["picUrl"] == "" and first["link"]["title"] == "Ops room"
    assert "@Ada" in first["link"]["text"]  # link messages cannot @: the name stays text
    card = second["actionCard"]
    assert (card["title"], card["singleTitle"], card["singleURL"]) == (
        "Deploy",
        "Open",
        "https://ops.example/g1",
    )
    assert card["btnOrientation"] == "0"
    assert third["actionCard"]["btns"] == [
        {"title": "Yes", "actionURL": "https://y/evt_1"},
        {"title": "No", "actionURL": "https://n"},
    ]
    assert third["actionCard"]["btnOrientation"] == "1"


@pytest.mark.parametrize(
    ("code", "error", "retry_after", "says"),
    [
        (130101, TargetThrottled, 600.0, "blocks the robot for 10 minutes"),
        (410100, TargetThrottled, 600.0, "blocks the robot"),
        (-1, RetryableDeliveryError, None, "busy"),
        (310000, PermanentDeliveryError, None, "security settings"),
        (40035, PermanentDeliveryError, None, "has no access_token"),
        (300001, PermanentDeliveryError, None, "access_token in the webhook URL is not valid"),
        (400102, PermanentDeliveryError, None, "disabled"),
        (123456, PermanentDeliveryError, None, r"errcode 123456 \(boom\)$"),
    ],
)
def test_errcodes_in_http_200(
    server: HTTPServer, code: int, error: type[Exception], retry_after: float | None, says: str
) -> None:
    server.expect_request("/robot/send").respond_with_response(errcode(code, "boom"))
    target = make_target(server.url_for("/robot/send") + f"?access_token={TOKEN}", secret=SECRET)
    raised = refusal(target, context(), error, says, retry_after)
    assert_hidden(raised, TOKEN, SECRET)
    assert raised.status == 200  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("answer", "error", "retry_after"),
    [
        (Response("busy", 503), RetryableDeliveryError, None),
        (Response("slow", 429, headers={"retry-after": "7"}), RetryableDeliveryError, 7.0),
        (Response("no", 404), PermanentDeliveryError, None),
        (Response("<html>gateway</html>", 200), RetryableDeliveryError, None),
    ],
)
def test_http_level_answers(
    server: HTTPServer, answer: Response, error: type[Exception], retry_after: float | None
) -> None:
    server.expect_request("/robot/send").respond_with_response(answer)
    with pytest.raises(error) as info:
        make_target(server.url_for("/robot/send") + f"?access_token={TOKEN}").deliver(context())
    assert getattr(info.value, "retry_after", None) == retry_after


def test_network_failure_is_retryable_and_hides_the_token() -> None:
    target = make_target(f"http://127.0.0.1:9/robot/send?access_token={TOKEN}", secret=SECRET)
    with pytest.raises(RetryableDeliveryError) as info:
        target.deliver(context())
    assert "127.0.0.1:9/…" in str(info.value) and TOKEN not in str(info.value)


def config_of(**target: Any) -> dict[str, Any]:
    entry = {"id": "ding", "kind": "dingtalk_robot", **target}
    return {"targets": [entry]}


def parse(data: dict[str, Any]) -> Any:
    return parse_config(
        data, source_options={}, target_options={"dingtalk_robot": DingTalkRobotTarget.Options}
    )


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        (
            {"url": "https://oapi.dingtalk.com/robot/send"},
            "url: the webhook URL needs its access_token",
        ),
        (
            {"url": f"https://oapi.dingtalk.com/robot/send?access_token={TOKEN}&sign=x"},
            "set secret instead",
        ),
        (
            {"url": f"http://127.0.0.1/robot/send?access_token={TOKEN}"},
            "url: 127.0.0.1 is a loopback address",
        ),
        ({"msgtype": "link"}, "msgtype link needs message_url"),
        ({"msgtype": "actionCard"}, "needs single_title and single_url, or btns"),
        ({"msgtype": "actionCard", "single_title": "x"}, "set both single_title and single_url"),
        (
            {"msgtype": "link", "message_url": "https://x", "at_all": True},
            "link messages cannot @-mention",
        ),
        ({"title": "{{ broken"}, "title: template line 1"),
        ({"secret": ""}, "secret is empty"),
        ({"msgtype": "feedCard"}, "msgtype: Input should be"),
    ],
)
def test_config_errors_name_the_key(options: dict[str, Any], problem: str) -> None:
    entry = {"url": f"https://oapi.dingtalk.com/robot/send?access_token={TOKEN}", **options}
    with pytest.raises(ConfigError) as info:
        parse(config_of(**entry))
    assert problem in str(info.value)
    assert str(info.value).startswith("targets[0]")
    assert TOKEN not in str(info.value)


def test_config_parses_and_hides_secrets() -> None:
    url = f"https://oapi.dingtalk.com/robot/send?access_token={TOKEN}"
    config = parse(config_of(url=url, secret=SECRET, msgtype="text", at_mobiles=["13800000000"]))
    target = DingTalkRobotTarget(config.targets["ding"])
    assert TOKEN not in repr(target.options) and SECRET not in repr(target.options)
    with pytest.raises(ValidationError) as info:
        DingTalkRobotTarget.Options(url=url, secret=SECRET, sceret=SECRET)  # type: ignore[call-arg]
    assert SECRET not in str(info.value)


def test_loopback_url_refused_at_init_without_allow_private() -> None:
    options = DingTalkRobotTarget.Options(url=f"http://127.0.0.1:9/robot/send?access_token={TOKEN}")
    config = TargetConfig(id="ding", kind="dingtalk_robot", options=options)
    with pytest.raises(ConfigError, match=r"^targets\.ding\.url: .*allow_private: true"):
        DingTalkRobotTarget(config)


def test_end_to_end_through_a_real_worker(
    server: HTTPServer, relay_event: Callable[..., None]
) -> None:
    fake = FakeRobot(server)
    target = {
        "id": "ding",
        "kind": "dingtalk_robot",
        "url": fake.url,
        "secret": SECRET,
        "msgtype": "text",
    }
    relay_event(target, {"group": {"id": "g1", "name": "Ops"}, "text": "shipped"})
    assert fake.messages[0]["text"]["content"] == "[Ops] shipped"
