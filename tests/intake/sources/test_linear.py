"""``linear`` source: signature, timestamp window, each mapping, dedupe, the relay's echoes.

Signatures are computed here with ``hmac``/``hashlib``, not with the module's helpers, so
a mistake in the module cannot cancel itself out. Linear publishes no signature vector;
the scheme (hex HMAC-SHA256 of the raw body with the signing secret, ``webhookTimestamp``
within a minute) is the one its SDK checks (github.com/linear/linear,
packages/sdk/src/webhooks/client.ts). The payloads follow the webhook schema published
in the same repository (packages/sdk/Linear-Webhooks@current.graphql: IssueWebhookPayload,
CommentWebhookPayload, IssueChildWebhookPayload, WorkflowStateChildWebhookPayload) and
the envelope and headers of https://linear.app/developers/webhooks (action, type, actor,
createdAt, data, url, updatedFrom, webhookId, webhookTimestamp; Linear-Delivery,
Linear-Event, Linear-Signature).
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import given
from hypothesis import strategies as st

from relay.config.loader import parse_config
from relay.errors import ConfigError
from relay.intake.sources.linear import LinearSource
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
    post,
    signed_sample,
    stored_event,
    tamper,
)

SECRET = "lin_wh_3f9a1c7e5b2d4f6a8c0e1b3d5f7a9c2e4b6d8f0a"
RELAY_USER = "9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a"  # the user of the relay's API key
ADA = {"id": "4c1b2a5e-8f1d-4f7a-9d2c-3e5b6a7c8d9e", "name": "Ada Lovelace", "email": "ada@x.io"}
BOB = {"id": "6e5d4c3b-2a1f-4e0d-9c8b-7a6f5e4d3c2b", "name": "Bob Ross", "email": "bob@x.io"}
TEAM = {"id": "5e7a9c1b-3d5f-4a7c-8e9a-2b4d6f8a0c1e", "key": "ENG", "name": "Engineering"}
URL = "https://linear.app/acme/issue/ENG-12/fix-the-login-timeout"
MARKER = "group-relay:0123456789abcdef01234567"
STATES = {
    "todo": {"id": "0d2f4b6c-8e1a-4c3e-9b5d-7f9a1c3e5b7d", "name": "Todo", "type": "unstarted"},
    "doing": {"id": "1e3a5c7e-9b2d-4f6a-8c0e-2b4d6f8a1c3e", "name": "Doing", "type": "started"},
    "done": {"id": "2f4b6d8f-0a1c-4e3a-9d5f-3c5e7a9b2d4f", "name": "Done", "type": "completed"},
    "canceled": {"id": "3a5c7e9a-1b2d-4f4b-8e6a-4d6f8b0c3e5a", "name": "Nope", "type": "canceled"},
}

SOURCES: list[dict[str, Any]] = [
    {"id": "linear", "kind": "linear", "secrets": [SECRET], "relay_accounts": [RELAY_USER]},
    {
        "id": "rotating",
        "kind": "linear",
        "secrets": ["old-secret", "new-secret"],
        "relay_accounts": ["Relay Bot"],
        "tolerance": "5m",
    },
]


def now_ms() -> int:
    return int(time.time() * 1000)


def issue_data(state: str = "todo", assignee: dict[str, str] | None = ADA) -> dict[str, Any]:
    """``data`` of an Issue payload (IssueWebhookPayload)."""
    return {
        "id": "7a9c1e3f-2b4d-4c6e-8f0a-1b3d5f7a9c2e",
        "identifier": "ENG-12",
        "number": 12,
        "title": "Fix the login timeout",
        "description": "Sessions end after five minutes.",
        "priority": 2,
        "priorityLabel": "High",
        "url": URL,
        "createdAt": "2026-03-02T09:15:00.000Z",
        "updatedAt": "2026-03-02T10:40:12.345Z",
        "stateId": STATES[state]["id"],
        "state": {**STATES[state], "color": "#e2e2e2"},
        "teamId": TEAM["id"],
        "team": TEAM,
        "assigneeId": assignee["id"] if assignee else None,
        "assignee": assignee,
        "labelIds": [],
        "subscriberIds": [ADA["id"]],
    }


def payload(
    kind: str,
    action: str,
    data: dict[str, Any],
    *,
    updated_from: dict[str, Any] | None = None,
    actor: dict[str, Any] | None = ADA,
    stamp: Any = None,
    url: str = URL,
) -> dict[str, Any]:
    """A data-change envelope as Linear sends it."""
    body: dict[str, Any] = {
        "action": action,
        "actor": {**actor, "url": "https://linear.app/acme/profiles/x", "type": "user"}
        if actor
        else None,
        "createdAt": "2026-03-02T10:40:12.345Z",
        "data": data,
        "url": url,
        "type": kind,
        "organizationId": "9b1d3f5a-7c9e-4b1d-8f3a-5c7e9b1d3f5a",
        "webhookId": "2f4a6c8e-0b2d-4f6a-9c8e-1d3f5b7a9c0e",
        "webhookTimestamp": now_ms() if stamp is None else stamp,
    }
    if updated_from is not None:
        body["updatedFrom"] = updated_from
    return body


def comment(text: str, *, actor: dict[str, Any] | None = BOB) -> dict[str, Any]:
    """A Comment ``create`` (CommentWebhookPayload) on ENG-12."""
    data = {
        "id": "8b0d2f4a-6c8e-4a1c-9e3b-5d7f9a1c3e5b",
        "body": text,
        "createdAt": "2026-03-02T10:40:12.345Z",
        "updatedAt": "2026-03-02T10:40:12.345Z",
        "issueId": "7a9c1e3f-2b4d-4c6e-8f0a-1b3d5f7a9c2e",
        "issue": {
            "id": "7a9c1e3f-2b4d-4c6e-8f0a-1b3d5f7a9c2e",
            "identifier": "ENG-12",
            "title": "Fix the login timeout",
            "url": URL,
            "teamId": TEAM["id"],
            "team": TEAM,
        },
        "userId": BOB["id"],
        "user": BOB,
        "reactionData": [],
    }
    return payload("Comment", "create", data, actor=actor, url=URL + "#comment-8b0d2f4a")


def encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def sign(
    body: bytes, *, secret: str = SECRET, delivery: str | None = "d-1", event: str = "Issue"
) -> dict[str, str]:
    """The headers Linear sends with ``body``."""
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "Linear-Event": event,
        "Linear-Signature": hmac.new(secret.encode(), body, hashlib.sha256).hexdigest(),
        "User-Agent": "Linear-Webhook",
    }
    if delivery:
        headers["Linear-Delivery"] = delivery
    return headers


def deliver(
    client: FlaskClient, body: dict[str, Any], source_id: str = "linear", **options: Any
) -> Any:
    raw = encode(body)
    return post(client, source_id, raw, sign(raw, **options))


def accepted(client: FlaskClient, redis_client: redis.Redis, body: dict[str, Any]) -> Any:
    """The stored event of a delivery Linear counts as done (a 200, not just any 2xx)."""
    response = deliver(client, body)
    assert response.status_code == 200, response.get_data(as_text=True)
    return stored_event(redis_client, response.get_json()["event_id"])


# -- signature -----------------------------------------------------------------------------


def test_signed_issue_create(client: FlaskClient, redis_client: redis.Redis) -> None:
    event = accepted(client, redis_client, payload("Issue", "create", issue_data()))
    assert event["type"] == "task.created"
    assert event["source"] == "linear"
    assert event["sender"] == {"id": ADA["id"], "name": ADA["name"]}
    assert event["occurred_at"].startswith("2026-03-02T10:40:12.345")
    assert event["task"] == {
        "tool": "linear",
        "key": "ENG-12",
        "id": "7a9c1e3f-2b4d-4c6e-8f0a-1b3d5f7a9c2e",
        "project": "ENG",
        "url": URL,
        "title": "Fix the login timeout",
        "status": "Todo",
        "assignees": [{"id": ADA["id"], "name": ADA["name"]}],
        "actor": {"id": ADA["id"], "name": ADA["name"]},
        "comment": None,
        "changes": [],
        "by_relay": False,
    }
    assert event["raw"]["data"]["identifier"] == "ENG-12"


BODY = encode(payload("Issue", "create", issue_data(), stamp=4102444800000))  # 2100: fresh


@pytest.mark.parametrize(
    ("mutation", "code"),
    [
        (tamper(linear_signature=None), "missing_signature"),
        (tamper(linear_signature=""), "missing_signature"),
        (tamper(linear_signature=lambda v: "sha256=" + v), "malformed_signature"),
        (tamper(linear_signature=lambda v: v[:-2]), "malformed_signature"),
        (tamper(linear_signature=lambda v: v[:-1] + ("0" if v[-1] != "0" else "1")), None),
        (tamper(body=lambda b: flip(b, 40)), "invalid_signature"),
        (tamper(body=lambda b: b + b" "), "invalid_signature"),
        (tamper(linear_signature=lambda v: [v, v]), "malformed_signature"),  # joined by WSGI
    ],
)
def test_signature_refused(
    client: FlaskClient, redis_client: redis.Redis, mutation: Mutation, code: str | None
) -> None:
    """Refused before the body is read: the stamp far in the future is never reached."""
    headers, body = mutation(sign(BODY), BODY)
    response = post(client, "linear", body, headers)
    assert_refused(response, 401, code or "invalid_signature", redis_client)
    assert SECRET not in response.get_data(as_text=True)


def test_wrong_secret_refused(client: FlaskClient, redis_client: redis.Redis) -> None:
    body = encode(payload("Issue", "create", issue_data()))
    response = post(client, "linear", body, sign(body, secret="another-webhook's-secret"))
    assert_refused(response, 401, "invalid_signature", redis_client)
    assert "matches no configured secret" in response.get_json()["detail"]


def test_upper_case_hex_accepted(client: FlaskClient) -> None:
    body = encode(payload("Issue", "create", issue_data()))
    headers = sign(body)
    headers["Linear-Signature"] = headers["Linear-Signature"].upper()
    assert post(client, "linear", body, headers).status_code == 200


@pytest.mark.parametrize("secret", ["old-secret", "new-secret"])
def test_rotation(client: FlaskClient, secret: str) -> None:
    response = deliver(client, payload("Issue", "create", issue_data()), "rotating", secret=secret)
    assert response.status_code == 200, response.get_data(as_text=True)


def test_repeated_signature_header_is_400() -> None:
    source = build_source(LinearSource, SOURCES[0])
    body = encode(payload("Issue", "create", issue_data()))
    assert_repeated_header_refused(source, sign(body), "Linear-Signature", body)


# -- the timestamp window ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offset_ms", "code"),
    [
        (-61_000, "stale_timestamp"),
        (61_000, "stale_timestamp"),
        (-3_600_000, "stale_timestamp"),
    ],
)
def test_stale_timestamp_refused(
    client: FlaskClient, redis_client: redis.Redis, offset_ms: int, code: str
) -> None:
    """Correctly signed, but sent more than a minute from now: a replay."""
    body = payload("Issue", "create", issue_data(), stamp=now_ms() + offset_ms)
    response = deliver(client, body)
    assert_refused(response, 401, code, redis_client)
    assert "webhookTimestamp" in response.get_json()["detail"]
    assert "the window is ±60s" in response.get_json()["detail"]


@pytest.mark.parametrize(
    ("stamp", "code"),
    [
        ("MISSING", "missing_timestamp"),
        (None, "missing_timestamp"),
        (str(now_ms()), "invalid_timestamp"),
        (True, "invalid_timestamp"),
        ([now_ms()], "invalid_timestamp"),
        (10**400, "invalid_timestamp"),
    ],
)
def test_timestamp_shapes_refused(
    client: FlaskClient, redis_client: redis.Redis, stamp: Any, code: str
) -> None:
    body = payload("Issue", "create", issue_data())
    if stamp == "MISSING":
        del body["webhookTimestamp"]
    else:
        body["webhookTimestamp"] = stamp
    assert_refused(deliver(client, body), 401, code, redis_client)


def test_within_window_and_tolerance(client: FlaskClient) -> None:
    recent = payload("Issue", "create", issue_data(), stamp=now_ms() - 50_000)
    assert deliver(client, recent).status_code == 200
    older = payload("Issue", "create", issue_data(), stamp=now_ms() - 240_000)
    assert deliver(client, older, "rotating", secret="new-secret").status_code == 200
    assert deliver(client, older, "linear", delivery="d-2").status_code == 401


# -- bodies that are not Linear's ------------------------------------------------------------


def test_bad_json_is_400(client: FlaskClient, redis_client: redis.Redis) -> None:
    body = b'{"action": "create", "type": "Issue",'
    assert_refused(post(client, "linear", body, sign(body)), 400, "invalid_json", redis_client)


def test_other_media_type_is_415(client: FlaskClient, redis_client: redis.Redis) -> None:
    body = encode(payload("Issue", "create", issue_data()))
    headers = {**sign(body), "Content-Type": "application/x-www-form-urlencoded"}
    assert_refused(post(client, "linear", body, headers), 415, None, redis_client)


@pytest.mark.parametrize(
    ("make", "where"),
    [
        (lambda: b"[1, 2]", "JSON object"),
        (lambda: encode(payload("Issue", "create", {"title": "no identifier"})), "data.identifier"),
        (
            lambda: encode({**comment("hi"), "data": {"body": "hi", "issue": {}}}),
            "data.issue.identifier",
        ),
    ],
    ids=["array", "issue-without-identifier", "comment-without-issue"],
)
def test_unmappable_is_422(
    client: FlaskClient, redis_client: redis.Redis, make: Callable[[], bytes], where: str
) -> None:
    body = make()  # built now, not at collection: webhookTimestamp must be fresh
    response = post(client, "linear", body, sign(body))
    assert_refused(response, 422, "invalid_event", redis_client)
    assert where in response.get_json()["detail"]


# -- mapping -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "updated_from", "event_type", "changes"),
    [
        (
            "done",
            {"stateId": STATES["doing"]["id"], "completedAt": None, "updatedAt": "x"},
            "task.closed",
            ["status"],
        ),
        (
            "canceled",
            {"stateId": STATES["todo"]["id"], "canceledAt": None},
            "task.closed",
            ["status"],
        ),
        (
            "doing",
            {"stateId": STATES["done"]["id"], "completedAt": "2026-03-01T08:00:00.000Z"},
            "task.reopened",
            ["status"],
        ),
        (
            "todo",
            {"stateId": STATES["canceled"]["id"], "canceledAt": "2026-03-01T08:00:00.000Z"},
            "task.reopened",
            ["status"],
        ),
        ("doing", {"stateId": STATES["todo"]["id"], "startedAt": None}, "task.updated", ["status"]),
        ("todo", {"assigneeId": None, "updatedAt": "x"}, "task.assigned", ["assignee"]),
        ("todo", {"title": "Fix login", "updatedAt": "x"}, "task.updated", ["title"]),
        (
            "todo",
            {"labelIds": [], "projectId": None, "priority": 0, "description": "old"},
            "task.updated",
            ["labels", "project", "priority", "description"],
        ),
    ],
)
def test_issue_update(
    client: FlaskClient,
    redis_client: redis.Redis,
    state: str,
    updated_from: dict[str, Any],
    event_type: str,
    changes: list[str],
) -> None:
    body = payload("Issue", "update", issue_data(state), updated_from=updated_from)
    event = accepted(client, redis_client, body)
    assert event["type"] == event_type
    assert event["task"]["changes"] == changes
    assert event["task"]["status"] == STATES[state]["name"]
    assert event["task"]["key"] == "ENG-12"
    assert event["task"]["by_relay"] is False


def test_assigned_to_someone_else(client: FlaskClient, redis_client: redis.Redis) -> None:
    body = payload(
        "Issue", "update", issue_data(assignee=BOB), updated_from={"assigneeId": ADA["id"]}
    )
    event = accepted(client, redis_client, body)
    assert event["type"] == "task.assigned"
    assert event["task"]["assignees"] == [{"id": BOB["id"], "name": BOB["name"]}]
    assert event["text"] == "ENG-12 assigned: Fix the login timeout"


def test_closing_and_assigning_at_once_is_closed(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    body = payload(
        "Issue",
        "update",
        issue_data("done", assignee=BOB),
        updated_from={"stateId": STATES["doing"]["id"], "assigneeId": ADA["id"]},
    )
    event = accepted(client, redis_client, body)
    assert (event["type"], event["task"]["changes"]) == ("task.closed", ["status", "assignee"])


def test_issue_removed(client: FlaskClient, redis_client: redis.Redis) -> None:
    event = accepted(client, redis_client, payload("Issue", "remove", issue_data("done")))
    assert (event["type"], event["task"]["changes"]) == ("task.updated", ["removed"])


def test_issue_without_team_object_takes_the_key_prefix(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    data = {**issue_data(), "team": None, "url": None, "state": None, "assignee": None}
    event = accepted(client, redis_client, payload("Issue", "create", data))
    task = event["task"]
    assert (task["project"], task["url"], task["status"], task["assignees"]) == (
        "ENG",
        URL,
        None,
        [],
    )


def test_comment_created(client: FlaskClient, redis_client: redis.Redis) -> None:
    event = accepted(client, redis_client, comment("Fixed in #45, deploying now"))
    assert event["type"] == "task.commented"
    assert event["task"] == {
        "tool": "linear",
        "key": "ENG-12",
        "id": "7a9c1e3f-2b4d-4c6e-8f0a-1b3d5f7a9c2e",
        "project": "ENG",
        "url": URL,
        "title": "Fix the login timeout",
        "status": None,
        "assignees": [],
        "actor": {"id": BOB["id"], "name": BOB["name"]},
        "comment": "Fixed in #45, deploying now",
        "changes": [],
        "by_relay": False,
    }


def test_comment_without_actor_is_by_its_user(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    event = accepted(client, redis_client, comment("hello", actor=None))
    assert event["task"]["actor"] == {"id": BOB["id"], "name": BOB["name"]}


@pytest.mark.parametrize(
    "body",
    [
        payload("Project", "create", {"id": "p1", "name": "Q3 launch", "url": URL}),
        payload("Cycle", "update", {"id": "c1", "number": 7}, updated_from={"name": "x"}),
        payload("Reaction", "create", {"id": "r1", "emoji": "+1", "commentId": "c"}),
        payload("IssueLabel", "create", {"id": "l1", "name": "bug", "color": "#f00"}),
        {**comment("edited"), "action": "update", "updatedFrom": {"body": "typo"}},
        {**comment("gone"), "action": "remove"},
        payload("Comment", "create", {"id": "c2", "body": "on a project update"}),
        payload("Issue", "update", issue_data(), updated_from={"sortOrder": 3.5, "updatedAt": "x"}),
        payload("Issue", "update", issue_data()),  # no updatedFrom at all
        payload("Issue", "archive", issue_data()),
    ],
)
def test_other_payloads_are_acknowledged(
    client: FlaskClient, redis_client: redis.Redis, body: dict[str, Any]
) -> None:
    """Nothing of a task's to post, but queued as ``custom`` (routes can still pick it up)
    and answered 200, so Linear neither retries it nor disables the webhook."""
    body = {**body, "webhookTimestamp": now_ms()}  # built at collection: stamp it now
    event = accepted(client, redis_client, body)
    assert event["type"] == "custom"
    assert event["text"] == f"{body['type']} {body['action']}"
    assert event["raw"] == body
    assert event.get("task") is None


# -- the relay's own changes -------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        f"Deploy is green\n\n`{MARKER}`",  # as the linear target writes it
        f"Deploy is green\n\n<!-- {MARKER} -->",
        f"Deploy is green {MARKER}",
    ],
)
def test_marker_in_comment_is_by_relay(
    client: FlaskClient, redis_client: redis.Redis, text: str
) -> None:
    event = accepted(client, redis_client, comment(text))
    assert event["task"]["by_relay"] is True
    assert event["task"]["comment"] == "Deploy is green"


def test_marker_lookalike_is_not_by_relay(client: FlaskClient, redis_client: redis.Redis) -> None:
    text = "see `group-relay:not-a-marker` in the docs"
    event = accepted(client, redis_client, comment(text))
    assert (event["task"]["by_relay"], event["task"]["comment"]) == (False, text)


def test_relay_created_issue_is_by_relay_but_later_edits_are_not(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    data = {**issue_data(), "description": f"From the chat\n\n`{MARKER}`"}
    created = accepted(client, redis_client, payload("Issue", "create", data))
    assert created["task"]["by_relay"] is True
    edited = payload("Issue", "update", data, updated_from={"title": "Fix login"})
    response = deliver(client, edited, delivery="d-2")
    later = stored_event(redis_client, response.get_json()["event_id"])
    assert later["task"]["by_relay"] is False


@pytest.mark.parametrize(
    ("source_id", "actor"),
    [
        ("linear", {"id": RELAY_USER, "name": "relay-bot"}),
        ("rotating", {"id": "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d", "name": "Relay Bot"}),
    ],
)
def test_relay_account_is_by_relay(
    client: FlaskClient, redis_client: redis.Redis, source_id: str, actor: dict[str, str]
) -> None:
    """By id, or by the name an OAuth app acts under."""
    body = payload(
        "Issue", "update", issue_data("done"), updated_from={"stateId": "x"}, actor=actor
    )
    secret = SECRET if source_id == "linear" else "new-secret"
    response = deliver(client, body, source_id, secret=secret)
    event = stored_event(redis_client, response.get_json()["event_id"])
    assert (event["type"], event["task"]["by_relay"]) == ("task.closed", True)


# -- dedupe ------------------------------------------------------------------------------------


def test_resend_with_same_delivery_is_a_duplicate(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    """A resend with the same Linear-Delivery, even with a fresh webhookTimestamp (so a
    new signature), is answered 200 as a duplicate and queued once."""
    first = deliver(client, comment("first"), delivery="5b1a2f3e-delivery")
    resend = comment("first")
    resend["webhookTimestamp"] += 1500
    second = deliver(client, resend, delivery="5b1a2f3e-delivery")
    assert (first.status_code, second.status_code) == (200, 200)
    assert second.get_json() == {"event_id": first.get_json()["event_id"], "duplicate": True}
    assert redis_client.llen(keys.FANOUT_QUEUE) == 1
    assert deliver(client, comment("first"), delivery="another").get_json().get("duplicate") is None
    assert redis_client.llen(keys.FANOUT_QUEUE) == 2


def test_without_delivery_header_a_replay_is_a_duplicate(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    raw = encode(comment("once"))
    first = post(client, "linear", raw, sign(raw, delivery=None))
    again = post(client, "linear", raw, sign(raw, delivery=None))
    assert again.get_json() == {"event_id": first.get_json()["event_id"], "duplicate": True}


def test_overlong_delivery_id_is_400(client: FlaskClient, redis_client: redis.Redis) -> None:
    response = deliver(client, comment("x"), delivery="d" * 257)
    assert_refused(response, 400, "invalid_delivery_id", redis_client)


# -- sample (relay send) and config --------------------------------------------------------------


def test_sample_is_accepted(app: Flask, client: FlaskClient, redis_client: redis.Redis) -> None:
    sample = app.extensions["relay"].sources["linear"].sample()
    expected = hmac.new(SECRET.encode(), sample.body, hashlib.sha256).hexdigest()
    assert sample.headers["Linear-Signature"] == expected
    assert sample.headers["Linear-Event"] == "Issue"
    response = post(client, "linear", sample.body, sample.headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    event = stored_event(redis_client, response.get_json()["event_id"])
    assert (event["type"], event["task"]["key"]) == ("task.created", "ENG-12")


def test_sample_refreshes_a_saved_payload(app: Flask, client: FlaskClient) -> None:
    """``relay send --file`` with a payload saved from an old delivery still gets in."""
    saved = comment("from last week")
    saved["webhookTimestamp"] = now_ms() - 7 * 86_400_000
    sample = app.extensions["relay"].sources["linear"].sample(encode(saved))
    assert sample.headers["Linear-Event"] == "Comment"
    response = post(client, "linear", sample.body, sample.headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    stale = post(client, "linear", encode(saved), sign(encode(saved), delivery="old"))
    assert stale.status_code == 401


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({}, "sources[0].secrets"),
        ({"secrets": []}, "sources[0].secrets"),
        ({"secrets": [SECRET, ""]}, "sources[0].secrets"),
        ({"secrets": [SECRET], "tolerance": 0}, "sources[0].tolerance"),
        ({"secrets": [SECRET], "tolerence": "2m"}, "sources[0].tolerence"),
    ],
)
def test_config_errors(options: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"sources": [{"id": "l", "kind": "linear", **options}]})
    assert any(p.startswith(problem) for p in caught.value.problems), caught.value.problems
    assert SECRET not in str(caught.value)


def test_empty_secret_names_the_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"sources": [{"id": "l", "kind": "linear", "secrets": [""]}]})
    assert "is its environment variable set?" in str(caught.value)


# -- property tests: never a 5xx ---------------------------------------------------------------

HEADER_NAMES = ["Linear-Signature", "Linear-Delivery", "Linear-Event"]
header_values = st.one_of(
    st.text(LATIN1, max_size=100),
    st.from_regex(r"\A[0-9a-f]{64}\Z"),
    st.integers(min_value=-(10**15), max_value=10**15).map(str),
)
anything = any_json(text=30)
stamps = st.one_of(st.none(), anything, st.integers(), st.just("now"))
linear_like = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["Issue", "Comment", "Project", "Reaction", "x"]),
        "action": st.sampled_from(["create", "update", "remove", "x"]),
        "webhookTimestamp": stamps,
    },
    optional={
        "actor": st.one_of(anything, st.fixed_dictionaries({"id": anything, "name": anything})),
        "createdAt": st.one_of(anything, st.datetimes().map(lambda d: d.isoformat())),
        "url": anything,
        "webhookId": anything,
        "updatedFrom": st.one_of(anything, st.dictionaries(st.text(max_size=20), anything)),
        "data": st.fixed_dictionaries(
            {},
            optional={
                key: anything
                for key in (
                    "id",
                    "identifier",
                    "title",
                    "url",
                    "body",
                    "description",
                    "state",
                    "team",
                    "assignee",
                    "issue",
                    "user",
                )
            },
        ),
    },
)


def fresh(value: Any) -> Any:
    """``value`` with a stamp of "now" made current, so some examples pass the window."""
    if isinstance(value, dict) and value.get("webhookTimestamp") == "now":
        value = {**value, "webhookTimestamp": now_ms()}
    return value


@FUZZ
@given(body=st.binary(max_size=2000), data=st.data())
def test_unsigned_garbage(fuzz_client: FlaskClient, body: bytes, data: st.DataObject) -> None:
    headers = drawn(data, HEADER_NAMES, header_values, {"Content-Type": "application/json"})
    response = fuzz_client.post("/hooks/linear", data=body, headers=headers)
    fuzz_json(response, "event_id")
    assert response.status_code == 401


@FUZZ
@given(value=st.one_of(linear_like, anything))
def test_signed_json_as_sent(fuzz_client: FlaskClient, value: Any) -> None:
    """Signed with the secret but otherwise anything: a 200 event or a 4xx refusal."""
    body = json.dumps(fresh(value)).encode()
    response = fuzz_client.post("/hooks/linear", data=body, headers=sign(body, delivery=None))
    answer = fuzz_json(response, "event_id")
    assert response.status_code in (200, 401, 422), answer


@FUZZ
@given(value=st.one_of(linear_like, anything), raw=st.binary(max_size=300))
def test_signed_by_sample(
    fuzz_app: Flask, fuzz_client: FlaskClient, value: Any, raw: bytes
) -> None:
    """Through ``sample``, which sets a fresh stamp: any object is queued or a 422."""
    body = json.dumps(fresh(copy.deepcopy(value))).encode()
    headers, body = signed_sample(fuzz_app, "linear", body)
    response = fuzz_client.post("/hooks/linear", data=body, headers=headers)
    answer = fuzz_json(response, "event_id")
    assert response.status_code in (200, 422), answer
    headers, raw = signed_sample(fuzz_app, "linear", raw)
    fuzz_json(fuzz_client.post("/hooks/linear", data=raw, headers=headers), "event_id")
