"""The ``gitlab_issues`` client and target against a loopback fake of GitLab's API v4
(``tests/pm/gitlab_fake.py``): request shapes, the marker lookup that makes a retry
after a lost answer create nothing, assignees GitLab drops, follow-ups, throttling and
errors that carry GitLab's words but never the token."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date

import pytest
import redis
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
from relay.events import Party
from tests.pm.gitlab_fake import (
    PROJECT_ID,
    PROJECT_PATH,
    READ_ONLY_TOKEN,
    REVOKED_TOKEN,
    TOKEN,
    FakeGitLab,
)
from tests.workers.support import assert_hidden, assert_registered, build_target, delivery_context
from workers.pm.gitlab_issues import GitLabClient, GitLabIssuesOptions, GitLabIssuesTarget
from workers.pm.spec import (
    AmbiguousOutcome,
    Assignee,
    AssigneeRefused,
    TaskRef,
    TaskSpec,
    idempotency_uuid,
    marker_for,
)
from workers.targets.base import DeliveryContext


@pytest.fixture
def gitlab(threaded_httpserver: HTTPServer) -> Iterator[FakeGitLab]:
    yield FakeGitLab(threaded_httpserver)


def client(
    fake: FakeGitLab, *, token: str = TOKEN, project: str = PROJECT_PATH, **extra: object
) -> GitLabClient:
    return GitLabClient(
        base_url=fake.base,
        token=token,
        project=project,
        timeout=extra.pop("timeout", 5.0),  # type: ignore[arg-type]
        allow_private=True,
        **extra,  # type: ignore[arg-type]
    )


def spec(delivery: str = "dlv_1", **fields: object) -> TaskSpec:
    values: dict[str, object] = {
        "title": "Fix the login timeout",
        "body": "> Fix the login timeout\n— Grace in Ops room",
        "marker": marker_for(delivery),
        "idempotency_key": idempotency_uuid(delivery),
        "labels": ("group-relay", "ops", "bug"),
        **fields,
    }
    return TaskSpec(**values)  # type: ignore[arg-type]


def test_create_sends_the_documented_request(gitlab: FakeGitLab) -> None:
    task_spec = spec(
        assignees=(Assignee("ada", "7"),),
        due=date(2026, 12, 10),
        link="https://chat.example.com/m/1",
    )
    task = client(gitlab).create(task_spec)

    assert task == TaskRef(
        key="#1",
        id="1",
        url=f"{gitlab.base}/{PROJECT_PATH}/-/issues/1",
        extra={"project": PROJECT_PATH},
    )
    [request] = gitlab.requests
    assert request["method"] == "POST"
    assert request["path"] == "/api/v4/projects/acme%2Fops/issues"  # the path URL-encoded
    assert request["headers"]["Private-Token"] == TOKEN
    assert "Authorization" not in request["headers"]
    body = request["json"]
    assert body["title"] == "Fix the login timeout"
    assert body["labels"] == "group-relay,ops,bug"
    assert body["assignee_ids"] == [7]
    assert body["due_date"] == "2026-12-10"
    assert body["description"].endswith(f"<!-- {task_spec.marker} -->")
    assert "[Message in chat](https://chat.example.com/m/1)" in body["description"]
    assert gitlab.issues[1]["assignees"][0]["username"] == "ada"


def test_a_numeric_project_id_and_the_relay_label_are_always_used(gitlab: FakeGitLab) -> None:
    task = client(gitlab, project=str(PROJECT_ID)).create(spec(labels=("needs, triage",)))

    assert task.key == "#1"
    assert gitlab.requests[0]["path"] == f"/api/v4/projects/{PROJECT_ID}/issues"
    # a comma would split the label in two, and find lists by group-relay
    assert gitlab.issues[1]["labels"] == ["group-relay", "needs triage"]


def test_priority_labels_map_p1_to_a_label_only_when_configured(gitlab: FakeGitLab) -> None:
    client(gitlab).create(spec(priority="p1"))
    client(gitlab, priority_labels={"p1": "priority::1"}).create(spec("dlv_2", priority="p1"))

    assert "priority::1" not in gitlab.issues[1]["labels"]
    assert "priority::1" in gitlab.issues[2]["labels"]


def test_a_create_that_times_out_after_creating_is_found_and_not_repeated(
    gitlab: FakeGitLab,
) -> None:
    gitlab.after_create = "timeout"
    task_spec = spec()
    slow = client(gitlab, timeout=0.5)

    with pytest.raises(AmbiguousOutcome, match="creating the issue"):
        slow.create(task_spec)

    gitlab.after_create = None
    found = client(gitlab).find(task_spec)
    assert found is not None and found.key == "#1"
    assert len(gitlab.issues) == 1
    assert len(gitlab.posted("/issues")) == 1
    listing = gitlab.requests[-1]
    assert listing["method"] == "GET"
    assert listing["args"] == {
        "labels": "group-relay",
        "state": "all",
        "order_by": "created_at",
        "sort": "desc",
        "per_page": "50",
        "page": "1",
        "scope": "all",
    }


def test_a_502_on_create_is_ambiguous_and_the_issue_is_found(gitlab: FakeGitLab) -> None:
    gitlab.after_create = "502"
    task_spec = spec()

    with pytest.raises(AmbiguousOutcome, match="HTTP 502"):
        client(gitlab).create(task_spec)

    assert client(gitlab).find(task_spec) is not None


def test_find_matches_only_its_own_marker_closed_issues_included(gitlab: FakeGitLab) -> None:
    gitlab.add_issue("someone else's", description="no marker", labels="group-relay")
    mine = client(gitlab).create(spec("dlv_mine"))
    client(gitlab).close(mine)
    for n in range(60):  # newer relay issues push it to the second page
        gitlab.add_issue(
            f"later {n}", description=f"<!-- {marker_for(f'x{n}')} -->", labels="group-relay"
        )

    found = client(gitlab).find(spec("dlv_mine"))

    assert found is not None and found.key == mine.key
    assert client(gitlab).find(spec("dlv_never_created")) is None


def test_assignees_gitlab_drops_are_named_after_a_create(gitlab: FakeGitLab) -> None:
    task = client(gitlab).create(spec(assignees=(Assignee("ada", "7"), Assignee("zed", "99"))))

    assert [a["id"] for a in gitlab.issues[1]["assignees"]] == [7]
    assert task.extra["unassigned"] == "zed"
    assert "did not assign" in task.extra["unassigned_reason"]


def test_gitlab_free_keeps_only_the_first_assignee_and_that_is_said(
    threaded_httpserver: HTTPServer,
) -> None:
    fake = FakeGitLab(threaded_httpserver, multiple_assignees=False)

    task = client(fake).create(spec(assignees=(Assignee("ada", "7"), Assignee("bob", "8"))))

    assert task.extra["unassigned"] == "bob"


def test_an_account_that_is_not_a_user_id_is_refused_before_anything_is_created(
    gitlab: FakeGitLab,
) -> None:
    with pytest.raises(AssigneeRefused) as refused:
        client(gitlab).create(spec(assignees=(Assignee("ada", "ada@example.com"),)))

    assert refused.value.refused == ["ada"]
    assert gitlab.issues == {}


def test_assign_adds_to_the_assignees_and_names_the_ones_gitlab_dropped(
    gitlab: FakeGitLab,
) -> None:
    task = client(gitlab).create(spec(assignees=(Assignee("ada", "7"),)))

    with pytest.raises(AssigneeRefused) as refused:
        client(gitlab).assign(task, ["8", "99"])

    assert refused.value.refused == ["99"]
    assert [a["id"] for a in gitlab.issues[1]["assignees"]] == [7, 8]
    assert gitlab.requests[-1]["json"] == {"assignee_ids": [7, 8, 99]}
    client(gitlab).assign(task, ["8"])  # all assigned: no complaint


def test_close_and_reopen_use_state_event_and_the_done_label(gitlab: FakeGitLab) -> None:
    gitlab_client = client(gitlab, done_label="done")
    task = gitlab_client.create(spec())

    gitlab_client.close(task)
    assert gitlab.issues[1]["state"] == "closed"
    assert "done" in gitlab.issues[1]["labels"]
    assert gitlab.requests[-1]["json"] == {"state_event": "close", "add_labels": "done"}

    gitlab_client.reopen(task)
    assert gitlab.issues[1]["state"] == "opened"
    assert "done" not in gitlab.issues[1]["labels"]


def test_lookup_reads_an_issue_by_its_number(gitlab: FakeGitLab) -> None:
    created = client(gitlab).create(spec())

    assert client(gitlab).lookup("#1") == TaskRef(
        key="#1", id="1", url=created.url, extra={"project": PROJECT_PATH}
    )
    assert client(gitlab).lookup("1") is not None
    assert client(gitlab).lookup("#404") is None
    assert client(gitlab).lookup("OPS-1") is None


def test_a_comment_carries_its_marker_and_is_posted_once(gitlab: FakeGitLab) -> None:
    task = client(gitlab).create(spec())
    marker = marker_for("dlv_1", "comment")

    client(gitlab).comment(task, "the fix is in !45", marker)
    client(gitlab).comment(task, "the fix is in !45", marker)  # a retry

    [note] = gitlab.notes[1]
    assert note["body"] == f"the fix is in !45\n\n<!-- {marker} -->"
    client(gitlab).comment(task, "another", marker_for("dlv_2", "comment"))
    assert len(gitlab.notes[1]) == 2


def test_a_429_throttles_the_target_for_retry_after(gitlab: FakeGitLab) -> None:
    gitlab.throttle(1, retry_after="17")
    with pytest.raises(TargetThrottled) as throttled:
        client(gitlab).create(spec())
    assert throttled.value.retry_after == 17
    assert gitlab.issues == {}

    gitlab.throttle(1, retry_after=None)
    with pytest.raises(TargetThrottled) as throttled:
        client(gitlab).find(spec())
    assert throttled.value.retry_after == 60


def test_a_5xx_on_a_read_is_retryable_not_ambiguous(gitlab: FakeGitLab) -> None:
    gitlab.fail_next(503)
    with pytest.raises(RetryableDeliveryError) as error:
        client(gitlab).lookup("#1")
    assert type(error.value) is RetryableDeliveryError


def test_a_revoked_token_is_permanent_with_gitlabs_words_and_hidden(
    gitlab: FakeGitLab,
) -> None:
    with pytest.raises(PermanentDeliveryError, match="Token was revoked") as error:
        client(gitlab, token=REVOKED_TOKEN).create(spec())
    assert "HTTP 401" in str(error.value)
    assert_hidden(error.value, REVOKED_TOKEN)

    with pytest.raises(PermanentDeliveryError, match="401 Unauthorized") as error:
        client(gitlab, token="glpat-wrong").find(spec())
    assert_hidden(error.value, "glpat-wrong")


def test_an_unknown_project_is_named(gitlab: FakeGitLab) -> None:
    with pytest.raises(PermanentDeliveryError, match="project acme/nope") as error:
        client(gitlab, project="acme/nope").create(spec())
    assert "404 Project Not Found" in str(error.value)


def test_a_token_without_the_api_scope_is_refused_with_a_hint(gitlab: FakeGitLab) -> None:
    with pytest.raises(PermanentDeliveryError, match="insufficient_scope") as error:
        client(gitlab, token=READ_ONLY_TOKEN).create(spec())
    assert "api scope" in str(error.value)
    assert_hidden(error.value, READ_ONLY_TOKEN)


def test_a_validation_error_keeps_gitlabs_message(gitlab: FakeGitLab) -> None:
    with pytest.raises(PermanentDeliveryError, match="title is too long") as error:
        client(gitlab).create(spec(title="x" * 300))
    assert "HTTP 400" in str(error.value)


# -- the target ------------------------------------------------------------------------


def test_the_kind_is_registered_on_the_pm_queue() -> None:
    assert_registered(GitLabIssuesTarget, "gitlab_issues", "pm")
    assert GitLabIssuesTarget.title_limit == 255
    assert GitLabIssuesTarget.account_platform == "gitlab"


def test_the_target_builds_its_client_from_options(gitlab: FakeGitLab) -> None:
    target = build_target(
        GitLabIssuesTarget,
        "ops-gitlab",
        timeout=3.0,
        token=TOKEN,
        project=PROJECT_ID,
        base_url=gitlab.base + "/api/v4/",
        done_label="done",
    )
    made = target.client(delivery_context())

    assert made.api == f"{gitlab.base}/api/v4/projects/{PROJECT_ID}"
    assert made.timeout == 3.0 and made.allow_private is True
    assert made.create(spec()).key == "#1"


def test_a_loopback_instance_needs_allow_private() -> None:
    options = GitLabIssuesOptions.model_validate(
        {"token": TOKEN, "project": PROJECT_PATH, "base_url": "http://127.0.0.1:8929"}
    )
    config = TargetConfig(id="gl", kind="gitlab_issues", allow_private=False, options=options)
    with pytest.raises(ConfigError, match="base_url"):
        GitLabIssuesTarget(config)


def test_the_token_never_shows_in_option_errors() -> None:
    with pytest.raises(ValidationError) as error:
        GitLabIssuesOptions.model_validate({"token": TOKEN, "project": "", "extra": 1})
    assert TOKEN not in str(error.value)
    assert TOKEN not in repr(GitLabIssuesOptions(token=TOKEN, project="1"))


def test_a_chat_command_becomes_one_issue_even_when_the_answer_is_lost(
    gitlab: FakeGitLab, redis_client: redis.Redis
) -> None:
    """Through the shared flow: the first attempt's create times out after GitLab made
    the issue; the retry finds it by its marker and creates nothing."""
    target = build_target(
        GitLabIssuesTarget,
        "ops-gitlab",
        timeout=0.5,
        token=TOKEN,
        project=PROJECT_PATH,
        base_url=gitlab.base,
    )
    people = People({"ada": Person(name="Ada", slack="U01ADA", gitlab="7")})

    def attempt(n: int) -> DeliveryContext:
        return delivery_context(
            "dlv_cmd",
            attempt=n,
            state=redis_client,
            people=people,
            source_kind="slack",
            text="task Fix the login timeout @ada due:2026-12-10 #bug",
            mentions=[Party(id="U01ADA", name="ada")],
        )

    gitlab.after_create = "timeout"
    with pytest.raises(AmbiguousOutcome):
        target.deliver(attempt(1))
    gitlab.after_create = None
    result = target.deliver(attempt(2))

    assert result.excerpt == f"created #1 {gitlab.base}/{PROJECT_PATH}/-/issues/1"
    [issue] = gitlab.issues.values()
    assert issue["title"] == "Fix the login timeout"
    assert [a["id"] for a in issue["assignees"]] == [7]
    assert issue["due_date"] == "2026-12-10"
    assert {"group-relay", "bug"} <= set(issue["labels"])
    assert len(gitlab.posted("/issues")) == 1
