"""``jira`` source: Atlassian's signature vector, each issue and comment event's mapping,
echoes of the relay's own changes, dedupe of Jira's retries, a bad-input matrix and a
property test that never sees a 5xx.

Signatures are computed here with ``hmac``/``hashlib`` directly, not with the module's
helpers, so a mistake in the module cannot cancel itself out. Payloads follow the shape
of Atlassian's documented example (https://developer.atlassian.com/cloud/jira/platform/webhooks/,
"Example callback for an issue-related event"): ``issue`` as ``GET /rest/api/2/issue``
returns it, ``user``, ``changelog.items`` and ``comment`` as the REST API's comment.
Everything past the vector goes through the real receiver and a real Redis.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import given
from hypothesis import strategies as st

from relay.config.loader import parse_config
from relay.errors import ConfigError, Unauthorized
from relay.intake.sources.jira import JiraSource
from relay.state import keys
from tests.intake.sources.support import (
    FUZZ,
    LATIN1,
    Mutation,
    any_json,
    assert_refused,
    assert_repeated_header_refused,
    build_source,
    drawn,
    flip,
    fuzz_json,
    inbound,
    post,
    signed_sample,
    stored_event,
    tamper,
)

# -- Atlassian's vector, from the "Secure admin webhooks" section of
# https://developer.atlassian.com/cloud/jira/platform/webhooks/ -------------------------------
V_SECRET = "It's a Secret to Everybody"
V_BODY = b"Hello World!"
V_SIG = "sha256=a4771c39fbe90f317c7824e83ddef3caae9cb3d976c214ace1f2937e133263c9"

SECRET = "jira-webhook-secret-2f9c1e7a"
OLD_SECRET = "jira-webhook-secret-old-77d0"
BOT_ID = "712020:8b3f6c1e-2d4a-4e5b-9c7d-0a1b2c3d4e5f"
SITE = "https://acme.atlassian.net"
TS = 1767225600000  # 2026-01-01T00:00:00Z, in ms as Jira sends it
MARKER = "group-relay:0123456789abcdef01234567"
SOURCES: list[dict[str, Any]] = [
    {
        "id": "jira",
        "kind": "jira",
        "secrets": [SECRET, OLD_SECRET],
        "relay_accounts": [BOT_ID, "relay-bot"],
    },
    {"id": "vector", "kind": "jira", "secrets": [V_SECRET]},
]


def user(account: str, name: str) -> dict[str, Any]:
    """A Cloud user as webhooks carry it (no email, no groups)."""
    return {
        "self": f"{SITE}/rest/api/2/user?accountId={account}",
        "accountId": account,
        "accountType": "atlassian",
        "avatarUrls": {"48x48": f"{SITE}/secure/useravatar?avatarId=10605"},
        "displayName": name,
        "active": True,
        "timeZone": "Europe/London",
    }


ADA = user("5b10a2844c20165700ede21g", "Ada Lovelace")
GRACE = user("6c21b3955d31276811fef32h", "Grace Hopper")
BOT = user(BOT_ID, "group-relay")
STATUSES = {
    "todo": ("10000", "To Do", "new"),
    "progress": ("3", "In Progress", "indeterminate"),
    "done": ("10001", "Done", "done"),
}


def issue(status: str = "todo", assignee: dict[str, Any] | None = ADA) -> dict[str, Any]:
    """OPS-12 as ``GET /rest/api/2/issue/OPS-12`` returns it, trimmed to what matters."""
    sid, name, category = STATUSES[status]
    return {
        "id": "10012",
        "self": f"{SITE}/rest/api/2/issue/10012",
        "key": "OPS-12",
        "fields": {
            "summary": "Fix the login timeout",
            "issuetype": {"id": "10001", "name": "Task", "subtask": False},
            "project": {"id": "10000", "key": "OPS", "name": "Operations"},
            "status": {
                "self": f"{SITE}/rest/api/2/status/{sid}",
                "id": sid,
                "name": name,
                "statusCategory": {"id": 3, "key": category, "name": name},
            },
            "resolution": {"id": "10000", "name": "Done"} if status == "done" else None,
            "assignee": assignee,
            "description": "Sessions end after 5 minutes instead of 30.",
            "labels": ["group-relay", "gr-0123456789abcdef01234567"],
        },
    }


def item(field: str, before: tuple[Any, Any], after: tuple[Any, Any]) -> dict[str, Any]:
    """One ``changelog.items`` entry: ``(from, fromString)`` → ``(to, toString)``."""
    return {
        "field": field,
        "fieldtype": "jira",
        "fieldId": field,
        "from": before[0],
        "fromString": before[1],
        "to": after[0],
        "toString": after[1],
    }


def comment(text: Any, author: dict[str, Any] = GRACE, cid: str = "10050") -> dict[str, Any]:
    return {
        "self": f"{SITE}/rest/api/2/issue/10012/comment/{cid}",
        "id": cid,
        "author": author,
        "body": text,
        "updateAuthor": author,
        "created": "2026-01-01T00:00:00.000+0000",
        "updated": "2026-01-01T00:00:00.000+0000",
        "jsdPublic": True,
    }


def hook(event: str, **parts: Any) -> bytes:
    """A webhook body: ``timestamp``, ``webhookEvent`` and the parts given, ``None`` left out."""
    body = {"timestamp": TS, "webhookEvent": event}
    body.update({k: v for k, v in parts.items() if v is not None})
    return json.dumps(body).encode()


def updated(
    changes: list[dict[str, Any]], now: dict[str, Any], by: dict[str, Any] = ADA, **more: Any
) -> bytes:
    return hook(
        "jira:issue_updated",
        issue_event_type_name="issue_generic",
        user=by,
        issue=now,
        changelog={"id": "10124", "items": changes},
        **more,
    )


def sign(
    body: bytes, *, secret: str = SECRET, identifier: str | None = "ab12cd34-0001"
) -> dict[str, str]:
    """The headers Jira sends with ``body``."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    headers = {
        "Content-Type": "application/json; charset=UTF-8",
        "X-Hub-Signature": f"sha256={digest}",
    }
    if identifier is not None:
        headers["X-Atlassian-Webhook-Identifier"] = identifier
        headers["X-Atlassian-Webhook-Flow"] = "Primary"
    return headers


def accept(
    client: FlaskClient, redis_client: redis.Redis, body: bytes, identifier: str = "ab12cd34-0001"
) -> dict[str, Any]:
    """``body`` posted signed: 202, and the event intake stored."""
    response = post(client, "jira", body, sign(body, identifier=identifier))
    assert response.status_code == 202, response.get_data(as_text=True)
    return stored_event(redis_client, response.get_json()["event_id"])


def source(**options: Any) -> JiraSource:
    return build_source(JiraSource, {"id": "j", "kind": "jira", "secrets": [SECRET], **options})


# -- the vector and the signature -----------------------------------------------------------


def test_vector_is_hmac_sha256_of_the_raw_body() -> None:
    digest = hmac.new(V_SECRET.encode(), V_BODY, hashlib.sha256).hexdigest()
    assert V_SIG == f"sha256={digest}"


def test_vector_verifies() -> None:
    vector = build_source(JiraSource, {"id": "v", "kind": "jira", "secrets": [V_SECRET]})
    vector.verify(inbound({"X-Hub-Signature": V_SIG}, V_BODY))
    with pytest.raises(Unauthorized) as caught:
        vector.verify(inbound({"X-Hub-Signature": V_SIG}, flip(V_BODY, 0)))
    assert caught.value.code == "invalid_signature"


def test_vector_through_receiver(client: FlaskClient, redis_client: redis.Redis) -> None:
    """Verified first, then refused as JSON: the signature is checked on the raw bytes."""
    headers = {"Content-Type": "application/json", "X-Hub-Signature": V_SIG}
    assert_refused(post(client, "vector", V_BODY, headers), 400, "invalid_json", redis_client)
    headers["X-Hub-Signature"] = V_SIG[:-1] + "0"
    assert_refused(post(client, "vector", V_BODY, headers), 401, "invalid_signature", redis_client)


@pytest.mark.parametrize("secret", [SECRET, OLD_SECRET])
def test_each_secret_verifies(client: FlaskClient, redis_client: redis.Redis, secret: str) -> None:
    body = hook("jira:issue_created", user=ADA, issue=issue())
    response = post(client, "jira", body, sign(body, secret=secret))
    assert response.status_code == 202, response.get_data(as_text=True)


def test_websub_method_named_in_the_header() -> None:
    """Atlassian may change the HMAC method; the header names it (``method=signature``)."""
    body = hook("jira:issue_created", user=ADA, issue=issue())
    digest = hmac.new(SECRET.encode(), body, hashlib.sha512).hexdigest()
    source().verify(inbound({"X-Hub-Signature": f"sha512={digest}"}, body))


def _last_hex(value: str) -> str:
    return value[:-1] + ("0" if value[-1] != "0" else "1")


SIG = "x_hub_signature"
MATRIX: dict[str, tuple[Mutation, int, str]] = {
    "missing signature": (tamper(**{SIG: None}), 401, "missing_signature"),
    "empty signature": (tamper(**{SIG: ""}), 401, "missing_signature"),
    "body bit flip": (tamper(body=lambda b: flip(b, 3)), 401, "invalid_signature"),
    "body appended": (tamper(body=lambda b: b + b" "), 401, "invalid_signature"),
    "signature bit flip": (tamper(**{SIG: _last_hex}), 401, "invalid_signature"),
    "wrong secret": (
        tamper(**{SIG: lambda s: sign(b"", secret="wrong")["X-Hub-Signature"]}),
        401,
        "invalid_signature",
    ),
    "sha1 method": (tamper(**{SIG: lambda s: "sha1=" + s[7:47]}), 401, "malformed_signature"),
    "upper-case method": (tamper(**{SIG: lambda s: "SHA256" + s[6:]}), 401, "malformed_signature"),
    "no method": (tamper(**{SIG: lambda s: s[7:]}), 401, "malformed_signature"),
    "not hex": (tamper(**{SIG: "sha256=" + "zz" * 32}), 401, "malformed_signature"),
    "short digest": (tamper(**{SIG: lambda s: s[:-2]}), 401, "malformed_signature"),
    "long digest": (tamper(**{SIG: lambda s: s + "00"}), 401, "malformed_signature"),
    "unicode": (tamper(**{SIG: "sha256=✓☃"}), 401, "malformed_signature"),
    "sent twice": (tamper(**{SIG: lambda v: [v, v]}), 401, "malformed_signature"),
}


@pytest.mark.parametrize("name", list(MATRIX))
def test_bad_signature_matrix(client: FlaskClient, redis_client: redis.Redis, name: str) -> None:
    mutate, status, code = MATRIX[name]
    body = hook("jira:issue_created", user=ADA, issue=issue())
    headers, body = mutate(sign(body), body)
    response = post(client, "jira", body, headers)
    assert_refused(response, status, code, redis_client)
    assert SECRET not in response.get_data(as_text=True)
    assert not redis_client.keys(keys.dedupe("jira", "*"))


def test_github_header_spelling_is_not_read(client: FlaskClient, redis_client: redis.Redis) -> None:
    """Jira signs in ``X-Hub-Signature``, not GitHub's ``X-Hub-Signature-256``."""
    body = hook("jira:issue_created", user=ADA, issue=issue())
    headers = sign(body)
    headers["X-Hub-Signature-256"] = headers.pop("X-Hub-Signature")
    assert_refused(post(client, "jira", body, headers), 401, "missing_signature", redis_client)


def test_repeated_signature_header_seen_by_source_is_400() -> None:
    body = hook("jira:issue_created", user=ADA, issue=issue())
    assert_repeated_header_refused(source(), sign(body), "X-Hub-Signature", body)


# -- what each event becomes ------------------------------------------------------------------


def test_issue_created(client: FlaskClient, redis_client: redis.Redis) -> None:
    body = hook(
        "jira:issue_created", issue_event_type_name="issue_created", user=ADA, issue=issue()
    )
    event = accept(client, redis_client, body)
    assert event["type"] == "task.created"
    assert event["task"] == {
        "tool": "jira",
        "key": "OPS-12",  # as workers/pm/jira.py records it (TaskRef(key=issue["key"]))
        "id": "10012",
        "project": "OPS",
        "url": f"{SITE}/browse/OPS-12",  # as its browse() builds it
        "title": "Fix the login timeout",
        "status": "To Do",
        "assignees": [{"id": ADA["accountId"], "name": "Ada Lovelace"}],
        "actor": {"id": ADA["accountId"], "name": "Ada Lovelace"},
        "comment": None,
        "changes": [],
        "by_relay": False,
    }
    assert event["sender"] == {"id": ADA["accountId"], "name": "Ada Lovelace"}
    assert event["text"] == "OPS-12 created: Fix the login timeout"
    assert event["occurred_at"].startswith("2026-01-01T00:00:00")
    assert event["raw"]["issue"]["fields"]["labels"][0] == "group-relay"


def test_documented_update_example(client: FlaskClient, redis_client: redis.Redis) -> None:
    """Atlassian's issue-update example verbatim (its user says ``accoundId``, a typo in the
    docs, so the actor is unknown: the change is still reported)."""
    documented = {
        "issue": {
            "id": "99291",
            "self": "https://your-domain.atlassian.net/rest/api/2/issue/99291",
            "key": "JRA-20002",
            "fields": {
                "summary": "I feel the need for speed",
                "created": "2009-12-16T23:46:10.612-0600",
                "description": "Make the issue nav load 10x faster",
                "labels": ["UI", "dialogue", "move"],
                "priority": {"name": "Minor", "id": "3"},
            },
        },
        "user": {
            "self": "https://your-domain.atlassian.net/rest/api/2/user?accountId=99:27935d01-92a7-4687-8272-a9b8d3b2ae2e",
            "accoundId": "99:27935d01-92a7-4687-8272-a9b8d3b2ae2e",
            "accountType": "atlassian",
            "displayName": "Bryan Rollins [Atlassian]",
            "active": "true",
            "timeZone": "Europe/Warsaw",
        },
        "changelog": {
            "items": [
                {
                    "toString": "A new summary.",
                    "to": None,
                    "fromString": "What is going on here?????",
                    "from": None,
                    "fieldtype": "jira",
                    "field": "summary",
                },
                {
                    "toString": "New Feature",
                    "to": "2",
                    "fromString": "Improvement",
                    "from": "4",
                    "fieldtype": "jira",
                    "field": "issuetype",
                },
            ],
            "id": 10124,
        },
        "timestamp": 1606480436302,
        "webhookEvent": "jira:issue_updated",
        "issue_event_type_name": "issue_generic",
    }
    event = accept(client, redis_client, json.dumps(documented).encode())
    assert event["type"] == "task.updated"
    task = event["task"]
    assert (task["key"], task["id"], task["project"]) == ("JRA-20002", "99291", "JRA")
    assert task["url"] == "https://your-domain.atlassian.net/browse/JRA-20002"
    assert task["title"] == "I feel the need for speed"
    assert task["changes"] == ["summary", "issuetype"]
    assert task["actor"] is None and task["status"] is None
    assert event["occurred_at"].startswith("2020-11-27T12:33:56.302")


TRANSITIONS: dict[str, tuple[list[dict[str, Any]], str, str, list[str]]] = {
    "into done": (
        [
            item("resolution", (None, None), ("10000", "Done")),
            item("status", ("3", "In Progress"), ("10001", "Done")),
        ],
        "done",
        "task.closed",
        ["resolution", "status"],
    ),
    "out of done": (
        [
            item("resolution", ("10000", "Done"), (None, None)),
            item("status", ("10001", "Done"), ("10000", "To Do")),
        ],
        "todo",
        "task.reopened",
        ["resolution", "status"],
    ),
    "into done, field name translated": (
        [{**item("status", ("3", "En curso"), ("10001", "Listo")), "field": "Estado"}],
        "done",
        "task.closed",
        ["Estado"],
    ),
    "between open statuses": (
        [item("status", ("10000", "To Do"), ("3", "In Progress"))],
        "progress",
        "task.updated",
        ["status"],
    ),
    "field edits": (
        [
            item("summary", (None, "Login timeout"), (None, "Fix the login timeout")),
            {**item("Story Points", (None, None), (None, "3")), "fieldId": "customfield_10016"},
        ],
        "todo",
        "task.updated",
        ["summary", "Story Points"],
    ),
}


@pytest.mark.parametrize("name", list(TRANSITIONS))
def test_issue_updated(client: FlaskClient, redis_client: redis.Redis, name: str) -> None:
    changes, now, kind, names = TRANSITIONS[name]
    event = accept(client, redis_client, updated(changes, issue(now)))
    assert event["type"] == kind
    assert event["task"]["changes"] == names
    assert event["task"]["status"] == STATUSES[now][1]
    assert event["task"]["by_relay"] is False


def test_assigned(client: FlaskClient, redis_client: redis.Redis) -> None:
    change = item(
        "assignee", (ADA["accountId"], "Ada Lovelace"), (GRACE["accountId"], "Grace Hopper")
    )
    event = accept(client, redis_client, updated([change], issue(assignee=GRACE)))
    assert event["type"] == "task.assigned"
    assert event["task"]["assignees"] == [{"id": GRACE["accountId"], "name": "Grace Hopper"}]
    assert event["task"]["actor"]["id"] == ADA["accountId"]
    assert event["task"]["changes"] == ["assignee"]


def test_unassigned(client: FlaskClient, redis_client: redis.Redis) -> None:
    change = item("assignee", (ADA["accountId"], "Ada Lovelace"), (None, None))
    event = accept(client, redis_client, updated([change], issue(assignee=None)))
    assert event["type"] == "task.assigned"
    assert event["task"]["assignees"] == []


def test_close_wins_over_assignment(client: FlaskClient, redis_client: redis.Redis) -> None:
    changes = [
        item("assignee", (None, None), (ADA["accountId"], "Ada Lovelace")),
        item("status", ("3", "In Progress"), ("10001", "Done")),
    ]
    event = accept(client, redis_client, updated(changes, issue("done")))
    assert event["type"] == "task.closed"
    assert event["task"]["changes"] == ["assignee", "status"]


def test_comment_created(client: FlaskClient, redis_client: redis.Redis) -> None:
    body = hook("comment_created", comment=comment("The fix is in #45"), issue=issue())
    event = accept(client, redis_client, body)
    assert event["type"] == "task.commented"
    task = event["task"]
    assert task["comment"] == "The fix is in #45"
    assert task["actor"] == {"id": GRACE["accountId"], "name": "Grace Hopper"}
    assert (task["key"], task["url"]) == ("OPS-12", f"{SITE}/browse/OPS-12")
    assert event["sender"] == task["actor"]


def test_issue_commented_update(client: FlaskClient, redis_client: redis.Redis) -> None:
    """How Data Center (and Cloud, for an ``Issue updated`` webhook) reports a comment."""
    body = hook(
        "jira:issue_updated",
        issue_event_type_name="issue_commented",
        user=GRACE,
        issue=issue(),
        comment=comment("Deployed to staging"),
    )
    event = accept(client, redis_client, body)
    assert event["type"] == "task.commented"
    assert event["task"]["comment"] == "Deployed to staging"
    assert event["task"]["changes"] == []


def test_adf_comment_is_flattened(client: FlaskClient, redis_client: redis.Redis) -> None:
    adf = {
        "type": "doc",
        "version": 1,
        "content": [
            {
                "type": "paragraph",
                "content": [
                    {"type": "text", "text": "Fixed by "},
                    {"type": "mention", "attrs": {"id": ADA["accountId"], "text": "@Ada Lovelace"}},
                    {"type": "hardBreak"},
                    {"type": "text", "text": "see ", "marks": [{"type": "strong"}]},
                    {"type": "inlineCard", "attrs": {"url": "https://git.example/pr/45"}},
                ],
            },
            {"type": "paragraph", "content": [{"type": "text", "text": "Thanks!"}]},
        ],
    }
    event = accept(
        client, redis_client, hook("comment_created", comment=comment(adf), issue=issue())
    )
    assert (
        event["task"]["comment"] == "Fixed by @Ada Lovelace\nsee https://git.example/pr/45\nThanks!"
    )


def test_data_center_payload(client: FlaskClient, redis_client: redis.Redis) -> None:
    """Data Center names people by user name and may serve Jira under a context path."""
    dc = "https://jira.example.com/jira"
    ada = {
        "self": f"{dc}/rest/api/2/user?username=ada",
        "name": "ada",
        "key": "JIRAUSER10100",
        "displayName": "Ada Lovelace",
        "active": True,
    }
    now = issue()
    now["self"] = f"{dc}/rest/api/2/issue/10012"
    now["fields"]["assignee"] = ada
    event = accept(client, redis_client, hook("jira:issue_created", user=ada, issue=now))
    task = event["task"]
    assert task["url"] == f"{dc}/browse/OPS-12"
    assert task["actor"] == {"id": "ada", "name": "Ada Lovelace"}
    assert task["assignees"] == [{"id": "ada", "name": "Ada Lovelace"}]


# -- events that are not task changes: acknowledged, kept, never an error ---------------------

UNMAPPED: dict[str, bytes] = {
    "sprint started": hook(
        "sprint_started",
        sprint={"id": 37, "state": "active", "name": "OPS Sprint 12", "originBoardId": 5},
    ),
    "project created": hook("project_created", project={"id": 10001, "key": "NEW", "name": "New"}),
    "worklog created": hook("worklog_created", worklog={"id": "100", "issueId": "10012"}),
    "issue deleted": hook("jira:issue_deleted", user=ADA, issue=issue()),
    "comment updated": hook("comment_updated", comment=comment("edited"), issue=issue()),
    "rank only": updated([item("Rank", (None, ""), (None, "Ranked higher"))], issue()),
    "comment edited update": hook(
        "jira:issue_updated",
        issue_event_type_name="issue_comment_edited",
        user=ADA,
        issue=issue(),
        comment=comment("edited"),
    ),
    "comment without issue": hook("comment_created", comment=comment("orphan")),
    "no webhookEvent": b'{"issue": {"key": "OPS-12"}}',
    "webhookEvent not text": b'{"webhookEvent": 7}',
    "json array": b"[1, 2]",
}


@pytest.mark.parametrize("name", list(UNMAPPED))
def test_unmapped_events_are_custom(
    client: FlaskClient, redis_client: redis.Redis, name: str
) -> None:
    body = UNMAPPED[name]
    event = accept(client, redis_client, body)
    assert event["type"] == "custom"
    assert event["task"] is None
    sent = json.loads(body)
    webhook_event = sent.get("webhookEvent") if isinstance(sent, dict) else None
    assert event["text"] == (webhook_event if isinstance(webhook_event, str) else None)
    assert event["raw"] == sent
    assert redis_client.llen(keys.FANOUT_QUEUE) == 1


# -- the relay's own changes --------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "Closed from the chat\n\n{color:#97a0af}~" + MARKER + "~{color}",  # v2 wiki text
        "Closed from the chat\n\n" + MARKER,
    ],
)
def test_marker_in_comment(client: FlaskClient, redis_client: redis.Redis, text: str) -> None:
    body = hook("comment_created", comment=comment(text, author=ADA), issue=issue())
    event = accept(client, redis_client, body)
    assert event["task"]["by_relay"] is True
    assert event["task"]["comment"] == "Closed from the chat"


def test_marker_in_adf_comment(client: FlaskClient, redis_client: redis.Redis) -> None:
    adf = {
        "type": "doc",
        "version": 1,
        "content": [
            {"type": "paragraph", "content": [{"type": "text", "text": "Assigned from chat"}]},
            {"type": "paragraph", "content": [{"type": "text", "text": MARKER}]},
        ],
    }
    event = accept(
        client, redis_client, hook("comment_created", comment=comment(adf), issue=issue())
    )
    assert event["task"]["by_relay"] is True
    assert event["task"]["comment"] == "Assigned from chat"


def test_relay_account_change(client: FlaskClient, redis_client: redis.Redis) -> None:
    changes = [item("status", ("3", "In Progress"), ("10001", "Done"))]
    event = accept(client, redis_client, updated(changes, issue("done"), by=BOT))
    assert event["type"] == "task.closed"
    assert event["task"]["by_relay"] is True


def test_relay_account_by_data_center_user_name(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    bot = {"name": "relay-bot", "key": "JIRAUSER10200", "displayName": "Relay"}
    body = hook("comment_created", comment=comment("Noted", author=bot), issue=issue())
    assert accept(client, redis_client, body)["task"]["by_relay"] is True


def test_issue_the_relay_created(client: FlaskClient, redis_client: redis.Redis) -> None:
    """Its description ends with the marker, whoever Jira names as the creator."""
    now = issue()
    now["fields"]["description"] = "From the chat\n\n{color:#97a0af}~" + MARKER + "~{color}"
    event = accept(client, redis_client, hook("jira:issue_created", user=ADA, issue=now))
    assert event["task"]["by_relay"] is True


# -- dedupe -------------------------------------------------------------------------------------


def test_resend_is_a_duplicate(client: FlaskClient, redis_client: redis.Redis) -> None:
    body = updated([item("status", ("3", "In Progress"), ("10001", "Done"))], issue("done"))
    first = post(client, "jira", body, sign(body, identifier="7d1c-retry"))
    assert first.status_code == 202
    original = first.get_json()["event_id"]
    again = post(
        client,
        "jira",
        body,
        {**sign(body, identifier="7d1c-retry"), "X-Atlassian-Webhook-Retry": "1"},
    )
    assert again.status_code == 200
    assert again.get_json() == {"event_id": original, "duplicate": True}
    assert redis_client.llen(keys.FANOUT_QUEUE) == 1
    ttl = redis_client.ttl(keys.dedupe("jira", "7d1c-retry"))
    assert 3 * 86400 - 60 < ttl <= 3 * 86400


def test_other_identifiers_are_other_events(client: FlaskClient, redis_client: redis.Redis) -> None:
    body = hook("jira:issue_created", user=ADA, issue=issue())
    for identifier in ("id-1", "id-2"):
        assert post(client, "jira", body, sign(body, identifier=identifier)).status_code == 202
    assert redis_client.llen(keys.FANOUT_QUEUE) == 2


def test_one_comment_reported_twice_is_one_event(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    """With both ``Comment created`` and ``Issue updated`` ticked, Jira sends the comment
    twice, under two identifiers: the second is a duplicate of the first."""
    created = hook("comment_created", comment=comment("On it"), issue=issue())
    also = hook(
        "jira:issue_updated",
        issue_event_type_name="issue_commented",
        user=GRACE,
        issue=issue(),
        comment=comment("On it"),
    )
    first = post(client, "jira", created, sign(created, identifier="c-1"))
    second = post(client, "jira", also, sign(also, identifier="c-2"))
    assert first.status_code == 202
    assert second.get_json() == {"event_id": first.get_json()["event_id"], "duplicate": True}
    other = hook("comment_created", comment=comment("Done", cid="10051"), issue=issue())
    assert post(client, "jira", other, sign(other, identifier="c-3")).status_code == 202
    assert redis_client.llen(keys.FANOUT_QUEUE) == 2


def test_without_identifier_a_resend_is_still_a_duplicate(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    body = hook("jira:issue_created", user=ADA, issue=issue())
    assert post(client, "jira", body, sign(body, identifier=None)).status_code == 202
    again = post(client, "jira", body, sign(body, identifier=None))
    assert again.status_code == 200 and again.get_json()["duplicate"] is True
    assert redis_client.exists(keys.dedupe("jira", "sha256:" + hashlib.sha256(body).hexdigest()))


def test_overlong_identifier(client: FlaskClient, redis_client: redis.Redis) -> None:
    body = hook("jira:issue_created", user=ADA, issue=issue())
    response = post(client, "jira", body, sign(body, identifier="x" * 257))
    assert_refused(response, 400, "invalid_delivery_id", redis_client)


# -- bodies that are not Jira webhooks ----------------------------------------------------------

SIGNED_BAD: dict[str, tuple[bytes, str, int, str]] = {
    "malformed json": (
        b'{"webhookEvent": "jira:issue_created",',
        "application/json",
        400,
        "invalid_json",
    ),
    "json not utf-8": (b'{"webhookEvent": "\xff"}', "application/json", 400, "invalid_json"),
    "json duplicate key": (
        b'{"webhookEvent": "a", "webhookEvent": "b"}',
        "application/json",
        400,
        "invalid_json",
    ),
    "text/plain": (hook("jira:issue_created"), "text/plain", 415, "unsupported_media_type"),
}


@pytest.mark.parametrize("name", list(SIGNED_BAD))
def test_signed_but_malformed(client: FlaskClient, redis_client: redis.Redis, name: str) -> None:
    body, content_type, status, code = SIGNED_BAD[name]
    headers = {**sign(body), "Content-Type": content_type}
    assert_refused(post(client, "jira", body, headers), status, code, redis_client)


def test_odd_but_valid_values_are_kept_in_bounds(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    """A summary over the event's limit is cut, not refused; ids sent as numbers are text."""
    now = copy.deepcopy(issue())
    now["id"] = 10012
    now["fields"]["summary"] = "x" * 5000
    now["self"] = "not a url"
    event = accept(client, redis_client, hook("jira:issue_created", user=ADA, issue=now))
    assert event["task"]["id"] == "10012"
    assert len(event["task"]["title"]) == 4096
    assert event["task"]["url"] is None


# -- config and samples ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"secrets": []}, "secrets"),
        ({"secrets": [""]}, "secrets[0] is empty"),
        ({"secrets": ["s"], "header": "X"}, "header"),
    ],
)
def test_config_errors(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"sources": [{"id": "j", "kind": "jira", **options}]})
    assert message in str(caught.value)


def test_secrets_are_not_in_repr() -> None:
    assert SECRET not in repr(source().options)


def test_sample_is_accepted(app: Flask, client: FlaskClient, redis_client: redis.Redis) -> None:
    sample = app.extensions["relay"].sources["jira"].sample()
    digest = hmac.new(SECRET.encode(), sample.body, hashlib.sha256).hexdigest()
    assert sample.headers["X-Hub-Signature"] == f"sha256={digest}"
    response = post(client, "jira", sample.body, sample.headers)
    assert response.status_code == 202
    event = stored_event(redis_client, response.get_json()["event_id"])
    assert event["type"] == "task.created" and event["task"]["key"] == "OPS-12"
    again = app.extensions["relay"].sources["jira"].sample()
    assert post(client, "jira", again.body, again.headers).status_code == 202
    assert redis_client.llen(keys.FANOUT_QUEUE) == 2  # a fresh identifier each time


def test_sample_signs_a_given_body(
    app: Flask, client: FlaskClient, redis_client: redis.Redis
) -> None:
    body = hook("comment_created", comment=comment("hi"), issue=issue())
    sample = app.extensions["relay"].sources["jira"].sample(body)
    assert sample.body == body
    assert (
        stored_event(
            redis_client, post(client, "jira", body, sample.headers).get_json()["event_id"]
        )["type"]
        == "task.commented"
    )


# -- property: never a 5xx -------------------------------------------------------------------------

json_values = any_json(text=30)
ids = st.one_of(st.from_regex(r"\A[A-Z]{2,4}-[0-9]{1,4}\Z"), st.integers(), json_values)
people = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {}, optional={"accountId": ids, "name": ids, "key": ids, "displayName": json_values}
    ),
)
adf = st.recursive(
    st.fixed_dictionaries(
        {"type": st.sampled_from(["text", "mention", "hardBreak", "inlineCard", "emoji"])},
        optional={"text": json_values, "attrs": json_values},
    ),
    lambda children: st.fixed_dictionaries(
        {"type": st.sampled_from(["doc", "paragraph", "listItem", "bulletList", "x"])},
        optional={"content": st.one_of(st.lists(children, max_size=3), json_values)},
    ),
    max_leaves=10,
)
changes = st.fixed_dictionaries(
    {},
    optional={
        "field": st.one_of(
            st.sampled_from(["status", "assignee", "resolution", "summary", "Rank"]), json_values
        ),
        "fieldId": json_values,
        "from": json_values,
        "fromString": json_values,
        "to": json_values,
        "toString": json_values,
    },
)
jira_body = st.fixed_dictionaries(
    {
        "webhookEvent": st.sampled_from(
            ["jira:issue_created", "jira:issue_updated", "comment_created", "sprint_started"]
        )
    },
    optional={
        "timestamp": st.one_of(
            st.integers(), st.floats(allow_nan=False, allow_infinity=False), json_values
        ),
        "issue_event_type_name": st.one_of(st.just("issue_commented"), json_values),
        "user": people,
        "issue": st.one_of(
            json_values,
            st.fixed_dictionaries(
                {},
                optional={
                    "id": ids,
                    "key": ids,
                    "self": st.one_of(st.just(f"{SITE}/rest/api/2/issue/1"), st.text(max_size=40)),
                    "fields": st.fixed_dictionaries(
                        {},
                        optional={
                            "summary": json_values,
                            "assignee": people,
                            "description": st.one_of(json_values, adf),
                            "project": json_values,
                            "status": st.one_of(
                                json_values,
                                st.fixed_dictionaries(
                                    {"name": json_values},
                                    optional={
                                        "statusCategory": st.fixed_dictionaries(
                                            {"key": json_values}
                                        )
                                    },
                                ),
                            ),
                        },
                    ),
                },
            ),
        ),
        "changelog": st.fixed_dictionaries(
            {}, optional={"items": st.one_of(st.lists(changes, max_size=3), json_values)}
        ),
        "comment": st.one_of(
            json_values,
            st.fixed_dictionaries(
                {}, optional={"id": ids, "author": people, "body": st.one_of(json_values, adf)}
            ),
        ),
    },
)


@FUZZ
@given(body=st.binary(max_size=1000), data=st.data())
def test_unsigned_garbage(fuzz_client: FlaskClient, body: bytes, data: st.DataObject) -> None:
    names = ["X-Hub-Signature", "X-Atlassian-Webhook-Identifier"]
    values = st.one_of(
        st.text(LATIN1, max_size=80), st.from_regex(r"\Asha(256|512)=[0-9a-f]{0,130}\Z")
    )
    headers = drawn(data, names, values, {"Content-Type": "application/json"})
    response = fuzz_client.post("/hooks/jira", data=body, headers=headers)
    fuzz_json(response, "event_id")
    assert response.status_code >= 400


@FUZZ
@given(value=st.one_of(jira_body, json_values))
def test_signed_json(fuzz_app: Flask, fuzz_client: FlaskClient, value: Any) -> None:
    body = json.dumps(value).encode()
    headers, body = signed_sample(fuzz_app, "jira", body)
    response = fuzz_client.post("/hooks/jira", data=body, headers=headers)
    result = fuzz_json(response, "event_id")
    assert response.status_code in (200, 202, 400, 422), result


@FUZZ
@given(
    body=st.binary(max_size=1000),
    content_type=st.sampled_from(["application/json", "text/plain", ""]),
)
def test_signed_bytes(
    fuzz_app: Flask, fuzz_client: FlaskClient, body: bytes, content_type: str
) -> None:
    headers, body = signed_sample(fuzz_app, "jira", body)
    headers["content-type"] = content_type
    fuzz_json(fuzz_client.post("/hooks/jira", data=body, headers=headers), "event_id")
