"""The ``slack`` target against a loopback server that behaves like Slack: incoming
webhooks (plain-text codes) and ``chat.postMessage`` (bearer token, ``ok: false`` codes,
429 + ``Retry-After`` per channel)."""

from __future__ import annotations

import json
import re
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
from relay.config.models import TargetConfig
from relay.config.people import Person
from relay.errors import (
    ConfigError,
    PermanentDeliveryError,
    RetryableDeliveryError,
    TargetThrottled,
)
from relay.events import FileRef, Party
from tests.workers.support import assert_hidden, assert_registered, build_target, markup_message
from workers.targets.slack import API_ERRORS, WEBHOOK_ERRORS, SlackTarget

TOKEN = "xoxb-1111-2222-s3cretT0ken"
HOOK_SECRET = "hooks3cretXYZ"
HOOK = f"/services/T0001/B0001/{HOOK_SECRET}"


class FakeSlack:
    """Incoming webhooks and ``chat.postMessage`` as Slack answers them; ``script`` holds
    canned answers that are returned (in order) before any check, for error codes."""

    def __init__(self, server: HTTPServer, *, per_second: int = 5) -> None:
        self.server = server
        self.per_second = per_second
        self.messages: list[dict[str, Any]] = []
        self.requests: list[Request] = []
        self.script: list[Response] = []
        self.channels = {"C01": "ok", "CARCH": "archived", "COUT": "not_member"}
        self.sent: dict[str, list[float]] = {}
        self.lock = threading.Lock()
        server.expect_request("/api/chat.postMessage", method="POST").respond_with_handler(
            self.post_message
        )
        server.expect_request(re.compile(r"^/services/"), method="POST").respond_with_handler(
            self.webhook
        )

    def url(self, path: str) -> str:
        return self.server.url_for(path)

    def _limited(self, channel: str) -> bool:
        now = time.monotonic()
        recent = [t for t in self.sent.get(channel, []) if now - t < 1.0]
        self.sent[channel] = recent
        if len(recent) >= self.per_second:
            return True
        recent.append(now)
        return False

    def post_message(self, request: Request) -> Response:
        with self.lock:
            self.requests.append(request)
            if self.script:
                return self.script.pop(0)
            auth = request.headers.get("authorization")
            if auth is None:
                return api_answer(ok=False, error="not_authed")
            if auth != f"Bearer {TOKEN}":
                return api_answer(ok=False, error="invalid_auth")
            data = json.loads(request.get_data())
            state = self.channels.get(data.get("channel"))
            if state is None:
                return api_answer(ok=False, error="channel_not_found")
            if state == "archived":
                return api_answer(ok=False, error="is_archived")
            if state == "not_member":
                return api_answer(ok=False, error="not_in_channel")
            if not data.get("text") and not data.get("blocks"):
                return api_answer(ok=False, error="no_text")
            if len(data.get("text", "")) > 40000:
                return api_answer(ok=False, error="msg_too_long")
            if self._limited(data["channel"]):
                return Response("", status=429, headers={"Retry-After": "1"})
            self.messages.append(data)
            return api_answer(ok=True, channel=data["channel"], ts=f"{time.time():.6f}")

    def webhook(self, request: Request) -> Response:
        with self.lock:
            self.requests.append(request)
            if self.script:
                return self.script.pop(0)
            if request.path != HOOK:
                return Response("invalid_token", status=403)
            try:
                data = json.loads(request.get_data())
            except ValueError:
                return Response("invalid_payload", status=400)
            if not data.get("text") and not data.get("blocks"):
                return Response("no_text", status=400)
            if self._limited("hook"):
                return Response("rate_limited", status=429, headers={"Retry-After": "1"})
            self.messages.append(data)
            return Response("ok", status=200, content_type="text/html")


def api_answer(**body: Any) -> Response:
    return Response(json.dumps(body), status=200, content_type="application/json")


@pytest.fixture
def slack(server: HTTPServer) -> FakeSlack:
    return FakeSlack(server)


def api_target(slack: FakeSlack, **options: Any) -> SlackTarget:
    values = {"token": TOKEN, "channel": "C01", "api_base": slack.url("/api"), **options}
    return build_target(SlackTarget, "team", **values)


def hook_target(slack: FakeSlack, path: str = HOOK, **options: Any) -> SlackTarget:
    return build_target(SlackTarget, "team", webhook_url=slack.url(path), **options)


context = partial(markup_message, "dingtalk_robot")


def test_registered_as_entry_point() -> None:
    assert_registered(SlackTarget, "slack", "notify")
    assert SlackTarget.default_rate_limits == ("1/s",)


def test_webhook_posts_escaped_mrkdwn(slack: FakeSlack) -> None:
    files = [
        FileRef(name="report <final>.pdf", url="https://files.example.com/r.pdf?a=1&b=2"),
        FileRef(name="photo.png", ref="F123"),
    ]
    result = hook_target(slack).deliver(context(text="a < b && c > d <!channel>", files=files))
    assert (result.status, result.excerpt) == (200, "ok")
    [message] = slack.messages
    assert message["text"] == (
        "*Ops &amp; &lt;Infra&gt;* · Grace\n"
        "a &lt; b &amp;&amp; c &gt; d &lt;!channel&gt;\n"
        ":paperclip: <https://files.example.com/r.pdf?a=1&amp;b=2|report &lt;final&gt;.pdf>\n"
        ":paperclip: photo.png"
    )
    assert "blocks" not in message and "channel" not in message
    assert slack.requests[-1].headers["content-type"] == "application/json; charset=utf-8"


def test_post_message_sends_bearer_token_and_channel(slack: FakeSlack) -> None:
    result = api_target(slack).deliver(context())
    assert result.status == 200 and '"ok": true' in (result.excerpt or "")
    [message] = slack.messages
    assert message["channel"] == "C01"
    assert message["text"] == "*Ops &amp; &lt;Infra&gt;* · Grace\ndeploy finished"
    assert slack.requests[-1].headers["authorization"] == f"Bearer {TOKEN}"


def test_mentions_become_real_slack_mentions(slack: FakeSlack) -> None:
    people = {"ada": Person(name="Ada", dingtalk="manager4521", slack="U024BE7LH")}
    mentions = [Party(id="manager4521", name="ada-dt"), Party(id="x9", name="Bob <b>")]
    api_target(slack).deliver(context(mentions=mentions, people=people))
    assert slack.messages[-1]["text"].endswith("\ncc <@U024BE7LH> @Bob &lt;b&gt;")


def test_event_without_text_shows_its_type(slack: FakeSlack) -> None:
    api_target(slack).deliver(context(text=None, type_="member.joined"))
    assert slack.messages[-1]["text"] == "*Ops &amp; &lt;Infra&gt;* · Grace\n_member.joined_"


def test_blocks_carry_the_text_in_section_blocks(slack: FakeSlack) -> None:
    long_text = "x" * 3500
    api_target(slack, blocks=True).deliver(context(text=long_text))
    message = slack.messages[-1]
    sections = [b["text"] for b in message["blocks"]]
    assert all(s["type"] == "mrkdwn" for s in sections)
    assert [len(s["text"]) for s in sections] == [3000, len(message["text"]) - 3000]
    assert "".join(s["text"] for s in sections) == message["text"]


def test_configured_template_is_used(slack: FakeSlack) -> None:
    """The pipeline puts the route's (else the target's) template into the context."""
    template = "{{ event.sender.name }}: {{ escape(event.text) }} ({{ at | length }})"
    api_target(slack).deliver(context(text="1 < 2", template=template))
    assert slack.messages[-1]["text"] == "Grace: 1 &lt; 2 (0)"


def test_template_that_fails_names_the_line(slack: FakeSlack) -> None:
    with pytest.raises(PermanentDeliveryError, match="template line 2"):
        api_target(slack).deliver(context(template="first line\n{{ event.sender.nope }}"))
    assert slack.requests == []


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("invalid_payload", 400),
        ("no_text", 400),
        ("too_many_attachments", 400),
        ("action_prohibited", 403),
        ("posting_to_general_channel_denied", 403),
        ("invalid_token", 403),
        ("team_disabled", 403),
        ("no_team", 404),
        ("no_service", 404),
        ("no_service_id", 404),
        ("no_active_hooks", 404),
        ("channel_not_found", 404),
        ("channel_is_archived", 410),
    ],
)
def test_webhook_error_codes_are_permanent_with_a_clear_message(
    slack: FakeSlack, code: str, status: int
) -> None:
    slack.script.append(Response(code, status=status))
    with pytest.raises(PermanentDeliveryError) as info:
        hook_target(slack).deliver(context())
    assert str(info.value) == f"Slack webhook: {code}: {WEBHOOK_ERRORS[code]}"
    assert info.value.status == status
    assert HOOK_SECRET not in str(info.value) and HOOK_SECRET not in repr(info.value)


def test_webhook_code_is_read_from_the_body_not_the_status(slack: FakeSlack) -> None:
    slack.script.append(Response("channel_is_archived", status=200))
    with pytest.raises(PermanentDeliveryError, match="channel_is_archived"):
        hook_target(slack).deliver(context())


def test_webhook_with_a_wrong_secret_gets_invalid_token(slack: FakeSlack) -> None:
    with pytest.raises(PermanentDeliveryError, match="invalid_token.*update webhook_url") as info:
        hook_target(slack, "/services/T0001/B0001/wrongs3cret").deliver(context())
    assert "wrongs3cret" not in str(info.value)


def test_webhook_rate_limit_throttles_the_target(slack: FakeSlack) -> None:
    slack.per_second = 1
    target = hook_target(slack)
    target.deliver(context())
    with pytest.raises(TargetThrottled) as info:
        target.deliver(context())
    assert info.value.retry_after == 1.0 and info.value.status == 429
    assert len(slack.messages) == 1


def test_webhook_server_errors_are_retryable(slack: FakeSlack) -> None:
    slack.script.append(Response("oops", status=503, headers={"Retry-After": "7"}))
    with pytest.raises(RetryableDeliveryError) as info:
        hook_target(slack).deliver(context())
    assert not isinstance(info.value, TargetThrottled)
    assert info.value.retry_after == 7.0


@pytest.mark.parametrize(
    ("channel", "code"),
    [("CNOPE", "channel_not_found"), ("CARCH", "is_archived"), ("COUT", "not_in_channel")],
)
def test_channel_problems_are_permanent(slack: FakeSlack, channel: str, code: str) -> None:
    with pytest.raises(PermanentDeliveryError) as info:
        api_target(slack, channel=channel).deliver(context())
    assert str(info.value).startswith(f"chat.postMessage: {code}: ")
    assert channel in str(info.value)


def test_wrong_token_is_invalid_auth_and_never_shown(slack: FakeSlack) -> None:
    other = "xoxb-9999-wrongT0ken"
    with pytest.raises(PermanentDeliveryError, match="invalid_auth: Slack rejected") as info:
        api_target(slack, token=other).deliver(context())
    assert_hidden(info.value, other, TOKEN)


def test_empty_and_too_long_messages_are_permanent(slack: FakeSlack) -> None:
    with pytest.raises(PermanentDeliveryError, match="no_text: the rendered message is empty"):
        api_target(slack).deliver(context(template="{{ '' }}"))
    with pytest.raises(PermanentDeliveryError, match="msg_too_long"):
        api_target(slack).deliver(context(text="y" * 40001))


@pytest.mark.parametrize("code", sorted(API_ERRORS))
def test_api_config_errors_are_permanent(slack: FakeSlack, code: str) -> None:
    slack.script.append(api_answer(ok=False, error=code, needed="chat:write.public"))
    with pytest.raises(PermanentDeliveryError) as info:
        api_target(slack).deliver(context())
    assert str(info.value).startswith(f"chat.postMessage: {code}: ")
    if code == "missing_scope":
        assert "chat:write.public scope" in str(info.value)


@pytest.mark.parametrize(
    "code",
    ["fatal_error", "internal_error", "service_unavailable", "request_timeout"],
)
def test_api_transient_errors_are_retryable(slack: FakeSlack, code: str) -> None:
    slack.script.append(api_answer(ok=False, error=code))
    with pytest.raises(RetryableDeliveryError, match=code) as info:
        api_target(slack).deliver(context())
    assert not isinstance(info.value, TargetThrottled)


def test_unknown_api_error_is_permanent(slack: FakeSlack) -> None:
    slack.script.append(api_answer(ok=False, error="something_new"))
    with pytest.raises(PermanentDeliveryError, match="something_new: Slack refused"):
        api_target(slack).deliver(context())


def test_api_rate_limit_throttles_the_target(slack: FakeSlack) -> None:
    slack.per_second = 1
    target = api_target(slack)
    target.deliver(context())
    with pytest.raises(TargetThrottled) as info:
        target.deliver(context())
    assert (info.value.retry_after, info.value.status) == (1.0, 429)
    body = json.dumps({"ok": False, "error": "ratelimited"})
    slack.script.append(Response(body, status=200, headers={"Retry-After": "12"}))
    with pytest.raises(TargetThrottled, match="ratelimited") as info:
        target.deliver(context())
    assert info.value.retry_after == 12.0
    slack.script.append(api_answer(ok=False, error="ratelimited"))  # no Retry-After
    with pytest.raises(RetryableDeliveryError) as retry:
        target.deliver(context())
    assert not isinstance(retry.value, TargetThrottled)


def test_answer_that_is_not_web_api_json_is_permanent(slack: FakeSlack) -> None:
    slack.script.append(Response("<html>welcome</html>", status=200))
    with pytest.raises(PermanentDeliveryError, match="check api_base"):
        api_target(slack).deliver(context())
    slack.script.append(Response("bad gateway", status=502))
    with pytest.raises(RetryableDeliveryError, match="HTTP 502"):
        api_target(slack).deliver(context())


def test_options_validation_is_clear_and_hides_secrets() -> None:
    hook = "https://hooks.slack.com/services/T0/B0/" + HOOK_SECRET
    with pytest.raises(ValidationError, match="webhook_url .* or token"):
        SlackTarget.Options()
    with pytest.raises(ValidationError, match="not both"):
        SlackTarget.Options(webhook_url=hook, token=TOKEN, channel="C01")
    with pytest.raises(ValidationError, match="channel is required"):
        SlackTarget.Options(token=TOKEN)
    with pytest.raises(ValidationError, match="channel is only used with token"):
        SlackTarget.Options(webhook_url=hook, channel="C01")
    with pytest.raises(ValidationError, match="must be a Slack token") as info:
        SlackTarget.Options(token="hunter2-secret", channel="C01")
    assert "hunter2" not in str(info.value)
    with pytest.raises(ValidationError, match="scheme must be http or https") as info:
        SlackTarget.Options(webhook_url="ftp://hooks.slack.com/" + HOOK_SECRET)
    assert HOOK_SECRET not in str(info.value)
    shown = repr(SlackTarget.Options(webhook_url=hook)) + repr(
        SlackTarget.Options(token=TOKEN, channel="C01")
    )
    assert HOOK_SECRET not in shown and TOKEN not in shown


def test_private_addresses_refused_unless_allowed() -> None:
    for key, options in [
        ("webhook_url", {"webhook_url": "http://127.0.0.1:9/services/x"}),
        ("api_base", {"token": TOKEN, "channel": "C01", "api_base": "http://10.0.0.5/api"}),
    ]:
        config = TargetConfig(id="team", kind="slack", options=SlackTarget.Options(**options))
        with pytest.raises(ConfigError, match=rf"targets\.team\.{key}: .*allow_private: true"):
            SlackTarget(config)


def test_config_file_shape() -> None:
    data = {
        "targets": [
            {"id": "hook", "kind": "slack", "webhook_url": "https://hooks.slack.com/services/x"},
            {"id": "bot", "kind": "slack", "token": "${SLACK_TOKEN}", "channel": "C01"},
            {"id": "bad", "kind": "slack", "token": TOKEN},
        ]
    }
    options = {"slack": SlackTarget.Options}
    with pytest.raises(ConfigError) as info:
        parse_config(data, env={"SLACK_TOKEN": TOKEN}, target_options=options)
    assert info.value.problems == ["targets[2]: channel is required with token"]
    del data["targets"][2]
    config = parse_config(data, env={"SLACK_TOKEN": TOKEN}, target_options=options)
    assert SlackTarget(config.targets["bot"]).options.token == TOKEN
    assert TOKEN in config.secrets  # so logs and attempt records redact it


def test_end_to_end_through_a_real_worker(
    slack: FakeSlack, relay_event: Callable[..., None]
) -> None:
    target = {
        "id": "team",
        "kind": "slack",
        "token": TOKEN,
        "channel": "C01",
        "api_base": slack.url("/api"),
    }
    relay_event(target, {"group": {"id": "g1"}, "text": "x < y"})
    assert slack.messages[0]["text"] == "*g1*\nx &lt; y"
