"""``gitlab`` source: secret token and signing token, the hook → ``task.*`` mapping, dedupe.

Payloads are shaped as GitLab documents them (the links are on each example), trimmed of
fields the mapping never reads. Requests go through the real receiver and the suite's
Redis; stored events are read back as the workers will read them.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import time
from typing import Any

import pytest
import redis
import standardwebhooks
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import given
from hypothesis import strategies as st

from relay.errors import BadRequest, ConfigError, Unauthorized
from relay.intake.sources import gitlab_payloads
from relay.intake.sources.gitlab import GitLabSource
from relay.state import keys
from tests.intake.conftest import FUZZ_MAX_BODY
from tests.intake.sources.support import (
    FUZZ,
    LATIN1,
    any_json,
    assert_refused,
    build_source,
    fuzz_json,
    inbound,
    signed_sample,
    stored_event,
)
from workers.pm.gitlab_issues import GitLabClient, user_ids

TOKEN = "gl-secret-token-1"
OLD_TOKEN = "gl-secret-token-0"
# The signing-token shape GitLab accepts: whsec_ + base64 of 32 bytes; this one is the
# example in https://gitlab.com/gitlab-org/gitlab/-/merge_requests/231325
SIGNING = "whsec_dGVzdHRlc3R0ZXN0dGVzdHRlc3R0ZXN0dGVzdHRlc3Q="
OTHER_SIGNING = "whsec_" + base64.b64encode(b"another-signing-key-of-32-bytes!").decode()
MARKER = "group-relay:0123456789abcdef01234567"
SOURCES: list[dict[str, Any]] = [
    {"id": "gl", "kind": "gitlab", "secrets": [TOKEN, OLD_TOKEN], "relay_accounts": ["relay-bot"]},
    {"id": "signed", "kind": "gitlab", "secrets": [TOKEN], "signing_tokens": [SIGNING]},
    {"id": "strict", "kind": "gitlab", "signing_tokens": [SIGNING], "require_signature": True},
]

# https://docs.gitlab.com/user/project/integrations/webhook_events/#work-item-events
# (X-Gitlab-Event: Issue Hook); as published, ``assignees`` carry no ``id``.
ISSUE_HOOK: dict[str, Any] = {
    "object_kind": "issue",
    "event_type": "issue",
    "user": {"id": 1, "name": "Administrator", "username": "root", "email": "admin@example.com"},
    "project": {
        "id": 1,
        "name": "Gitlab Test",
        "web_url": "http://example.com/gitlabhq/gitlab-test",
        "path_with_namespace": "gitlabhq/gitlab-test",
    },
    "object_attributes": {
        "id": 301,
        "title": "New API: create/update/delete file",
        "assignee_ids": [51],
        "assignee_id": 51,
        "author_id": 51,
        "project_id": 14,
        "created_at": "2013-12-03T17:15:43Z",
        "updated_at": "2013-12-03T17:15:43Z",
        "updated_by_id": 1,
        "description": "Create new API for manipulations with repository",
        "confidential": False,
        "type": "Issue",
        "iid": 23,
        "url": "http://example.com/diaspora/issues/23",
        "state": "opened",
        "action": "open",
    },
    "assignees": [{"name": "User1", "username": "user1"}],
    "assignee": {"name": "User1", "username": "user1"},
    "labels": [{"id": 206, "title": "API"}],
    "changes": {
        "updated_by_id": {"previous": None, "current": 1},
        "updated_at": {
            "previous": "2017-09-15 16:50:55 UTC",
            "current": "2017-09-15 16:52:00 UTC",
        },
        "labels": {"previous": [{"id": 206, "title": "API"}], "current": [{"id": 205}]},
    },
}

# https://docs.gitlab.com/user/project/integrations/webhook_events/#comment-on-an-issue
# (X-Gitlab-Event: Note Hook)
NOTE_HOOK: dict[str, Any] = {
    "object_kind": "note",
    "event_type": "note",
    "user": {"id": 1, "name": "Administrator", "username": "root", "email": "admin@example.com"},
    "project_id": 5,
    "project": {
        "id": 5,
        "name": "Gitlab Test",
        "web_url": "http://example.com/gitlab-org/gitlab-test",
        "path_with_namespace": "gitlab-org/gitlab-test",
    },
    "object_attributes": {
        "id": 1241,
        "internal": False,
        "note": "Hello world",
        "noteable_type": "Issue",
        "author_id": 1,
        "created_at": "2015-05-17 17:06:40 UTC",
        "updated_at": "2015-05-17 17:06:40 UTC",
        "project_id": 5,
        "noteable_id": 92,
        "system": False,
        "action": "create",
        "url": "http://example.com/gitlab-org/gitlab-test/issues/17#note_1241",
    },
    "issue": {
        "id": 92,
        "title": "test",
        "assignee_ids": [],
        "assignee_id": None,
        "author_id": 1,
        "project_id": 5,
        "description": "test",
        "state": "closed",
        "iid": 17,
    },
}

# https://docs.gitlab.com/user/project/integrations/webhook_events/#push-events (trimmed)
PUSH_HOOK: dict[str, Any] = {
    "object_kind": "push",
    "event_name": "push",
    "before": "95790bf891e76fee5e1747ab589903a6a1f80f22",
    "after": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
    "ref": "refs/heads/master",
    "user_id": 4,
    "user_username": "jsmith",
    "project": {"id": 15, "path_with_namespace": "mike/diaspora"},
    "commits": [],
    "total_commits_count": 4,
}


def issue_hook(action: str = "open", changes: dict[str, Any] | None = None, **attrs: Any) -> Any:
    hook = copy.deepcopy(ISSUE_HOOK)
    hook["object_attributes"].update(action=action, **attrs)
    if changes is not None:
        hook["changes"] = changes
    return hook


def note_hook(note: str = "Hello world", **attrs: Any) -> dict[str, Any]:
    hook = copy.deepcopy(NOTE_HOOK)
    hook["object_attributes"].update(note=note, **attrs)
    return hook


def headers(
    token: str | None = TOKEN,
    event: str = "Issue Hook",
    key: str | None = "f5e5f430-f57b-4e6e-9fac-d9128cd7232f",
    **extra: str,
) -> dict[str, str]:
    """The delivery headers GitLab documents (webhooks.md#delivery-headers)."""
    result = {
        "Content-Type": "application/json",
        "User-Agent": "GitLab/18.0.0",
        "X-Gitlab-Event": event,
        "X-Gitlab-Instance": "https://gitlab.example.com",
        "X-Gitlab-Webhook-UUID": "02affd2d-2cba-4033-917d-ec22d5dc4b38",
        "X-Gitlab-Event-UUID": "13792a34-cac6-4fda-95a8-c58e00a3954e",
    }
    if key is not None:
        result["Idempotency-Key"] = key
    if token is not None:
        result["X-Gitlab-Token"] = token
    return {**result, **extra}


def signature_headers(body: bytes, signing: str = SIGNING, ts: int | None = None) -> dict[str, str]:
    """GitLab's signature, computed here from the scheme itself (not with relay.signing):
    base64 HMAC-SHA256 over ``{webhook-id}.{webhook-timestamp}.{body}``, keyed with the
    bytes the token's base64 encodes (gitlab-org/gitlab!230944)."""
    msg_id, stamp = "f5e5f430-f57b-4e6e-9fac-d9128cd7232f", str(ts or int(time.time()))
    key = base64.b64decode(signing.removeprefix("whsec_"))
    digest = hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": stamp,
        "webhook-signature": "v1," + base64.b64encode(digest).decode(),
    }


def post(client: FlaskClient, body: Any, hdrs: dict[str, str], source_id: str = "gl") -> Any:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(f"/hooks/{source_id}", data=data, headers=hdrs)


def stored(
    client: FlaskClient, redis_client: redis.Redis, body: Any, **hdrs: str
) -> dict[str, Any]:
    """Post a correctly authenticated hook; the event as intake stored it."""
    response = post(client, body, headers(**hdrs))
    assert response.status_code == 202, response.get_data(as_text=True)
    return stored_event(redis_client, response.get_json()["event_id"])


def source(**options: Any) -> GitLabSource:
    return build_source(GitLabSource, {"id": "g", "kind": "gitlab", **options})


# -- options ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "where"),
    [
        ({}, "set secrets"),
        ({"secrets": []}, "set secrets"),
        ({"secrets": [""]}, "secrets[0] is empty"),
        ({"secrets": ["a\nb"]}, "line break"),
        ({"secrets": [TOKEN], "require_signature": True}, "require_signature needs"),
        ({"signing_tokens": ["not-a-whsec-token"]}, "whsec_"),
        ({"signing_tokens": ["whsec_!!!"]}, "base64"),
        ({"secrets": [TOKEN], "tolerance": 0}, "tolerance"),
        ({"secrets": [TOKEN], "unknown": 1}, "unknown"),
    ],
)
def test_config_errors(options: dict[str, Any], where: str) -> None:
    with pytest.raises(ConfigError) as info:
        source(**options)
    assert where in str(info.value)
    assert "not-a-whsec-token" not in str(info.value)  # secrets are never echoed


def test_secrets_stay_out_of_repr() -> None:
    gl = source(secrets=[TOKEN], signing_tokens=[SIGNING])
    text = repr(gl.options) + repr(gl.config)
    assert TOKEN not in text and SIGNING not in text
    assert gl.default_dedupe_ttl >= 86400


# -- the secret token -----------------------------------------------------------------


@pytest.mark.parametrize("token", [TOKEN, OLD_TOKEN])
def test_token_accepted_any_configured(client: FlaskClient, token: str) -> None:
    response = post(client, ISSUE_HOOK, headers(token=token))
    assert response.status_code == 202, response.get_data(as_text=True)
    assert set(response.get_json()) == {"event_id"}


@pytest.mark.parametrize(
    ("token", "code"),
    [
        ("wrong-token", "invalid_token"),
        (TOKEN + "x", "invalid_token"),
        (TOKEN[:-1], "invalid_token"),
        (TOKEN.upper(), "invalid_token"),
        (None, "missing_token"),
        ("", "missing_token"),
    ],
)
def test_token_refused(
    client: FlaskClient, redis_client: redis.Redis, token: str | None, code: str
) -> None:
    response = post(client, ISSUE_HOOK, headers(token=token))
    assert_refused(response, 401, code, redis_client)
    assert TOKEN not in response.get_data(as_text=True)


def test_token_sent_twice_is_refused() -> None:
    gl = source(secrets=[TOKEN])
    request = inbound(headers(), b"{}")
    values = {k: list(v) for k, v in request.headers.items()}
    values["x-gitlab-token"] = ["wrong", TOKEN]
    with pytest.raises(BadRequest) as caught:
        gl.verify(type(request)("POST", values, b"{}"))
    assert caught.value.code == "duplicate_header"


def test_token_checked_before_the_body(client: FlaskClient, redis_client: redis.Redis) -> None:
    """Verification comes first: a forged request with a broken body is a 401, not a 400."""
    assert_refused(post(client, b"{not json", headers(token="x")), 401, None, redis_client)


# -- the signing token ----------------------------------------------------------------


def test_signature_computed_independently_is_accepted(client: FlaskClient) -> None:
    body = json.dumps(ISSUE_HOOK).encode()
    hdrs = {**headers(token=None), **signature_headers(body)}
    response = post(client, body, hdrs, "signed")
    assert response.status_code == 202, response.get_data(as_text=True)
    assert post(client, body, hdrs, "strict").status_code == 202  # dedupe is per source
    assert post(client, body, hdrs, "signed").status_code == 200  # the same Idempotency-Key


def test_signature_with_rotated_tokens() -> None:
    body = json.dumps(ISSUE_HOOK).encode()
    gl = source(signing_tokens=[OTHER_SIGNING, SIGNING])
    gl.verify(inbound(signature_headers(body), body))
    gl.verify(inbound(signature_headers(body, OTHER_SIGNING), body))


def test_bad_signature_never_falls_back_to_the_token(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    body = json.dumps(ISSUE_HOOK).encode()
    forged = {**headers(), **signature_headers(body, OTHER_SIGNING)}  # right token, wrong key
    assert_refused(post(client, body, forged, "signed"), 401, "invalid_signature", redis_client)
    tampered = {**headers(), **signature_headers(body)}
    assert_refused(
        post(client, body.replace(b"open", b"clos"), tampered, "signed"),
        401,
        "invalid_signature",
        redis_client,
    )


def test_token_alone_still_works_unless_signature_is_required(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    response = post(client, ISSUE_HOOK, headers(), "strict")
    assert_refused(response, 401, "missing_signature", redis_client)
    assert post(client, ISSUE_HOOK, headers(), "signed").status_code == 202


@pytest.mark.parametrize("skew", [301, -301])
def test_signature_outside_the_window(
    client: FlaskClient, redis_client: redis.Redis, skew: int
) -> None:
    body = json.dumps(ISSUE_HOOK).encode()
    hdrs = {**headers(token=None), **signature_headers(body, ts=int(time.time()) + skew)}
    assert_refused(post(client, body, hdrs, "strict"), 401, "stale_timestamp", redis_client)


@pytest.mark.parametrize("drop", ["webhook-id", "webhook-timestamp"])
def test_signature_without_its_headers(drop: str) -> None:
    body = json.dumps(ISSUE_HOOK).encode()
    hdrs = signature_headers(body)
    del hdrs[drop]
    with pytest.raises(Unauthorized) as caught:
        source(signing_tokens=[SIGNING]).verify(inbound(hdrs, body))
    assert caught.value.code == "missing_signature" and drop in caught.value.detail


def test_sample_verifies_with_the_reference_library() -> None:
    sample = source(secrets=[TOKEN], signing_tokens=[SIGNING]).sample()
    standardwebhooks.Webhook(SIGNING).verify(sample.body, sample.headers)
    assert sample.headers["X-Gitlab-Token"] == TOKEN
    assert sample.headers["webhook-id"] == sample.headers["Idempotency-Key"]


@pytest.mark.parametrize("source_id", [s["id"] for s in SOURCES])
def test_sample_is_accepted_as_a_new_task(
    app: Flask, client: FlaskClient, redis_client: redis.Redis, source_id: str
) -> None:
    sample = app.extensions["relay"].sources[source_id].sample()
    response = client.post(f"/hooks/{source_id}", data=sample.body, headers=sample.headers)
    assert response.status_code == 202, response.get_data(as_text=True)
    event = stored_event(redis_client, response.get_json()["event_id"])
    assert event["type"] == "task.created" and event["task"]["key"] == "#13"


# -- issue hooks ------------------------------------------------------------------------


def test_open_is_task_created_with_every_field(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    event = stored(client, redis_client, ISSUE_HOOK)
    assert event["type"] == "task.created"
    assert event["occurred_at"].startswith("2013-12-03T17:15:43")
    assert event["sender"] == {"id": "1", "name": "root"}
    assert event["raw"] == ISSUE_HOOK
    assert event["task"] == {
        "tool": "gitlab_issues",
        "key": "#23",
        "id": "23",
        "project": "gitlabhq/gitlab-test",
        "url": "http://example.com/diaspora/issues/23",
        "title": "New API: create/update/delete file",
        "status": "opened",
        # the published example's assignee has no id: it is paired with assignee_ids
        "assignees": [{"id": "51", "name": "user1"}],
        "actor": {"id": "1", "name": "root"},
        "comment": None,
        "changes": ["labels"],  # updated_at and updated_by_id are on every update
        "by_relay": False,
    }


def test_key_and_assignees_match_what_the_gitlab_issues_target_records() -> None:
    """The workers find the thread by the key the target's TaskRef holds, and assign by
    numeric user id: the source must spell both the same way."""
    client = GitLabClient(
        base_url="https://gitlab.com", token="t", project="acme/ops", timeout=1, allow_private=False
    )
    ref = client.ref({"iid": 23, "web_url": "http://example.com/diaspora/issues/23"})
    task = gitlab_payloads.event_from_hook("gl", ISSUE_HOOK, []).task
    assert task is not None
    assert (task.key, task.id, task.url) == (ref.key, ref.id, ref.url)
    assert user_ids([p.id for p in task.assignees]) == ([51], [])


@pytest.mark.parametrize(
    ("action", "changes", "expected_type", "expected_changes"),
    [
        ("close", {"state_id": {"previous": 1, "current": 2}}, "task.closed", ["state_id"]),
        ("reopen", {"state_id": {"previous": 2, "current": 1}}, "task.reopened", ["state_id"]),
        (
            "update",
            {"assignees": {"previous": [], "current": [{"id": 51}]}, "updated_at": {}},
            "task.assigned",
            ["assignees"],
        ),
        ("update", {"title": {"previous": "a", "current": "b"}}, "task.updated", ["title"]),
    ],
)
def test_issue_actions(
    client: FlaskClient,
    redis_client: redis.Redis,
    action: str,
    changes: dict[str, Any],
    expected_type: str,
    expected_changes: list[str],
) -> None:
    event = stored(client, redis_client, issue_hook(action, changes))
    assert event["type"] == expected_type
    assert event["task"]["changes"] == expected_changes
    assert event["task"]["key"] == "#23"


def test_assignees_with_ids_as_gitlab_sends_them(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    hook = issue_hook("update", {"assignees": {}}, assignee_ids=[7, 8])
    hook["assignees"] = [{"id": 7, "username": "ada"}, {"id": 8, "username": "grace"}]
    task = stored(client, redis_client, hook)["task"]
    assert task["assignees"] == [{"id": "7", "name": "ada"}, {"id": "8", "name": "grace"}]
    hook.pop("assignees")  # GitLab leaves the key out when nobody is assigned
    hook["object_attributes"]["assignee_ids"] = []
    assert stored(client, redis_client, hook, key="k2")["task"]["assignees"] == []


@pytest.mark.parametrize(
    "changes",
    [
        {"state_id": {"previous": 1, "current": 2}, "updated_at": {},
         "closed_at": {"previous": None, "current": "2026-12-06 10:00:00 UTC"}},
        {"updated_at": {}, "updated_by_id": {}},
    ],
    ids=["state-half-of-a-close", "bookkeeping-only"],
)  # fmt: skip
def test_an_update_that_changed_nothing_new_is_not_told(
    client: FlaskClient, redis_client: redis.Redis, changes: dict[str, Any]
) -> None:
    """Some GitLab versions follow ``close`` with an ``update`` hook of only the state
    fields (gitlab-foss#25339), and some updates list only bookkeeping: acknowledged,
    not a change of the issue to tell."""
    event = stored(client, redis_client, issue_hook("update", changes))
    assert event["type"] == "custom" and event["task"] is None


def test_confidential_issue_hook(client: FlaskClient, redis_client: redis.Redis) -> None:
    hook = issue_hook("close", confidential=True)
    hook["event_type"] = "confidential_issue"
    event = stored(client, redis_client, hook, event="Confidential Issue Hook")
    assert event["type"] == "task.closed" and event["task"]["key"] == "#23"


@pytest.mark.parametrize("action", [None, "delete", 5, ["open"]])
def test_issue_without_a_known_action_is_acknowledged(
    client: FlaskClient, redis_client: redis.Redis, action: Any
) -> None:
    hook = issue_hook()
    if action is None:
        del hook["object_attributes"]["action"]
    else:
        hook["object_attributes"]["action"] = action
    event = stored(client, redis_client, hook)
    assert event["type"] == "custom" and event["task"] is None and event["raw"] == hook


def test_relay_made_issue_is_an_echo_only_when_opened(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    """The target puts its marker in the description of issues it creates."""
    described = f"Fix it\n\n[Message in chat](https://x)\n\n<!-- {MARKER} -->"
    opened = stored(client, redis_client, issue_hook("open", description=described))
    assert opened["task"]["by_relay"] is True
    closed = stored(client, redis_client, issue_hook("close", description=described), key="k2")
    assert closed["task"]["by_relay"] is False  # a person closed the relay's issue


@pytest.mark.parametrize("account", ["relay-bot", "99"])
def test_relay_account_is_an_echo(
    make_app: Any, write_config: Any, redis_client: redis.Redis, account: str
) -> None:
    entry = {"id": "gl", "kind": "gitlab", "secrets": [TOKEN], "relay_accounts": [account]}
    relay_app = make_app(write_config({"sources": [entry]}))
    hook = issue_hook("close")
    hook["user"] = {"id": 99, "name": "Relay", "username": "relay-bot"}
    event = stored(relay_app.test_client(), redis_client, hook)
    assert event["task"]["by_relay"] is True and event["sender"]["id"] == "99"


# -- comment hooks ----------------------------------------------------------------------


def test_comment_on_issue_is_task_commented(client: FlaskClient, redis_client: redis.Redis) -> None:
    event = stored(client, redis_client, NOTE_HOOK, event="Note Hook")
    assert event["type"] == "task.commented"
    assert event["occurred_at"].startswith("2015-05-17T17:06:40")
    assert event["task"] == {
        "tool": "gitlab_issues",
        "key": "#17",
        "id": "17",
        "project": "gitlab-org/gitlab-test",
        "url": "http://example.com/gitlab-org/gitlab-test/issues/17",  # the note's, unanchored
        "title": "test",
        "status": "closed",
        "assignees": [],
        "actor": {"id": "1", "name": "root"},
        "comment": "Hello world",
        "changes": [],
        "by_relay": False,
    }


def test_comment_uses_the_issue_url_when_sent(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    hook = note_hook()
    hook["issue"].update(url="https://gitlab.com/acme/ops/-/issues/17", assignee_ids=[51])
    task = stored(client, redis_client, hook, event="Note Hook")["task"]
    assert task["url"] == "https://gitlab.com/acme/ops/-/issues/17"
    assert task["assignees"] == [{"id": "51", "name": None}]


def test_comment_with_the_marker_is_an_echo(client: FlaskClient, redis_client: redis.Redis) -> None:
    """The relay's own comments end with ``<!-- group-relay:... -->`` (gitlab_issues.py)."""
    hook = note_hook(f"Deployed, closing.\n\n<!-- {MARKER} -->")
    task = stored(client, redis_client, hook, event="Note Hook")["task"]
    assert task["by_relay"] is True and task["comment"] == "Deployed, closing."
    plain = stored(client, redis_client, note_hook("group-relay: not a marker"), key="k2")
    assert plain["task"]["by_relay"] is False


def test_confidential_comment(client: FlaskClient, redis_client: redis.Redis) -> None:
    hook = note_hook("internal only", internal=True)
    hook["event_type"] = "confidential_note"
    event = stored(client, redis_client, hook, event="Confidential Note Hook")
    assert event["type"] == "task.commented" and event["task"]["comment"] == "internal only"


@pytest.mark.parametrize(
    "change",
    [
        {"noteable_type": "MergeRequest"},
        {"noteable_type": "Commit"},
        {"noteable_type": "Snippet"},
        {"action": "update"},  # an edited comment is not a new one
        {"system": True},
    ],
)
def test_other_comments_are_acknowledged_not_tasks(
    client: FlaskClient, redis_client: redis.Redis, change: dict[str, Any]
) -> None:
    hook = note_hook(**change)
    event = stored(client, redis_client, hook, event="Note Hook")
    assert event["type"] == "custom" and event["task"] is None and event["raw"] == hook


def test_long_comment_is_cut_not_refused(client: FlaskClient, redis_client: redis.Redis) -> None:
    """GitLab disables a hook that answers 4xx, so a long comment must not be refused."""
    task = stored(client, redis_client, note_hook("x" * 70000), event="Note Hook")["task"]
    assert task["comment"] == "x" * 65536


# -- other hooks ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "event"),
    [
        (PUSH_HOOK, "Push Hook"),
        ({"object_kind": "merge_request", "object_attributes": {"iid": 1}}, "Merge Request Hook"),
        ({**ISSUE_HOOK, "object_kind": "work_item"}, "Issue Hook"),
        ([1, 2], "Push Hook"),
        ("text", "Push Hook"),
    ],
)
def test_other_hooks_are_acknowledged(
    client: FlaskClient, redis_client: redis.Redis, body: Any, event: str
) -> None:
    stored_one = stored(client, redis_client, body, event=event)
    assert stored_one["type"] == "custom" and stored_one["raw"] == body
    assert stored_one["text"].startswith(event)
    assert redis_client.llen(keys.FANOUT_QUEUE) == 1


def test_push_hook_names_its_pusher(client: FlaskClient, redis_client: redis.Redis) -> None:
    event = stored(client, redis_client, PUSH_HOOK, event="Push Hook")
    assert event["sender"] == {"id": "4", "name": "jsmith"} and event["text"] == "Push Hook"
    mr = {
        "object_kind": "merge_request",
        "user": {"id": 5},
        "object_attributes": {"action": "merge"},
    }
    event = stored(client, redis_client, mr, event="Merge Request Hook", key="k2")
    assert event["text"] == "Merge Request Hook merge" and event["sender"]["id"] == "5"


# -- body errors -------------------------------------------------------------------------


def test_bad_json_is_400(client: FlaskClient, redis_client: redis.Redis) -> None:
    assert_refused(post(client, b'{"object_kind": ', headers()), 400, "invalid_json", redis_client)


def test_other_media_type_is_415(client: FlaskClient, redis_client: redis.Redis) -> None:
    hdrs = headers(**{"Content-Type": "application/x-www-form-urlencoded"})
    assert_refused(post(client, b"a=b", hdrs), 415, None, redis_client)


@pytest.mark.parametrize("iid", [None, "23", 0, -1, True, 2**70])
def test_issue_hook_without_a_usable_iid_is_422(
    client: FlaskClient, redis_client: redis.Redis, iid: Any
) -> None:
    hook = issue_hook()
    hook["object_attributes"]["iid"] = iid
    response = post(client, hook, headers())
    assert_refused(response, 422, "invalid_event", redis_client)
    assert "object_attributes.iid" in response.get_json()["detail"]
    bare = note_hook()
    del bare["issue"]
    assert_refused(post(client, bare, headers(key="k2")), 422, "invalid_event", redis_client)


# -- dedupe -----------------------------------------------------------------------------


def test_resend_with_the_same_idempotency_key_is_a_duplicate(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    first = post(client, ISSUE_HOOK, headers())
    again = post(client, ISSUE_HOOK, headers(**{"X-Gitlab-Event-UUID": "new-on-resend"}))
    assert first.status_code == 202 and again.status_code == 200
    assert again.get_json() == {"event_id": first.get_json()["event_id"], "duplicate": True}
    assert redis_client.llen(keys.FANOUT_QUEUE) == 1


def test_idempotency_key_wins_over_the_event_uuid(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    """Hooks triggered by a receiver's API call share X-Gitlab-Event-UUID (GitLab's
    recursion detection); they are different deliveries, and Idempotency-Key tells them
    apart."""
    assert post(client, ISSUE_HOOK, headers(key="a")).status_code == 202
    assert post(client, NOTE_HOOK, headers(key="b", event="Note Hook")).status_code == 202
    assert redis_client.llen(keys.FANOUT_QUEUE) == 2


def test_event_uuid_is_the_key_before_gitlab_17_4(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    assert post(client, ISSUE_HOOK, headers(key=None)).status_code == 202
    assert post(client, ISSUE_HOOK, headers(key=None)).status_code == 200
    old = {k: v for k, v in headers(key=None).items() if k != "X-Gitlab-Event-UUID"}
    assert post(client, ISSUE_HOOK, old).status_code == 202  # no id at all: always new
    assert post(client, ISSUE_HOOK, old).status_code == 202
    assert redis_client.llen(keys.FANOUT_QUEUE) == 3


def test_overlong_delivery_id_is_refused(client: FlaskClient, redis_client: redis.Redis) -> None:
    response = post(client, ISSUE_HOOK, headers(key="k" * 257))
    assert_refused(response, 400, "invalid_delivery_id", redis_client)


# -- never a 5xx -------------------------------------------------------------------------

_header_values = st.one_of(st.text(LATIN1, max_size=80), st.sampled_from([TOKEN, "", "v1,abc"]))
_hook_like = st.fixed_dictionaries(
    {"object_kind": st.sampled_from(["issue", "note", "push", "work_item", 3, None])},
    optional={
        "object_attributes": st.one_of(
            any_json(),
            st.fixed_dictionaries(
                {},
                optional={
                    "iid": st.one_of(st.integers(), any_json()),
                    "action": st.sampled_from(["open", "close", "reopen", "update", "create"]),
                    "noteable_type": st.just("Issue"),
                    "title": any_json(),
                    "url": any_json(),
                    "note": any_json(),
                    "updated_at": st.one_of(st.text(max_size=30), any_json()),
                    "created_at": st.text(max_size=30),
                    "assignee_ids": any_json(),
                    "system": any_json(),
                },
            ),
        ),
        "user": any_json(),
        "project": any_json(),
        "assignees": st.one_of(
            any_json(),
            st.lists(st.dictionaries(st.text(max_size=10), any_json(), max_size=3), max_size=3),
        ),
        "changes": any_json(),
        "issue": st.one_of(any_json(), st.fixed_dictionaries({"iid": st.integers()})),
    },
)


@FUZZ
@given(body=st.binary(max_size=500), data=st.data())
def test_unauthenticated_anything_is_refused(
    fuzz_client: FlaskClient, body: bytes, data: st.DataObject
) -> None:
    hdrs = {"Content-Type": "application/json"}
    for name in ("X-Gitlab-Token", "webhook-id", "webhook-timestamp", "webhook-signature"):
        value = data.draw(st.none() | _header_values, label=name)
        if value is not None and value != TOKEN:
            hdrs[name] = value
    response = fuzz_client.post(
        f"/hooks/{data.draw(st.sampled_from(['gl', 'strict']))}", data=body, headers=hdrs
    )
    fuzz_json(response, "event_id")
    assert response.status_code == 401


@FUZZ
@given(value=st.one_of(any_json(), _hook_like), source_id=st.sampled_from(["gl", "strict"]))
def test_authentic_json_is_202_or_422(
    fuzz_app: Flask, fuzz_client: FlaskClient, value: Any, source_id: str
) -> None:
    body = json.dumps(value).encode()
    assert len(body) <= FUZZ_MAX_BODY  # so the parser, not the size cap, answers
    hdrs, body = signed_sample(fuzz_app, source_id, body)
    response = fuzz_client.post(f"/hooks/{source_id}", data=body, headers=hdrs)
    result = fuzz_json(response, "event_id")
    assert response.status_code in (202, 422), result
