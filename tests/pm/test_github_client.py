"""The ``github_issues`` client and target against a loopback fake of GitHub's REST API
(``tests/pm/github_fake.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import redis
from cryptography.hazmat.primitives import serialization
from pydantic import ValidationError
from pytest_httpserver import HTTPServer

from relay.config.models import TargetConfig
from relay.config.people import People, Person
from relay.errors import (
    ConfigError,
    PermanentDeliveryError,
    RetryableDeliveryError,
    TargetThrottled,
)
from relay.events import FileRef, Party
from tests.pm.github_fake import (
    APP_ID,
    INSTALLATION_ID,
    REPO,
    SECONDARY,
    TOKEN,
    FakeGitHub,
    app_key,
)
from tests.workers.support import assert_hidden, assert_registered, build_target, delivery_context
from workers.pm.github_issues import (
    GitHubClient,
    GitHubIssuesOptions,
    GitHubIssuesTarget,
    InstallationTokens,
)
from workers.pm.spec import (
    AmbiguousOutcome,
    Assignee,
    AssigneeRefused,
    TaskRef,
    TaskSpec,
    idempotency_uuid,
    marker_for,
)

KEY = app_key()
PEM = KEY.private_bytes(
    serialization.Encoding.PEM,
    serialization.PrivateFormat.PKCS8,
    serialization.NoEncryption(),
).decode()


@pytest.fixture
def github(threaded_httpserver: HTTPServer) -> Iterator[FakeGitHub]:
    yield FakeGitHub(threaded_httpserver, app=KEY)


def options(fake: FakeGitHub, **extra: Any) -> GitHubIssuesOptions:
    values: dict[str, Any] = {"api_base": fake.base, "repo": REPO, "token": TOKEN, **extra}
    return GitHubIssuesOptions.model_validate(values)


def client(fake: FakeGitHub, *, timeout: float = 5.0, **extra: Any) -> GitHubClient:
    return GitHubClient(options(fake, **extra), timeout=timeout, allow_private=True)


def app_options(fake: FakeGitHub) -> GitHubIssuesOptions:
    return GitHubIssuesOptions(
        api_base=fake.base,
        repo=REPO,
        app_id=APP_ID,
        installation_id=INSTALLATION_ID,
        private_key=PEM,
    )


def spec(delivery: str = "dlv_1", **fields: Any) -> TaskSpec:
    values: dict[str, Any] = {
        "title": "Fix the login timeout",
        "body": "> Fix the login timeout\n— Grace in Ops room",
        "marker": marker_for(delivery),
        "idempotency_key": idempotency_uuid(delivery),
        "labels": ("group-relay", "bug"),
        **fields,
    }
    return TaskSpec(**values)


def hidden(marker: str) -> str:
    return f"<!-- {marker} -->"


# -- create ------------------------------------------------------------------------------


def test_create_sends_the_documented_request(github: FakeGitHub) -> None:
    task_spec = spec(
        assignees=(Assignee("ada", "ada"), Assignee("zed")),
        link="https://chat.example/ops/42",
    )
    task = client(github, labels=["from-chat"]).create(task_spec)

    assert task == TaskRef(
        key="#1",
        id="1",
        url=f"https://github.example/{REPO}/issues/1",
        extra={"node_id": "I_kwDOAAAA0001"},
    )
    (call,) = github.calls("POST", f"/repos/{REPO}/issues")
    headers = call["headers"]
    assert headers["Accept"] == "application/vnd.github+json"
    assert headers["X-Github-Api-Version"] == "2022-11-28"
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    body = call["json"]
    assert body["title"] == "Fix the login timeout"
    assert body["labels"] == ["group-relay", "from-chat", "bug"]
    assert body["assignees"] == ["ada"]  # only people with a login
    assert body["body"].startswith("> Fix the login timeout\n— Grace in Ops room")
    assert "[Chat message](https://chat.example/ops/42)" in body["body"]
    assert body["body"].endswith("\n\n" + hidden(task_spec.marker))


def test_a_title_is_one_line_within_256_and_a_huge_body_is_cut(github: FakeGitHub) -> None:
    client(github).create(spec(title="a\nb " + "x" * 300, body="y" * 70_000))
    issue = github.issues[1]
    assert issue["title"].startswith("a b xx") and len(issue["title"]) == 256
    assert len(issue["body"]) <= 65536 and issue["body"].endswith(hidden(marker_for("dlv_1")))


# -- exactly once ------------------------------------------------------------------------


def test_a_create_that_times_out_after_creating_is_found_by_its_marker(
    github: FakeGitHub,
) -> None:
    github.after_create = "timeout"
    task_spec = spec()

    with pytest.raises(AmbiguousOutcome, match="GitHub may have made the issue"):
        client(github, timeout=0.5).create(task_spec)

    github.after_create = None
    found = client(github).find(task_spec)
    assert found is not None and found.key == "#1"
    assert len(github.issues) == 1 and len(github.calls("POST", "/issues")) == 1
    (listing,) = github.calls("GET", f"/repos/{REPO}/issues")
    assert listing["args"] == {
        "labels": "group-relay",
        "state": "all",
        "sort": "created",
        "direction": "desc",
        "per_page": "50",
        "page": "1",
    }
    assert not [r for r in github.requests if "/search" in r["path"]]


def test_a_502_on_create_is_ambiguous_and_the_issue_is_found(github: FakeGitHub) -> None:
    github.after_create = "502"
    with pytest.raises(AmbiguousOutcome, match="HTTP 502"):
        client(github).create(spec())
    found = client(github).find(spec())
    assert found is not None and found.key == "#1"


def test_find_skips_pull_requests_other_markers_and_reads_two_pages(github: FakeGitHub) -> None:
    task_spec = spec()
    mine = hidden(task_spec.marker)
    assert client(github).find(task_spec) is None

    github.add_issue("ours", f"body\n\n{mine}")
    for n in range(60):  # newer issues push ours onto the second page
        github.add_issue(f"other {n}", f"\n\n{hidden(marker_for(f'dlv_{n + 2}'))}")
    github.add_issue("a pull request quoting it", f"see {mine}", pull_request=True)
    github.add_issue("not labelled", mine, labels=())

    found = client(github).find(task_spec)

    assert found is not None and found.key == "#1"
    pages = [r["args"]["page"] for r in github.calls("GET", f"/repos/{REPO}/issues")]
    assert pages[-2:] == ["1", "2"]


def test_find_reads_no_more_than_two_pages(github: FakeGitHub) -> None:
    task_spec = spec()
    github.add_issue("ours, long ago", hidden(task_spec.marker))
    for n in range(120):
        github.add_issue(f"other {n}")

    assert client(github).find(task_spec) is None
    assert len(github.calls("GET", f"/repos/{REPO}/issues")) == 2


# -- assignees ---------------------------------------------------------------------------


def test_an_unassignable_login_fails_the_create_and_nothing_is_made(github: FakeGitHub) -> None:
    task_spec = spec(assignees=(Assignee("ada", "ada"), Assignee("ghost", "ghost")))

    with pytest.raises(AssigneeRefused) as info:
        client(github).create(task_spec)

    assert info.value.refused == ["ghost"]
    assert "Validation Failed" in info.value.reason
    assert not github.issues
    task = client(github).create(TaskSpec(**{**task_spec.__dict__, "assignees": ()}))
    assert task.key == "#1" and github.issues[1]["assignees"] == []


def test_assign_names_the_logins_github_silently_left_out(github: FakeGitHub) -> None:
    task = client(github).create(spec())

    with pytest.raises(AssigneeRefused) as info:
        client(github).assign(task, ["Ada", "ghost"])

    assert info.value.refused == ["ghost"]
    assert "cannot be assigned in acme/ops" in info.value.reason
    (call,) = github.calls("POST", "/issues/1/assignees")
    assert call["json"] == {"assignees": ["Ada", "ghost"]}
    assert github.issues[1]["assignees"] == [{"login": "ada"}]
    client(github).assign(task, ["bob"])  # all assigned: no complaint
    assert github.issues[1]["assignees"] == [{"login": "ada"}, {"login": "bob"}]


# -- follow-ups --------------------------------------------------------------------------


def test_close_and_reopen_patch_the_state(github: FakeGitHub) -> None:
    task = client(github).create(spec())

    client(github).close(task)
    assert (github.issues[1]["state"], github.issues[1]["state_reason"]) == ("closed", "completed")
    client(github).close(task)  # closing a closed issue changes nothing
    assert github.issues[1]["state"] == "closed"

    client(github).reopen(task)
    assert github.issues[1]["state"] == "open"
    bodies = [c["json"] for c in github.calls("PATCH", "/issues/1")]
    assert bodies[0] == {"state": "closed", "state_reason": "completed"}
    assert bodies[-1]["state"] == "open"


def test_a_comment_carries_its_hidden_marker(github: FakeGitHub) -> None:
    task = client(github).create(spec())
    marker = marker_for("dlv_1", "comment")

    client(github).comment(task, "Closed by Grace in Ops", marker)

    (comment,) = github.comments[1]
    assert comment["body"] == f"Closed by Grace in Ops\n\n{hidden(marker)}"


def test_a_comment_answered_with_a_5xx_is_ambiguous(github: FakeGitHub) -> None:
    task = client(github).create(spec())
    github.fail_next(500)
    with pytest.raises(AmbiguousOutcome, match="HTTP 500"):
        client(github).comment(task, "done", marker_for("dlv_1", "comment"))


def test_lookup_takes_hash_numbers_and_skips_pull_requests(github: FakeGitHub) -> None:
    client(github).create(spec())
    github.add_issue("a pull request", pull_request=True)
    gh = client(github)

    for key in ("#1", "1", " #1 "):
        found = gh.lookup(key)
        assert found is not None and found.key == "#1"
    assert gh.lookup("#2") is None
    assert gh.lookup("#99") is None
    assert gh.lookup("OPS-1") is None


# -- rate limits and failures ------------------------------------------------------------


def test_a_secondary_limit_with_retry_after_throttles_the_target(github: FakeGitHub) -> None:
    github.secondary_limit(after=2, retry_after="42")
    gh = client(github)
    gh.create(spec("dlv_1"))
    gh.create(spec("dlv_2"))

    with pytest.raises(TargetThrottled) as info:
        gh.create(spec("dlv_3"))

    assert info.value.retry_after == 42.0 and info.value.status == 403
    assert "secondary rate limit" in str(info.value)
    assert len(github.issues) == 2


def test_a_secondary_limit_without_headers_waits_a_minute(github: FakeGitHub) -> None:
    github.secondary_limit(after=0, retry_after=None)
    with pytest.raises(TargetThrottled) as info:
        client(github).create(spec())
    assert info.value.retry_after == 60.0
    assert SECONDARY[:40] in str(info.value)


def test_an_exhausted_primary_limit_waits_until_its_reset(github: FakeGitHub) -> None:
    github.exhaust(reset_in=300)
    with pytest.raises(TargetThrottled) as info:
        client(github).find(spec())
    assert info.value.retry_after is not None and 200 < info.value.retry_after <= 301


def test_a_5xx_on_a_read_is_retryable_not_ambiguous(github: FakeGitHub) -> None:
    github.fail_next(502)
    with pytest.raises(RetryableDeliveryError) as info:
        client(github).find(spec())
    assert type(info.value) is RetryableDeliveryError


def test_a_bad_token_is_permanent_with_githubs_words_and_hidden(github: FakeGitHub) -> None:
    wrong = "github_pat_11WRONG0000000000000000000000"
    with pytest.raises(PermanentDeliveryError) as info:
        client(github, token=wrong).create(spec())
    assert str(info.value) == "GitHub refused the token (HTTP 401): Bad credentials"
    assert_hidden(info.value, wrong)


def test_an_unknown_repository_and_disabled_issues_are_named(github: FakeGitHub) -> None:
    with pytest.raises(PermanentDeliveryError, match="repository acme/nope not found or the"):
        client(github, repo="acme/nope").create(spec())
    github.issues_enabled = False
    with pytest.raises(PermanentDeliveryError, match="issues are disabled in acme/ops"):
        client(github).create(spec())


# -- GitHub App --------------------------------------------------------------------------


def test_an_app_token_is_minted_once_and_shared_through_redis(
    github: FakeGitHub, redis_client: redis.Redis
) -> None:
    tokens = InstallationTokens(github.base, APP_ID, INSTALLATION_ID, PEM, True)
    first = GitHubClient(
        app_options(github), timeout=5.0, allow_private=True, state=redis_client, tokens=tokens
    )
    task = first.create(spec())
    other_worker = InstallationTokens(github.base, APP_ID, INSTALLATION_ID, PEM, True)
    second = GitHubClient(
        app_options(github),
        timeout=5.0,
        allow_private=True,
        state=redis_client,
        tokens=other_worker,
    )
    second.close(task)

    assert github.token_calls == 1
    (mint,) = github.calls("POST", f"/app/installations/{INSTALLATION_ID}/access_tokens")
    assert mint["headers"]["Authorization"].startswith("Bearer ey")
    create, close = github.calls("POST", "/issues")[0], github.calls("PATCH", "/issues/1")[0]
    assert create["headers"]["Authorization"] == close["headers"]["Authorization"]
    assert create["headers"]["Authorization"].startswith("Bearer ghs_")
    ttl = redis_client.ttl(tokens.key)
    assert 0 < ttl <= 3600 - 300


def test_a_revoked_app_token_is_replaced_once_and_the_call_repeated(
    github: FakeGitHub, redis_client: redis.Redis
) -> None:
    tokens = InstallationTokens(github.base, APP_ID, INSTALLATION_ID, PEM, True)
    gh = GitHubClient(
        app_options(github), timeout=5.0, allow_private=True, state=redis_client, tokens=tokens
    )
    gh.create(spec())
    github.revoke_app_tokens()

    gh.create(spec("dlv_2"))

    assert github.token_calls == 2 and len(github.issues) == 2


def test_an_app_with_a_wrong_key_is_refused_permanently(github: FakeGitHub) -> None:
    other = (
        app_key()
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        .decode()
    )
    tokens = InstallationTokens(github.base, APP_ID, INSTALLATION_ID, other, True)
    gh = GitHubClient(app_options(github), timeout=5.0, allow_private=True, tokens=tokens)

    with pytest.raises(PermanentDeliveryError, match="refused the app's credentials") as info:
        gh.create(spec())
    assert "A JSON web token could not be decoded" in str(info.value)
    assert not github.issues


# -- options and target ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ({"token": None}, "set token, or all of"),
        ({"app_id": APP_ID}, "not both"),
        ({"token": ""}, "token is empty"),
        ({"repo": "just-a-name"}, "owner/name"),
        ({"token": None, "app_id": "1", "installation_id": 2, "private_key": "nope"}, "PEM"),
    ],
)
def test_options_are_checked(extra: dict[str, Any], problem: str) -> None:
    values = {"repo": REPO, "token": TOKEN, **extra}
    with pytest.raises(ValidationError, match=problem) as info:
        GitHubIssuesOptions.model_validate(values)
    assert TOKEN not in str(info.value)


def test_the_kind_is_registered_on_the_pm_queue() -> None:
    assert_registered(GitHubIssuesTarget, "github_issues", "pm")
    assert GitHubIssuesTarget.default_rate_limits == ("80/min", "500/h")
    assert GitHubIssuesTarget.title_limit == 256
    assert GitHubIssuesTarget.account_platform == "github"


def test_the_target_builds_its_client_from_its_config(
    github: FakeGitHub, redis_client: redis.Redis
) -> None:
    target = build_target(
        GitHubIssuesTarget,
        "ops-github",
        timeout=3.0,
        **app_options(github).model_dump(exclude_none=True),
    )
    gh = target.client(delivery_context(state=redis_client))
    assert gh.timeout == 3.0 and gh.tokens is target.tokens
    assert gh.create(spec()).key == "#1"


def test_a_loopback_api_needs_allow_private() -> None:
    config = TargetConfig(
        id="ops-github",
        kind="github_issues",
        options=GitHubIssuesOptions(api_base="http://127.0.0.1:8080", repo=REPO, token=TOKEN),
    )
    with pytest.raises(ConfigError, match="targets.ops-github.api_base"):
        GitHubIssuesTarget(config)


# -- through the shared flow -------------------------------------------------------------


def test_a_chat_command_becomes_one_issue_that_follow_ups_change(
    github: FakeGitHub, redis_client: redis.Redis
) -> None:
    """The target as the worker runs it: the shared flow, this client, the ledger in
    Redis. One login GitHub refuses fails the whole create; the issue is made without
    the assignees and a comment says who could not be assigned."""
    target = build_target(
        GitHubIssuesTarget, "ops-github", api_base=github.base, repo=REPO, token=TOKEN
    )
    people = People(
        {
            "ada": Person(name="Ada", dingtalk="manager4521", github="ada"),
            "ghost": Person(name="Ghost", dingtalk="u9", github="ghost"),
        }
    )
    mentions = [Party(id="manager4521", name="Ada"), Party(id="u9", name="Ghost")]

    def say(delivery: str, text: str) -> str | None:
        context = delivery_context(
            delivery,
            state=redis_client,
            people=people,
            source_kind="dingtalk_robot",
            text=text,
            mentions=mentions,
        )
        return target.deliver(context).excerpt

    url = f"https://github.example/{REPO}/issues/1"
    assert say("dlv_1", "task Fix the login timeout @Ada @Ghost #bug") == f"created #1 {url}"
    assert list(github.issues) == [1] and github.issues[1]["assignees"] == []
    assert "ghost" in github.comments[1][0]["body"]
    assert [label["name"] for label in github.issues[1]["labels"]] == ["group-relay", "bug"]

    assert say("dlv_2", "assign #1 @Ada") == f"assigned #1 {url}"
    assert github.issues[1]["assignees"] == [{"login": "ada"}]
    assert say("dlv_3", "done #1") == f"closed #1 {url}"
    assert github.issues[1]["state_reason"] == "completed"
    assert len(github.calls("POST", f"/repos/{REPO}/issues")) == 2  # refused, then made once


def test_the_default_body_quotes_the_message_and_links_back_to_it(
    github: FakeGitHub, redis_client: redis.Redis
) -> None:
    """The issue's body: the message quoted, who wrote it where and when, the link to the
    message in the chat app (where the platform has one) and the attached files."""
    target = build_target(
        GitHubIssuesTarget, "ops-github", api_base=github.base, repo=REPO, token=TOKEN
    )
    link = "https://acme.slack.com/archives/C0OPS/p1765000000000100"

    def create(delivery: str, **event: Any) -> str:
        context = delivery_context(
            delivery,
            state=redis_client,
            source_kind="slack",
            text="task Fix the login timeout",
            occurred_at=datetime(2026, 12, 6, 9, 30, tzinfo=UTC),
            files=[FileRef(name="trace.log", size=2048, ref="F1")],
            **event,
        )
        target.deliver(context)
        return str(github.issues[len(github.issues)]["body"])

    assert create("dlv_1", link=link).startswith(
        "> task Fix the login timeout\n— Grace in Ops room, 2026-12-06 09:30 UTC\n"
        f"{link}\nFiles:\n- trace.log (2048 bytes)\n"
    )
    assert create("dlv_2").startswith(  # a platform without links: none
        "> task Fix the login timeout\n— Grace in Ops room, 2026-12-06 09:30 UTC\nFiles:"
    )
