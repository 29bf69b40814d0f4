"""The ``dingtalk_app`` target against a loopback fake of DingTalk's v1.0 API.

The fake issues access tokens (``/v1.0/oauth2/accessToken``, counting calls, with an
expiry and server-side revocation), checks the ``x-acs-dingtalk-access-token`` header
and the body of ``/v1.0/robot/groupMessages/send`` (HTTP 401 ``InvalidAuthentication``
for a bad token, 400 codes for bad parameters), and serves session webhooks.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient
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
from relay.events import Party, ReplyHandle
from relay.intake.sources.dingtalk_robot import sample_message
from relay.state import keys
from tests.conftest import wait_for
from tests.workers.support import (
    assert_hidden,
    assert_registered,
    build_target,
    delivery_context,
    refusal,
)
from workers.targets.base import DeliveryContext
from workers.targets.dingtalk_app import DingTalkAppTarget

APP_KEY = "dingappkey0001"
APP_SECRET = "app-secret-Vx9q2LmT7pZr4Ks8Nw3Yb6Hc1Jd5Fg0"
GROUP = "cidGroupOpenConversation=="
PEOPLE = People(
    {
        "ada": Person(name="Ada", dingtalk="manager4521"),
        "bob": Person(name="Bob", dingtalk_mobile="13800000000"),
    }
)


def reply(status: int, body: dict[str, Any], **headers: str) -> Response:
    return Response(json.dumps(body), status, headers=headers, mimetype="application/json")


class FakeDingTalk:
    """Token endpoint, app-robot group send and session webhooks of one DingTalk app."""

    def __init__(self, server: HTTPServer, *, expire_in: int = 7200, token_delay: float = 0):
        self.expire_in, self.token_delay = expire_in, token_delay
        self.token_calls = 0
        self.tokens: dict[str, float] = {}  # token -> expiry (epoch s)
        self.sends: list[Request] = []
        self.messages: list[dict[str, Any]] = []
        self.session_messages: list[dict[str, Any]] = []
        self.sessions: set[str] = {"s1"}
        self.forced: list[Response] = []  # answers the send endpoint gives before checking
        self.lock = threading.Lock()
        self.base = server.url_for("").rstrip("/")
        expect = server.expect_request
        expect("/v1.0/oauth2/accessToken", method="POST").respond_with_handler(self.token)
        expect("/v1.0/robot/groupMessages/send", method="POST").respond_with_handler(self.send)
        expect("/robot/sendBySession", method="POST").respond_with_handler(self.session)

    def token(self, request: Request) -> Response:
        time.sleep(self.token_delay)
        body = json.loads(request.get_data())
        with self.lock:
            self.token_calls += 1
            if body != {"appKey": APP_KEY, "appSecret": APP_SECRET}:
                # The code is not documented; any 4xx here means bad credentials.
                return reply(
                    400, {"code": "invalidClientIdOrSecret", "message": "无效的appKey或appSecret"}
                )
            token = f"tok-{self.token_calls:04d}-8f2c1e"
            self.tokens[token] = time.time() + self.expire_in
            return reply(200, {"accessToken": token, "expireIn": self.expire_in})

    def revoke_all(self) -> None:
        with self.lock:
            self.tokens.clear()

    def send(self, request: Request) -> Response:
        with self.lock:
            self.sends.append(request)
            if self.forced:
                return self.forced.pop(0)
            token = request.headers.get("x-acs-dingtalk-access-token", "")
            if self.tokens.get(token, 0) <= time.time():
                return reply(
                    401, {"code": "InvalidAuthentication", "message": "不合法的access_token"}
                )
            body = json.loads(request.get_data())
            if body.get("robotCode") != APP_KEY:
                return reply(
                    400, {"code": "invalidParameter.robotCode.auth", "message": "robotCode 不匹配"}
                )
            if body.get("openConversationId") != GROUP:
                return reply(
                    400,
                    {"code": "invalid.openConversationId", "message": "无效的openConversationId"},
                )
            param = body.get("msgParam")
            if not isinstance(param, str) or len(param.encode()) > 15000:
                return reply(
                    400, {"code": "invalidParameter.msgParam.invalid", "message": "msgParam"}
                )
            fields = {"sampleText": {"content"}, "sampleMarkdown": {"title", "text"}}
            if set(json.loads(param)) != fields.get(body.get("msgKey"), set()):
                return reply(400, {"code": "invalidParameter.msgKey.invalid", "message": "msgKey"})
            self.messages.append(body)
            return reply(200, {"processQueryKey": f"pqk{len(self.messages)}"})

    def session(self, request: Request) -> Response:
        with self.lock:
            if request.args.get("session") not in self.sessions:
                return reply(200, {"errcode": 300001, "errmsg": "session is not exist"})
            self.session_messages.append(json.loads(request.get_data()))
            return reply(200, {"errcode": 0, "errmsg": "ok"})

    def session_url(self, session: str = "s1") -> str:
        return f"{self.base}/robot/sendBySession?session={session}"


@pytest.fixture
def fake(server: HTTPServer) -> FakeDingTalk:
    return FakeDingTalk(server)


def make_target(base: str, *, allow_private: bool = True, **options: Any) -> DingTalkAppTarget:
    values: dict[str, Any] = {"app_key": APP_KEY, "app_secret": APP_SECRET, "api_base": base}
    values.update(options)
    if values.get("mode") != "reply":
        values.setdefault("open_conversation_id", GROUP)
    return build_target(DingTalkAppTarget, "app", allow_private=allow_private, **values)


def context(
    state: redis.Redis | None,
    text: str = "deploy finished ✅",
    *,
    session: ReplyHandle | None = None,
    group: str = "g1",
    source_kind: str | None = "standard_webhooks",
    mentions: list[Party] | None = None,
    template: str | None = None,
) -> DeliveryContext:
    return delivery_context(
        template=template,
        source_kind=source_kind,
        people=PEOPLE,
        state=state,
        text=text,
        group=Party(id=group, name="Ops room"),
        mentions=mentions or [],
        reply=session,
    )


def test_registered_as_entry_point() -> None:
    assert_registered(DingTalkAppTarget, "dingtalk_app", "notify")
    assert DingTalkAppTarget.default_rate_limits == ("20/min",)


def test_group_message_payload_and_one_token_for_many_deliveries(
    fake: FakeDingTalk, redis_client: redis.Redis
) -> None:
    target = make_target(fake.base)
    for i in range(5):
        result = target.deliver(context(redis_client, f"message {i}"))
        assert result.status == 200 and "pqk" in (result.excerpt or "")
    assert fake.token_calls == 1 and len(fake.messages) == 5
    first = fake.messages[0]
    assert first["msgKey"] == "sampleMarkdown" and first["robotCode"] == APP_KEY
    assert first["openConversationId"] == GROUP
    param = json.loads(first["msgParam"])
    assert param["title"] == "Ops room"
    assert "**Grace**: message 0" in param["text"]
    assert fake.sends[0].headers["x-acs-dingtalk-access-token"] == "tok-0001-8f2c1e"


def test_two_workers_share_the_token_through_redis(
    fake: FakeDingTalk, redis_client: redis.Redis
) -> None:
    one, two = make_target(fake.base), make_target(fake.base)
    one.deliver(context(redis_client))
    two.deliver(context(redis_client))
    assert fake.token_calls == 1
    [key] = redis_client.keys("relay:dingtalk:token:*")
    assert 7200 - 300 - 5 <= redis_client.ttl(key) <= 7200 - 300
    for name in redis_client.keys("*"):
        value = redis_client.get(name) if redis_client.type(name) == b"string" else b""
        assert APP_SECRET.encode() not in name + (value or b"")


def test_concurrent_cold_start_fetches_one_token(
    server: HTTPServer, redis_client: redis.Redis
) -> None:
    fake = FakeDingTalk(server, token_delay=0.3)
    targets = [make_target(fake.base) for _ in range(2)]
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            targets[i % 2].deliver(context(redis_client, f"m{i}"))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(fake.messages) == 6
    assert fake.token_calls == 1


def test_expired_token_is_fetched_again(server: HTTPServer, redis_client: redis.Redis) -> None:
    fake = FakeDingTalk(server, expire_in=2)  # cached for 1 s (half its life)
    target = make_target(fake.base)
    target.deliver(context(redis_client))
    target.deliver(context(redis_client))
    assert fake.token_calls == 1
    time.sleep(1.2)
    target.deliver(context(redis_client))
    assert fake.token_calls == 2 and len(fake.messages) == 3
    assert [r.headers["x-acs-dingtalk-access-token"] for r in fake.sends] == [
        "tok-0001-8f2c1e",
        "tok-0001-8f2c1e",
        "tok-0002-8f2c1e",
    ]


def test_revoked_token_is_refreshed_once_within_the_attempt(
    fake: FakeDingTalk, redis_client: redis.Redis
) -> None:
    target, other_worker = make_target(fake.base), make_target(fake.base)
    target.deliver(context(redis_client))
    fake.revoke_all()
    result = target.deliver(context(redis_client, "after revocation"))
    assert result.status == 200
    assert fake.token_calls == 2 and len(fake.sends) == 3 and len(fake.messages) == 2
    other_worker.deliver(context(redis_client))  # finds the refreshed token in Redis
    assert fake.token_calls == 2


def test_token_refused_after_refresh_is_retryable(
    fake: FakeDingTalk, redis_client: redis.Redis
) -> None:
    invalid = {"code": "InvalidAuthentication", "message": "不合法的access_token"}
    fake.forced = [reply(400, invalid), reply(400, invalid)]  # DingTalk also uses 400 for it
    with pytest.raises(RetryableDeliveryError, match="after a token refresh") as info:
        make_target(fake.base).deliver(context(redis_client))
    assert type(info.value) is RetryableDeliveryError
    assert fake.token_calls == 2 and len(fake.sends) == 2
    assert "tok-" not in str(info.value) and "tok-" not in (info.value.excerpt or "")


def test_without_redis_the_token_is_cached_in_the_process(fake: FakeDingTalk) -> None:
    target = make_target(fake.base)
    for _ in range(3):
        target.deliver(context(None))
    assert fake.token_calls == 1


def test_bad_credentials_are_permanent_and_secret_free(
    fake: FakeDingTalk, redis_client: redis.Redis
) -> None:
    with pytest.raises(PermanentDeliveryError, match="check app_key and app_secret") as info:
        make_target(fake.base, app_secret="wrong-" + APP_SECRET).deliver(context(redis_client))
    assert APP_SECRET not in str(info.value) and APP_SECRET not in (info.value.excerpt or "")
    assert fake.sends == []


def test_token_endpoint_outage_is_retryable(server: HTTPServer, redis_client: redis.Redis) -> None:
    server.expect_request("/v1.0/oauth2/accessToken").respond_with_response(Response("down", 503))
    target = make_target(server.url_for("").rstrip("/"))
    with pytest.raises(RetryableDeliveryError, match="HTTP 503"):
        target.deliver(context(redis_client))


@pytest.mark.parametrize(
    ("answer", "error", "retry_after", "says"),
    [
        (
            reply(403, {"code": "Forbidden.AccessDenied.QpsLimitForApi", "message": "qps"}),
            TargetThrottled,
            2.0,
            "QpsLimitForApi",
        ),
        (
            reply(
                403,
                {"code": "Forbidden.AccessDenied.QpsLimitForAppkeyAndApi", "message": "qps"},
                **{"retry-after": "5"},
            ),
            TargetThrottled,
            5.0,
            "QpsLimit",
        ),
        (
            reply(429, {"code": "Throttling", "message": "slow"}, **{"retry-after": "7"}),
            RetryableDeliveryError,
            7.0,
            "HTTP 429",
        ),
        (
            reply(500, {"code": "InternalError", "message": "x"}),
            RetryableDeliveryError,
            None,
            "HTTP 500",
        ),
        (
            reply(400, {"code": "invalidParameter.robotCode.auth", "message": "m"}),
            PermanentDeliveryError,
            None,
            "check robot_code",
        ),
        (
            reply(
                403, {"code": "Forbidden.AccessDenied.AccessTokenPermissionDenied", "message": "m"}
            ),
            PermanentDeliveryError,
            None,
            "qyapi_robot_sendmsg",
        ),
        (
            reply(400, {"code": "bot.stopped", "message": "群机器人已经停用"}),
            PermanentDeliveryError,
            None,
            "HTTP 400 bot.stopped: 群机器人已经停用",
        ),
        (Response("not json", 404), PermanentDeliveryError, None, "^DingTalk API HTTP 404$"),
    ],
)
def test_api_errors_are_classified(
    fake: FakeDingTalk,
    redis_client: redis.Redis,
    answer: Response,
    error: type[Exception],
    retry_after: float | None,
    says: str,
) -> None:
    fake.forced = [answer]
    raised = refusal(make_target(fake.base), context(redis_client), error, says, retry_after)
    assert_hidden(raised, "tok-0001", APP_SECRET)


def test_real_parameter_errors_from_the_fake(fake: FakeDingTalk, redis_client: redis.Redis) -> None:
    with pytest.raises(
        PermanentDeliveryError, match="invalid.openConversationId.*robot must be in"
    ):
        make_target(fake.base, open_conversation_id="cidOther==").deliver(context(redis_client))
    with pytest.raises(PermanentDeliveryError, match="invalidParameter.robotCode.auth"):
        make_target(fake.base, robot_code="dingotherrobot").deliver(context(redis_client))


def test_group_comes_from_a_dingtalk_event_when_not_configured(
    fake: FakeDingTalk, redis_client: redis.Redis
) -> None:
    target = make_target(fake.base, open_conversation_id=None)
    target.deliver(context(redis_client, group=GROUP, source_kind="dingtalk_robot"))
    assert fake.messages[0]["openConversationId"] == GROUP
    with pytest.raises(PermanentDeliveryError, match="set open_conversation_id"):
        target.deliver(context(redis_client, group=GROUP, source_kind="slack"))
    assert fake.token_calls == 1 and len(fake.sends) == 1


def test_text_messages_mentions_as_names_and_the_size_cap(
    fake: FakeDingTalk, redis_client: redis.Redis
) -> None:
    target = make_target(fake.base, msgtype="text")
    mentions = [Party(id="manager4521"), Party(id="someone", name="Sam")]
    target.deliver(context(redis_client, "hi", source_kind="dingtalk_robot", mentions=mentions))
    first = fake.messages[0]
    assert first["msgKey"] == "sampleText"
    assert json.loads(first["msgParam"]) == {"content": "[Ops room] Grace: hi\n@Ada @Sam"}
    target.deliver(context(redis_client, "汉字" * 6000))  # 36 kB of UTF-8
    param = fake.messages[1]["msgParam"]
    assert len(param.encode()) <= 15000 and json.loads(param)["content"].endswith("…")


def test_template_used_and_render_error_names_the_line(
    fake: FakeDingTalk, redis_client: redis.Redis
) -> None:
    target = make_target(fake.base)
    target.deliver(context(redis_client, "x", template="[{{ event.source }}] {{ event.text }}"))
    assert json.loads(fake.messages[0]["msgParam"])["text"] == "[ops] x"
    with pytest.raises(PermanentDeliveryError, match="template line 3"):
        target.deliver(context(redis_client, template="a\nb\n{{ 1 / 0 }}"))
    assert len(fake.sends) == 1  # nothing is sent for a message that cannot be rendered


def session(fake: FakeDingTalk, *, minutes: float = 90, name: str = "s1") -> ReplyHandle:
    expires = datetime.now(UTC) + timedelta(minutes=minutes)
    return ReplyHandle(kind="dingtalk_session", url=fake.session_url(name), expires_at=expires)


def reply_target(fake: FakeDingTalk, **options: Any) -> DingTalkAppTarget:
    values: dict[str, Any] = {
        "mode": "reply",
        "session_hosts": ["127.0.0.1"],
        "app_key": None,
        "app_secret": None,
    }
    values.update(options)
    return make_target(fake.base, **values)


def test_reply_mode_posts_to_the_session_webhook_with_real_mentions(
    fake: FakeDingTalk, redis_client: redis.Redis
) -> None:
    mentions = [Party(id="manager4521"), Party(id="13800000000")]
    handle = session(fake)
    ctx = context(
        redis_client, "on it", session=handle, source_kind="dingtalk_robot", mentions=mentions
    )
    result = reply_target(fake, msgtype="text").deliver(ctx)
    assert result.status == 200
    [body] = fake.session_messages
    assert body["msgtype"] == "text"
    assert body["text"]["content"] == "[Ops room] Grace: on it\n@manager4521 @13800000000"
    assert body["at"] == {
        "atUserIds": ["manager4521"],
        "atMobiles": ["13800000000"],
        "isAtAll": False,
    }
    assert fake.token_calls == 0 and fake.sends == []


def test_reply_mode_refuses_expired_absent_and_foreign_sessions(
    fake: FakeDingTalk, redis_client: redis.Redis
) -> None:
    target = reply_target(fake)
    expired = session(fake, minutes=-1)
    with pytest.raises(PermanentDeliveryError, match=r"the session webhook expired at 20\d\d-"):
        target.deliver(context(redis_client, session=expired))
    with pytest.raises(PermanentDeliveryError, match="no DingTalk session webhook"):
        target.deliver(context(redis_client))
    other = ReplyHandle(kind="slack_thread", url=fake.session_url(), expires_at=None)
    with pytest.raises(PermanentDeliveryError, match="no DingTalk session webhook"):
        target.deliver(context(redis_client, session=other))
    with pytest.raises(PermanentDeliveryError, match="host 127.0.0.1 is not in session_hosts"):
        reply_target(fake, session_hosts=["oapi.dingtalk.com"]).deliver(
            context(redis_client, session=session(fake))
        )
    with pytest.raises(PermanentDeliveryError, match="errcode 300001"):
        target.deliver(context(redis_client, session=session(fake, name="gone")))
    assert fake.session_messages == []


def test_reply_mode_keeps_the_ssrf_guard(fake: FakeDingTalk, redis_client: redis.Redis) -> None:
    """The session URL comes from event content: private addresses need allow_private."""
    target = reply_target(fake, allow_private=False, api_base="https://api.dingtalk.com")
    with pytest.raises(PermanentDeliveryError, match="loopback address.*allow_private"):
        target.deliver(context(redis_client, session=session(fake)))
    localhost = ReplyHandle(
        kind="dingtalk_session", url=fake.session_url().replace("127.0.0.1", "localhost")
    )
    named = reply_target(
        fake, allow_private=False, api_base="https://api.dingtalk.com", session_hosts=["localhost"]
    )
    with pytest.raises(PermanentDeliveryError, match="private host name|loopback"):
        named.deliver(context(redis_client, session=localhost))
    assert fake.session_messages == []


def parse(entry: dict[str, Any]) -> Any:
    data = {"targets": [{"id": "app", "kind": "dingtalk_app", **entry}]}
    return parse_config(
        data, source_options={}, target_options={"dingtalk_app": DingTalkAppTarget.Options}
    )


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({"app_key": APP_KEY}, "targets[0]: mode group needs app_secret"),
        ({}, "targets[0]: mode group needs app_key and app_secret"),
        ({"app_key": APP_KEY, "app_secret": ""}, "app_secret is empty"),
        (
            {"app_key": APP_KEY, "app_secret": APP_SECRET, "api_base": "ftp://x"},
            "targets[0].api_base: the scheme",
        ),
        ({"mode": "reply", "msgtype": "link"}, "targets[0].msgtype"),
        ({"mode": "reply", "title": "{% if %}"}, "targets[0].title: template line 1"),
        (
            {"mode": "reply", "oapi_base": "https://oapi.dingtalk.com"},
            "targets[0].oapi_base: unknown key",
        ),
    ],
)
def test_config_errors_name_the_key(entry: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(entry)
    assert problem in str(info.value)
    assert APP_SECRET not in str(info.value)


def test_config_parses_and_hides_the_secret() -> None:
    config = parse({"app_key": APP_KEY, "app_secret": APP_SECRET, "open_conversation_id": GROUP})
    target = DingTalkAppTarget(config.targets["app"])
    assert APP_SECRET not in repr(target.options)
    assert parse({"mode": "reply"}).targets["app"].options.mode == "reply"
    with pytest.raises(ConfigError, match=r"^targets\.app\.api_base: .*allow_private: true"):
        DingTalkAppTarget(
            TargetConfig(
                id="app",
                kind="dingtalk_app",
                options=DingTalkAppTarget.Options(mode="reply", api_base="http://127.0.0.1:9"),
            )
        )


def test_reply_mode_end_to_end_from_a_dingtalk_robot_source_on_loopback(
    fake: FakeDingTalk,
    write_config: Callable[..., Path],
    client_for: Callable[[Path], FlaskClient],
    relay_processes: Callable[..., Any],
    redis_client: redis.Redis,
) -> None:
    """The documented test set-up: the source trusts the loopback origin in its own
    ``session_hosts``, the target allows private addresses and lists the host. A robot
    message through the receiver, a real worker, and the reply reaches the server."""
    config = {
        "sources": [
            {"id": "dt", "kind": "dingtalk_robot", "app_secret": APP_SECRET,
             "session_hosts": [fake.base]},
        ],
        "targets": [
            {"id": "answer", "kind": "dingtalk_app", "mode": "reply", "msgtype": "text",
             "allow_private": True, "session_hosts": ["127.0.0.1"], "timeout": "1s"},
        ],
        "routes": [
            {"source": "dt", "when": {"mentions_bot": True}, "targets": ["answer"],
             "template": "Got it: {{ event.text }}"},
        ],
    }  # fmt: skip
    path = write_config(config)
    relay_processes(path)
    client = client_for(path)
    body = sample_message(int(time.time() * 1000))
    body["sessionWebhook"] = fake.session_url()
    sample = client.application.extensions["relay"].sources["dt"].sample(json.dumps(body).encode())
    response = client.post("/hooks/dt", data=sample.body, headers=sample.headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    event_id = response.get_json()["event_id"]
    stored = json.loads(redis_client.hget(keys.event(event_id), "data") or b"{}")
    assert stored["reply"]["url"] == fake.session_url()
    [delivery_id] = wait_for(lambda: redis_client.smembers(keys.event_deliveries(event_id)), 30)
    status = keys.delivery(delivery_id.decode())
    wait_for(lambda: redis_client.hget(status, "status") == b"delivered", timeout=30)
    [sent] = fake.session_messages
    assert sent["msgtype"] == "text"
    assert sent["text"]["content"] == "Got it: Deploy finished: relay is live"
