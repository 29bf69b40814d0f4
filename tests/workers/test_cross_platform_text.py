"""Text reads the same on every platform: a chat message full of markup characters,
taken from a source as that platform sends it, reaches every chat target (on a loopback
fake) so that what a person reads there, once the target's markup is rendered the way
the platform renders it, is exactly the text that was written."""

from __future__ import annotations

import html
import json
import re
from html.parser import HTMLParser
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from relay.config.loader import parse_config
from relay.config.people import People, Person
from relay.events import FileRef, GroupEvent, Party
from relay.intake.sources.slack import SlackSource
from tests.intake.sources.support import inbound
from tests.workers.support import build_target
from workers.targets.base import DeliveryContext
from workers.targets.dingtalk_app import DingTalkAppTarget
from workers.targets.dingtalk_robot import DingTalkRobotTarget
from workers.targets.feishu_bot import FeishuBotTarget
from workers.targets.slack import SlackTarget
from workers.targets.telegram import TelegramTarget
from workers.targets.wecom_bot import WeComBotTarget

TEXT = (
    "a<b & c>d &amp; *bold* **strong** _it_ ~gone~ `code` ```block```\n"
    "# not a heading\n"
    "> not a quote\n"
    "- not a list\n"
    "1. not numbered\n"
    "see [label](http://x.example/a_b) and https://ex.example/p_q?a=1&b=2 :-) <at id=all></at>"
)
MARKUP = set("*_~`[]<>#")
INVISIBLE = "\u200b"  # a zero-width space that keeps "<at" from being a mention
PEOPLE = {
    "ada": Person(name="Ada", slack="U024BE7LH", feishu="ou_ada", wecom="ada", dingtalk="ada1")
}


def event_context(text: str = TEXT, source_kind: str = "standard_webhooks") -> DeliveryContext:
    event = GroupEvent(
        id="evt_x",
        source="ops",
        type="message.created",
        group=Party(id="g1", name="Ops_room *1*"),
        sender=Party(id="u1", name="grace_h"),
        text=text,
        files=[FileRef(name="re_port *v2*.pdf", url="https://files.example/r_1.pdf")],
        mentions=[Party(id="U024BE7LH", name="ada")],
    )
    return DeliveryContext(
        "dlv_x", 1, event.to_json(), 5.0, source_kind=source_kind, people=People(PEOPLE)
    )


# -- what a person reads, per platform ------------------------------------------------------


def read_markdown(markdown: str) -> str:
    """Feishu card, DingTalk and WeCom markdown as their clients show it. No markup
    character of the text may be left raw (each would format something); links show
    their label; character references are decoded."""
    shown = re.sub(r"\[([^\]\n]*)\]\((https?://[^)\s]+)\)", r"\1", markdown)
    shown = re.sub(r"<font[^>]*>|</font>|<at id=[^>]*></at>", "", shown)
    return html.unescape(shown)


def raw_markup(markdown: str, start: str) -> set[str]:
    """Markup characters left raw from the event's text on (``start`` on): each would
    format something. The target's own links and mention tags do not count."""
    if not start:
        return set()
    assert start in markdown, f"the text is not escaped in {markdown!r}"
    body = markdown[markdown.index(start) :]
    body = re.sub(r"&#\d+;", "", body)
    body = re.sub(r"\[([^\[\]\n]*)\]\(https?://[^)\s]+\)", r"\1", body)
    body = re.sub(r"<@[\w.]+>|<at id=[\w]+></at>", "", body)
    return {c for c in body if c in MARKUP}


def read_slack(mrkdwn: str) -> str:
    """Slack: a date token with an invalid format shows its fallback; ``<url>`` shows the
    URL; ``<@U…>`` a name; then the three entities."""
    assert "\\*" not in mrkdwn
    no_dates = re.sub(r"<!date\^\d+\^\{_\}\|([^>]*)>", r"\1", mrkdwn)
    stripped = re.sub(r"<!date\^\d+\^\{_\}\|[^>]*>", "", mrkdwn)
    body = stripped.split("\n", 1)[1]  # after the header line, which is the template's
    body = re.sub(r"<(https?://[^>|]+)(\|[^>]*)?>", "", body)
    assert not set(body) & set("*_~`"), f"raw mrkdwn left in {body!r}"
    assert not re.search(r"(?m)^&gt;", body), "a line of the text would be a quote"
    shown = re.sub(r"<(https?://[^>|]+)\|([^>]*)>", r"\2", no_dates)
    shown = re.sub(r"<(https?://[^>|]+)>", r"\1", shown)
    shown = re.sub(r"<@U[A-Z0-9]+>", "@Ada", shown)
    return html.unescape(shown.replace("\u00ad", ""))


class TelegramHTML(HTMLParser):
    """Telegram's HTML: only its tags, each closed; the text between them is what shows."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        assert tag in {"b", "i", "a", "u", "s", "code", "pre"}, tag
        self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack.pop() == tag

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def read_telegram(text: str) -> str:
    parser = TelegramHTML()
    parser.feed(text)
    parser.close()
    assert parser.stack == []
    return "".join(parser.text)


# -- the fakes ------------------------------------------------------------------------------


class Platforms:
    """One loopback server answering every chat platform's success, keeping each body."""

    def __init__(self, server: HTTPServer) -> None:
        self.server = server
        self.bodies: list[dict[str, Any]] = []
        server.expect_request(re.compile(".*"), method="POST").respond_with_handler(self.answer)

    def answer(self, request: Request) -> Response:
        self.bodies.append(json.loads(request.get_data()))
        ok = {"ok": True, "code": 0, "errcode": 0, "errmsg": "ok", "result": {}}
        return Response(json.dumps(ok), content_type="application/json")

    def url(self, path: str) -> str:
        return self.server.url_for(path)


@pytest.fixture
def platforms(httpserver: HTTPServer) -> Platforms:
    return Platforms(httpserver)


def delivered(platforms: Platforms, target: Any, context: DeliveryContext) -> dict[str, Any]:
    platforms.bodies.clear()
    target.deliver(context)
    return platforms.bodies[0]


def shown_everywhere(
    platforms: Platforms, context: DeliveryContext, start: str = "a&#60;"
) -> dict[str, str]:
    """What a person reads in each chat target, per target kind and message type;
    markdown is checked for raw markup from ``start`` (the escaped text) on."""
    feishu_url = platforms.url("/open-apis/bot/v2/hook/tok")
    wecom_url = platforms.url("/cgi-bin/webhook/send?key=k")
    ding_url = platforms.url("/robot/send?access_token=t")
    shown: dict[str, str] = {}
    for msg_type in ("interactive", "post", "text"):
        feishu = build_target(FeishuBotTarget, "f", url=feishu_url, msg_type=msg_type)
        body = delivered(platforms, feishu, context)
        if msg_type == "interactive":
            content = body["card"]["elements"][0]["content"]
            shown["feishu_bot/interactive"] = read_markdown(content)
            assert not raw_markup(content, start), content
        elif msg_type == "post":
            paragraphs = body["content"]["post"]["zh_cn"]["content"]
            shown["feishu_bot/post"] = "\n".join(
                "".join(e.get("text", "@" + e.get("user_name", "")) for e in p) for p in paragraphs
            )
        else:
            shown["feishu_bot/text"] = body["content"]["text"]
    for msgtype in ("markdown", "text"):
        wecom = build_target(WeComBotTarget, "w", url=wecom_url, msgtype=msgtype)
        body = delivered(platforms, wecom, context)
        content = body[msgtype]["content"]
        if msgtype == "markdown":
            assert not raw_markup(content, start), content
            content = read_markdown(content)
        shown[f"wecom_bot/{msgtype}"] = content
    for msgtype in ("markdown", "text"):
        ding = build_target(DingTalkRobotTarget, "d", url=ding_url, msgtype=msgtype)
        body = delivered(platforms, ding, context)
        content = body["markdown"]["text"] if msgtype == "markdown" else body["text"]["content"]
        if msgtype == "markdown":
            assert not raw_markup(content, start), content
            content = read_markdown(content)
        shown[f"dingtalk_robot/{msgtype}"] = content
    app = build_target(
        DingTalkAppTarget,
        "a",
        app_key="k",
        app_secret="s",
        open_conversation_id="cid",
        api_base=platforms.url("").rstrip("/"),
    )
    param = json.loads(app.group_body(context)["msgParam"])
    assert not raw_markup(param["text"], start), param["text"]
    shown["dingtalk_app/markdown"] = read_markdown(param["text"])
    slack = build_target(SlackTarget, "s", webhook_url=platforms.url("/services/T/B/x"))
    shown["slack"] = read_slack(delivered(platforms, slack, context)["text"])
    telegram = build_target(
        TelegramTarget, "t", bot_token="123:abc", chat_id=1, api_base=platforms.url("")
    )
    shown["telegram"] = read_telegram(delivered(platforms, telegram, context)["text"])
    return shown


# -- the tests ------------------------------------------------------------------------------


def test_every_chat_target_shows_the_text_as_written(platforms: Platforms) -> None:
    for target, shown in shown_everywhere(platforms, event_context()).items():
        text = shown.replace(INVISIBLE, "")
        assert TEXT in text, f"{target} shows {text!r}"
        assert "re_port *v2*.pdf" in text, target
        assert "grace_h" in text, target


def test_names_and_titles_keep_their_characters(platforms: Platforms) -> None:
    shown = shown_everywhere(platforms, event_context("x"), start="")
    for target in ("slack", "telegram", "wecom_bot/markdown", "dingtalk_robot/markdown"):
        assert "Ops_room *1*" in shown[target], target


def test_text_from_a_slack_message_arrives_as_written() -> None:
    """Slack's own form of the text (its three escapes, a ``<@U…|name>`` mention, a
    ``<url|label>`` link) becomes plain text at the source, so the targets above get it."""
    entry = {"id": "sl", "kind": "slack", "signing_secret": "s3cret-signing"}
    source = SlackSource(parse_config({"sources": [entry]}).sources["sl"])
    sent = "a&lt;b &amp; c&gt;d *bold* <@U024BE7LH|ada> <http://x.example|label>"
    body = json.loads(source.sample().body)
    body["event"]["text"] = sent
    signed = source.sample(json.dumps(body).encode())
    request = inbound(signed.headers, signed.body)
    source.verify(request)
    event = source.parse(request).event
    assert event.text == "a<b & c>d *bold* @ada label (http://x.example)"
