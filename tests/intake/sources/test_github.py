"""``github`` source: GitHub's signature vector, the issue-event mapping, echoes, ping, dedupe.

Payloads are GitHub's own examples cut to the fields the mapping reads plus a few it must
ignore: octokit/webhooks payload-examples/api.github.com/issues/*.payload.json and
issue_comment/created.payload.json (https://github.com/octokit/webhooks), captured from
GitHub. Signatures are computed here with ``hmac``/``hashlib``, not with the module's own
helpers, so a mistake in the module cannot cancel itself out in its tests.
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
from relay.intake.sources.github import GitHubSource
from relay.state import keys
from tests.intake.sources.support import (
    FUZZ,
    LATIN1,
    Mutation,
    any_json,
    assert_refused,
    build_source,
    flip,
    fuzz_answer,
    inbound,
    post,
    signed_sample,
    stored_event,
    tamper,
)

# https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries
# ("Testing the webhook payload validation")
GH_SECRET = "It's a Secret to Everybody"
GH_BODY = b"Hello, World!"
GH_SIG = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
SECRET = "gh-webhook-secret"
MARKER = "group-relay:0123456789abcdef01234567"

SOURCES: list[dict[str, Any]] = [
    {"id": "gh", "kind": "github", "secrets": ["old-secret", SECRET]},
    {"id": "gh-app", "kind": "github", "secrets": [SECRET], "relay_accounts": ["relay-app[bot]"]},
]


def user(login: str) -> dict[str, Any]:
    return {"login": login, "id": 21031067, "node_id": "MDQ6VXNlcjIxMDMxMDY3", "type": "User"}


ISSUE: dict[str, Any] = {
    "url": "https://api.github.com/repos/Codertocat/Hello-World/issues/1",
    "html_url": "https://github.com/Codertocat/Hello-World/issues/1",
    "id": 444500041,
    "node_id": "MDU6SXNzdWU0NDQ1MDAwNDE=",
    "number": 1,
    "title": "Spelling error in the README file",
    "user": user("Codertocat"),
    "labels": [{"id": 1362934389, "name": "bug", "color": "d73a4a", "default": True}],
    "state": "open",
    "locked": False,
    "assignee": user("Codertocat"),
    "assignees": [user("Codertocat")],
    "milestone": None,
    "comments": 0,
    "created_at": "2019-05-15T15:20:18Z",
    "updated_at": "2019-05-15T15:20:18Z",
    "closed_at": None,
    "author_association": "OWNER",
    "active_lock_reason": None,
    "body": "It looks like you accidently spelled 'commit' with two 't's.",
}
REPOSITORY = {
    "id": 186853002,
    "node_id": "MDEwOlJlcG9zaXRvcnkxODY4NTMwMDI=",
    "name": "Hello-World",
    "full_name": "Codertocat/Hello-World",
    "private": False,
    "owner": user("Codertocat"),
    "html_url": "https://github.com/Codertocat/Hello-World",
}
COMMENT = {
    "url": "https://api.github.com/repos/Codertocat/Hello-World/issues/comments/492700400",
    "html_url": "https://github.com/Codertocat/Hello-World/issues/1#issuecomment-492700400",
    "id": 492700400,
    "user": user("Codertocat"),
    "created_at": "2019-05-15T15:20:21Z",
    "updated_at": "2019-05-15T15:20:21Z",
    "author_association": "OWNER",
    "body": "You are totally right! I'll get this fixed right away.",
}


def issues(action: str, issue: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """An ``issues`` payload: ``issue`` fields override the example's; ``by`` is the sender."""
    sender = user(extra.pop("by", "Codertocat"))
    return {
        "action": action,
        "issue": {**copy.deepcopy(ISSUE), **(issue or {})},
        **extra,
        "repository": REPOSITORY,
        "sender": sender,
    }


def comment(action: str = "created", body: str | None = None, **issue: Any) -> dict[str, Any]:
    """An ``issue_comment`` payload."""
    return {
        "action": action,
        "issue": {**copy.deepcopy(ISSUE), **issue},
        "comment": {**COMMENT, "body": COMMENT["body"] if body is None else body},
        "repository": REPOSITORY,
        "sender": user("Codertocat"),
    }


def sign(
    payload: Any,
    event: str = "issues",
    *,
    delivery: str = "72d3162e-cc78-11e3-81ab-4c9367dc0958",
    secret: str = SECRET,
) -> tuple[dict[str, str], bytes]:
    """Headers and body as GitHub sends them (docs' "Example delivery")."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/044aadd",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery,
        "X-GitHub-Hook-ID": "109948940",
        "X-Hub-Signature-256": f"sha256={digest}",
    }
    return headers, body


def deliver(
    client: FlaskClient, redis_client: redis.Redis, payload: Any, event: str = "issues", **kw: Any
) -> dict[str, Any]:
    """Post a signed delivery; the event intake stored."""
    source_id = kw.pop("source_id", "gh")
    headers, body = sign(payload, event, **kw)
    response = post(client, source_id, body, headers)
    assert response.status_code == 202, response.get_json()
    return stored_event(redis_client, response.get_json()["event_id"])


# -- the signature -------------------------------------------------------------------------


def test_github_vector_independently() -> None:
    digest = hmac.new(GH_SECRET.encode(), GH_BODY, hashlib.sha256).hexdigest()
    assert "sha256=" + digest == GH_SIG


def test_github_vector_through_source() -> None:
    gh = build_source(GitHubSource, {"id": "v", "kind": "github", "secrets": [GH_SECRET]})
    gh.verify(inbound({"X-Hub-Signature-256": GH_SIG}, GH_BODY))
    gh.verify(
        inbound({"X-Hub-Signature-256": GH_SIG.upper().replace("SHA256=", "sha256=")}, GH_BODY)
    )
    with pytest.raises(Unauthorized) as caught:
        gh.verify(inbound({"X-Hub-Signature-256": GH_SIG}, GH_BODY + b"\n"))
    assert caught.value.code == "invalid_signature"
    assert gh.sample(GH_BODY).headers["X-Hub-Signature-256"] == GH_SIG


def test_vector_over_http_reaches_the_parser(
    write_config: Any, make_app: Any, redis_client: redis.Redis
) -> None:
    """Verified, the vector's body (not JSON) stops at the parser: 400, not 401."""
    app = make_app(
        write_config({"sources": [{"id": "v", "kind": "github", "secrets": [GH_SECRET]}]})
    )
    headers = {"X-Hub-Signature-256": GH_SIG, "X-GitHub-Event": "issues", "X-GitHub-Delivery": "d"}
    response = post(
        app.test_client(), "v", GH_BODY, {**headers, "Content-Type": "application/json"}
    )
    assert_refused(response, 400, "invalid_json", redis_client)


def test_either_secret_while_rotating(client: FlaskClient, redis_client: redis.Redis) -> None:
    for i, secret in enumerate(["old-secret", SECRET]):
        event = deliver(client, redis_client, issues("opened"), secret=secret, delivery=f"r{i}")
        assert event["type"] == "task.created"


def _flip_hex(value: str) -> str:
    return value[:-1] + ("0" if value[-1] != "0" else "1")


SIG = "X-Hub-Signature-256"
MATRIX: dict[str, tuple[Mutation, int | set[int], str | None]] = {
    "missing signature": (tamper(**{SIG: None}), 401, "missing_signature"),
    "empty signature": (tamper(**{SIG: ""}), 401, "missing_signature"),
    "legacy sha1 only": (
        tamper(**{SIG: None, "X-Hub-Signature": "sha1=" + "0" * 40}),
        401,
        "missing_signature",
    ),
    "no prefix": (tamper(**{SIG: lambda v: v[7:]}), 401, "malformed_signature"),
    "sha1 prefix": (tamper(**{SIG: lambda v: "sha1=" + v[7:]}), 401, "malformed_signature"),
    "short digest": (tamper(**{SIG: lambda v: v[:-2]}), 401, "malformed_signature"),
    "not hex": (tamper(**{SIG: lambda v: v[:-2] + "zz"}), 401, "malformed_signature"),
    "latin-1": (tamper(**{SIG: lambda v: v[:-1] + "é"}), 401, "malformed_signature"),
    # a WSGI server joins a repeated header into one value, which is then malformed
    "signature sent twice": (tamper(**{SIG: lambda v: [v, v]}), {400, 401}, None),
    "signature changed": (tamper(**{SIG: _flip_hex}), 401, "invalid_signature"),
    "body bit flip": (tamper(body=lambda b: flip(b, 5)), 401, "invalid_signature"),
    "body truncated": (tamper(body=lambda b: b[:-1]), 401, "invalid_signature"),
    "form content type": (
        tamper(content_type="application/x-www-form-urlencoded"),
        415,
        "unsupported_media_type",
    ),
    "no content type": (tamper(content_type=None), 415, "unsupported_media_type"),
    "missing event": (tamper(x_github_event=None), 400, "missing_event"),
    "odd event name": (tamper(x_github_event="issues; drop"), 400, "invalid_event_name"),
    "missing delivery id": (tamper(x_github_delivery=None), 400, "missing_delivery_id"),
    "long delivery id": (tamper(x_github_delivery="d" * 257), 400, "invalid_delivery_id"),
}


@pytest.mark.parametrize("name", list(MATRIX))
def test_bad_input_matrix(client: FlaskClient, redis_client: redis.Redis, name: str) -> None:
    mutate, status, code = MATRIX[name]
    headers, body = mutate(*sign(issues("opened"), delivery="d-matrix"))
    response = post(client, "gh", body, headers)
    assert_refused(response, status, code, redis_client)
    assert SECRET not in response.get_data(as_text=True)
    assert not redis_client.exists(keys.dedupe("gh", "d-matrix"))


def test_bad_json_is_400(client: FlaskClient, redis_client: redis.Redis) -> None:
    headers, body = sign(b'{"action": "opened", "issue": ')
    assert_refused(post(client, "gh", body, headers), 400, "invalid_json", redis_client)


@pytest.mark.parametrize(
    ("payload", "detail"),
    [
        (issues("opened", {"number": None}), "issue.number"),
        (issues("opened", {"number": "1"}), "issue.number"),
        ({"action": "opened", "repository": REPOSITORY}, "issue"),
        ({**issues("opened"), "action": None}, "action"),
        (["opened"], "JSON object"),
    ],
)
def test_issue_payload_without_what_the_key_needs_is_422(
    client: FlaskClient, redis_client: redis.Redis, payload: Any, detail: str
) -> None:
    response = post(client, "gh", *reversed(sign(payload)))
    assert_refused(response, 422, "invalid_event", redis_client)
    assert detail in response.get_json()["detail"]


def test_empty_secret_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"sources": [{"id": "g", "kind": "github", "secrets": [""]}]})
    assert "secrets" in str(caught.value.problems)
    with pytest.raises(ConfigError):
        parse_config({"sources": [{"id": "g", "kind": "github", "secrets": []}]})


# -- the mapping ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "type_", "changes", "status"),
    [
        (issues("opened"), "task.created", [], "open"),
        (
            issues("closed", {"state": "closed", "state_reason": "completed"}),
            "task.closed",
            ["status"],
            "closed (completed)",
        ),
        (
            issues("closed", {"state": "closed", "state_reason": "not_planned"}),
            "task.closed",
            ["status"],
            "closed (not_planned)",
        ),
        (
            issues("reopened", {"state_reason": "reopened"}),
            "task.reopened",
            ["status"],
            "open (reopened)",
        ),
        (issues("assigned", assignee=user("Codertocat")), "task.assigned", ["assignees"], "open"),
        (
            issues("unassigned", {"assignee": None, "assignees": []}, assignee=user("Codertocat")),
            "task.assigned",
            ["assignees"],
            "open",
        ),
        (
            issues("edited", changes={"title": {"from": "Speling error"}, "body": {"from": "x"}}),
            "task.updated",
            ["body", "title"],
            "open",
        ),
        (issues("edited", changes={}), "task.updated", ["edited"], "open"),  # as in the example
        (issues("labeled", label={"name": "bug"}), "task.updated", ["labels"], "open"),
        (issues("unlabeled", label={"name": "bug"}), "task.updated", ["labels"], "open"),
        (issues("milestoned"), "task.updated", ["milestone"], "open"),
        (issues("locked", {"locked": True}), "task.updated", ["locked"], "open"),
        (issues("transferred"), "task.updated", ["transferred"], "open"),
    ],
)
def test_issue_actions(
    client: FlaskClient,
    redis_client: redis.Redis,
    payload: dict[str, Any],
    type_: str,
    changes: list[str],
    status: str,
) -> None:
    event = deliver(client, redis_client, payload)
    assert event["type"] == type_
    task = event["task"]
    assignees = [{"id": a["login"], "name": None} for a in payload["issue"]["assignees"]]
    assert task == {
        "tool": "github_issues",
        "key": "#1",
        "id": "1",
        "project": "Codertocat/Hello-World",
        "url": "https://github.com/Codertocat/Hello-World/issues/1",
        "title": "Spelling error in the README file",
        "status": status,
        "assignees": assignees,
        "actor": {"id": "Codertocat", "name": None},
        "comment": None,
        "changes": changes,
        "by_relay": False,
    }
    assert event["sender"] == {"id": "Codertocat", "name": None}
    assert event["occurred_at"].startswith("2019-05-15T15:20:18")
    assert event["raw"] == payload
    assert event["text"].startswith("#1 ")


def test_comment_created(client: FlaskClient, redis_client: redis.Redis) -> None:
    event = deliver(client, redis_client, comment(), "issue_comment")
    assert event["type"] == "task.commented"
    assert event["task"]["key"] == "#1"
    assert event["task"]["comment"] == "You are totally right! I'll get this fixed right away."
    assert event["task"]["by_relay"] is False
    assert event["occurred_at"].startswith("2019-05-15T15:20:21")


@pytest.mark.parametrize(
    ("payload", "event_name", "text"),
    [
        (
            comment(
                pull_request={"url": "https://api.github.com/repos/Codertocat/Hello-World/pulls/2"}
            ),
            "issue_comment",
            "issue_comment created",
        ),
        (
            comment("edited", changes={"body": {"from": "x"}}),
            "issue_comment",
            "issue_comment edited",
        ),
        (comment("deleted"), "issue_comment", "issue_comment deleted"),
        (
            issues("opened", {"pull_request": {"url": "https://x/pulls/2"}}),
            "issues",
            "issues opened",
        ),
        (
            {"action": "opened", "number": 2, "pull_request": {}, "sender": user("a")},
            "pull_request",
            "pull_request opened",
        ),
        ({"ref": "refs/heads/main", "commits": [], "sender": user("a")}, "push", "push"),
        ("not an object", "star", "star"),
    ],
)
def test_what_is_not_a_task_is_queued_as_custom(
    client: FlaskClient, redis_client: redis.Redis, payload: Any, event_name: str, text: str
) -> None:
    """Acknowledged (2xx) and kept for routes that want it, never a task event."""
    event = deliver(client, redis_client, payload, event_name)
    assert event["type"] == "custom" and event["task"] is None
    assert event["text"] == text
    assert event["raw"] == payload


# -- echoes of the relay's own changes -----------------------------------------------------


def test_comment_with_the_marker_is_by_relay(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    body = f"Closing: fixed in #45 (from the ops group)\n\n<!-- {MARKER} -->"
    event = deliver(client, redis_client, comment(body=body), "issue_comment")
    assert event["task"]["by_relay"] is True
    assert event["task"]["comment"] == "Closing: fixed in #45 (from the ops group)"


def test_issue_opened_with_the_marker_is_by_relay(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    marked = {"body": f"Reported in Ops\n\n<!-- {MARKER} -->"}
    assert deliver(client, redis_client, issues("opened", marked))["task"]["by_relay"] is True
    # a person closing the relay's issue later is no echo, though its body keeps the marker
    closed = issues("closed", {**marked, "state": "closed"}, by="ada")
    event = deliver(client, redis_client, closed, delivery="d-2")
    assert event["task"]["by_relay"] is False


def test_relay_account_is_by_relay(client: FlaskClient, redis_client: redis.Redis) -> None:
    payload = issues("closed", {"state": "closed"}, by="relay-app[bot]")
    event = deliver(client, redis_client, payload, source_id="gh-app")
    assert event["task"]["by_relay"] is True and event["task"]["actor"]["id"] == "relay-app[bot]"
    other = issues("closed", {"state": "closed"}, by="ada")
    assert (
        deliver(client, redis_client, other, source_id="gh-app", delivery="d-3")["task"]["by_relay"]
        is False
    )


# -- dedupe, ping, sample ------------------------------------------------------------------


def test_redelivery_is_a_duplicate(client: FlaskClient, redis_client: redis.Redis) -> None:
    """GitHub keeps X-GitHub-Delivery on a redelivery: the second answer names the first event."""
    headers, body = sign(issues("closed", {"state": "closed"}), delivery="d-same")
    first = post(client, "gh", body, headers)
    again = post(client, "gh", body, headers)
    assert first.status_code == 202
    assert again.status_code == 200
    assert again.get_json() == {"event_id": first.get_json()["event_id"], "duplicate": True}
    assert redis_client.llen(keys.FANOUT_QUEUE) == 1
    other = post(client, "gh", *reversed(sign(issues("reopened"), delivery="d-other")))
    assert other.status_code == 202 and redis_client.llen(keys.FANOUT_QUEUE) == 2


PING = {
    "zen": "Anything added dilutes everything else.",
    "hook_id": 109948940,
    "hook": {
        "type": "Repository",
        "id": 109948940,
        "name": "web",
        "active": True,
        "events": ["issues", "issue_comment"],
        "config": {"content_type": "json"},
    },
    "repository": REPOSITORY,
    "sender": user("Codertocat"),
}


def test_ping_is_answered_not_queued(client: FlaskClient, redis_client: redis.Redis) -> None:
    response = post(client, "gh", *reversed(sign(PING, "ping")))
    assert response.status_code == 200
    assert response.get_json() == {"pong": True}
    assert redis_client.llen(keys.FANOUT_QUEUE) == 0


def test_ping_names_missing_events(client: FlaskClient) -> None:
    ping = copy.deepcopy(PING)
    ping["hook"]["events"] = ["push", "issues"]
    response = post(client, "gh", *reversed(sign(ping, "ping")))
    assert response.get_json() == {"pong": True, "missing_events": ["issue_comment"]}
    ping["hook"]["events"] = ["*"]
    assert post(client, "gh", *reversed(sign(ping, "ping"))).get_json() == {"pong": True}


def test_ping_is_verified(client: FlaskClient, redis_client: redis.Redis) -> None:
    """A wrong secret fails already at the ping, on GitHub's "Recent Deliveries" page."""
    headers, body = sign(PING, "ping", secret="wrong")
    assert_refused(post(client, "gh", body, headers), 401, "invalid_signature", redis_client)
    headers, body = sign(PING, "ping")
    headers["Content-Type"] = "application/x-www-form-urlencoded"
    response = post(client, "gh", body, headers)
    assert_refused(response, 415, None, redis_client)
    assert "application/json" in response.get_json()["detail"]


def test_sample_is_accepted(app: Flask, client: FlaskClient, redis_client: redis.Redis) -> None:
    sample = app.extensions["relay"].sources["gh"].sample()
    assert sample.headers["X-GitHub-Event"] == "issue_comment"
    response = post(client, "gh", sample.body, sample.headers)
    assert response.status_code == 202
    event = stored_event(redis_client, response.get_json()["event_id"])
    assert event["type"] == "task.commented" and event["task"]["key"] == "#1"


@pytest.mark.parametrize(
    ("payload", "event"),
    [(PING, "ping"), (comment(), "issue_comment"), (issues("closed"), "issues")],
)
def test_sample_of_a_body_guesses_its_event(app: Flask, payload: Any, event: str) -> None:
    body = json.dumps(payload).encode()
    sample = app.extensions["relay"].sources["gh"].sample(body)
    assert sample.body == body and sample.headers["X-GitHub-Event"] == event
    digest = hmac.new(b"old-secret", body, hashlib.sha256).hexdigest()  # the first secret
    assert sample.headers["X-Hub-Signature-256"] == f"sha256={digest}"


# -- never a 5xx ---------------------------------------------------------------------------

EVENTS = st.sampled_from(["issues", "issue_comment", "ping", "pull_request", "push"])
shaped = st.fixed_dictionaries(
    {},
    optional={
        "action": st.one_of(st.sampled_from(["opened", "closed", "created", "edited"]), any_json()),
        "issue": st.one_of(
            st.fixed_dictionaries(
                {"number": st.one_of(st.integers(), any_json())},
                optional={
                    "title": any_json(),
                    "state": any_json(),
                    "state_reason": any_json(),
                    "html_url": any_json(),
                    "assignees": st.one_of(
                        st.lists(st.fixed_dictionaries({"login": any_json()})), any_json()
                    ),
                    "pull_request": any_json(),
                    "body": st.one_of(st.text(), st.just(f"<!-- {MARKER} -->")),
                    "updated_at": st.one_of(st.text(max_size=30), any_json()),
                },
            ),
            any_json(),
        ),
        "comment": st.one_of(
            st.fixed_dictionaries({"body": st.text(), "created_at": st.text()}), any_json()
        ),
        "changes": any_json(),
        "hook": st.one_of(st.fixed_dictionaries({"events": any_json()}), any_json()),
        "repository": st.one_of(st.fixed_dictionaries({"full_name": any_json()}), any_json()),
        "sender": st.one_of(st.fixed_dictionaries({"login": st.text(max_size=300)}), any_json()),
    },
)


@FUZZ
@given(event=EVENTS, value=st.one_of(shaped, any_json()))
def test_signed_payloads_never_5xx(
    fuzz_app: Flask, fuzz_client: FlaskClient, event: str, value: Any
) -> None:
    headers, body = signed_sample(fuzz_app, "gh", json.dumps(value).encode())
    headers["X-GitHub-Event"] = event
    response = fuzz_client.post("/hooks/gh", data=body, headers=headers)
    answer = fuzz_answer(response)
    assert response.status_code in (200, 202, 422), answer
    if response.status_code == 422:
        assert answer is not None and answer["error"] == "invalid_event"


@FUZZ
@given(body=st.binary(max_size=500), event=st.one_of(EVENTS, st.text(LATIN1, max_size=20)))
def test_unsigned_garbage_is_refused(fuzz_client: FlaskClient, body: bytes, event: str) -> None:
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": "d",
    }
    response = fuzz_client.post("/hooks/gh", data=body, headers=headers)
    fuzz_answer(response)
    assert response.status_code in (400, 401)
