"""The ``feishu_app`` target against a loopback Feishu: tenant tokens that expire, the
IM send and reply endpoints, Feishu's ``uuid`` dedupe and its body error codes."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
import redis
from pytest_httpserver import HTTPServer

from relay.errors import PermanentDeliveryError
from tests.pm.feishu_fake import APP_ID, APP_SECRET, FakeIm, FeishuAuth
from tests.workers.support import assert_hidden, assert_registered, build_target, delivery_context
from workers.targets.feishu_app import FeishuAppTarget, message_uuid


@pytest.fixture
def im(threaded_httpserver: HTTPServer) -> FakeIm:
    return FakeIm(threaded_httpserver, FeishuAuth(threaded_httpserver))


def target(im: FakeIm, **options: Any) -> FeishuAppTarget:
    values = {"app_id": APP_ID, "app_secret": APP_SECRET, "api_base": im.auth.base, **options}
    return build_target(FeishuAppTarget, "team-app", **values)


def test_registered_as_entry_point() -> None:
    assert_registered(FeishuAppTarget, "feishu_app", "notify")


def test_group_mode_sends_text_to_the_chat_once_per_delivery(
    im: FakeIm, redis_client: redis.Redis
) -> None:
    app = target(im, chat_id="oc_team")
    context = delivery_context("dlv_9", state=redis_client, text="deploy done")
    app.deliver(context)
    app.deliver(context)  # a retry after a lost answer: Feishu's uuid dedupes it
    [sent] = im.sent
    assert sent["args"] == {"receive_id_type": "chat_id"}
    assert (sent["receive_id"], sent["msg_type"]) == ("oc_team", "text")
    assert json.loads(sent["content"])["text"] == "Grace: deploy done"
    assert sent["uuid"] == message_uuid("dlv_9")
    assert im.auth.fetches == 1  # the token is cached in Redis


def test_reply_mode_answers_the_feishu_message_in_its_thread(
    im: FakeIm, redis_client: redis.Redis
) -> None:
    app = target(im, mode="reply")
    context = delivery_context(
        "dlv_1", state=redis_client, message_id="om_abc", source_kind="feishu",
        template="Created {{ task.key }}",
    )  # fmt: skip
    context = dataclasses.replace(context, vars={"task": {"key": "OPS-12"}})
    app.deliver(context)
    [sent] = im.sent
    assert sent["path"] == "/open-apis/im/v1/messages/om_abc/reply"
    assert sent["reply_in_thread"] is True
    assert json.loads(sent["content"])["text"] == "Created OPS-12"


def test_reply_mode_needs_a_feishu_message_and_errors_keep_feishus_words(
    im: FakeIm, redis_client: redis.Redis
) -> None:
    app = target(im, mode="reply")
    with pytest.raises(PermanentDeliveryError, match="no Feishu message"):
        app.deliver(delivery_context(state=redis_client, message_id="x", source_kind="slack"))
    gone = delivery_context(state=redis_client, message_id="om_gone", source_kind="feishu")
    with pytest.raises(PermanentDeliveryError, match="230011.*withdrawn") as failure:
        app.deliver(gone)
    assert_hidden(failure.value, APP_SECRET)


def test_an_expired_token_is_fetched_anew_and_group_mode_needs_a_chat(
    im: FakeIm, redis_client: redis.Redis
) -> None:
    app = target(im, chat_id="oc_team")
    app.deliver(delivery_context("dlv_a", state=redis_client))
    im.auth.expire_all()
    app.deliver(delivery_context("dlv_b", state=redis_client))
    assert im.auth.fetches == 2 and len(im.sent) == 2
    with pytest.raises(ValueError, match="chat_id is required"):
        target(im)
