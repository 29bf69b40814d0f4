"""The ``linear`` client and target against a loopback fake of Linear's GraphQL API
(``tests/pm/linear_fake.py``, which validates every operation against a subset of
Linear's schema): the two ``Authorization`` forms, the client-chosen issue id that
makes a retry create nothing, one assignee plus subscribers, workflow states, comments
that are posted once, throttling and errors that never carry the key."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date

import pytest
import redis
from pydantic import ValidationError
from pytest_httpserver import HTTPServer

from relay.config.models import TargetConfig
from relay.config.people import People, Person
from relay.errors import ConfigError, PermanentDeliveryError, TargetThrottled
from relay.events import Party
from tests.pm.linear_fake import API_KEY, ENG_ID, OAUTH_TOKEN, OPS_ID, REVOKED_KEY, FakeLinear
from tests.workers.support import assert_hidden, assert_registered, build_target, delivery_context
from workers.pm.linear import LinearClient, LinearOptions, LinearTarget
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
def linear(threaded_httpserver: HTTPServer) -> Iterator[FakeLinear]:
    yield FakeLinear(threaded_httpserver)


def client(
    fake: FakeLinear,
    *,
    authorization: str = API_KEY,
    team_id: str | None = ENG_ID,
    team_key: str | None = None,
    timeout: float = 5.0,
    state: redis.Redis | None = None,
    **extra: str,
) -> LinearClient:
    return LinearClient(
        authorization=authorization,
        team_id=team_id,
        team_key=team_key,
        timeout=timeout,
        allow_private=True,
        api_base=fake.base,
        state=state,
        **extra,
    )


def spec(delivery: str = "dlv_1", **fields: object) -> TaskSpec:
    values: dict[str, object] = {
        "title": "Fix the login timeout",
        "body": "> Fix the login timeout\n— Grace in Ops room",
        "marker": marker_for(delivery),
        "idempotency_key": idempotency_uuid(delivery),
        "labels": ("group-relay", "bug"),
        **fields,
    }
    return TaskSpec(**values)  # type: ignore[arg-type]


def test_create_sends_the_client_chosen_id_and_the_documented_input(linear: FakeLinear) -> None:
    task_spec = spec(
        assignees=(Assignee("ada", "u-ada"), Assignee("bob", "u-bob")),
        due=date(2026, 12, 10),
        priority="p1",
        link="https://chat.example.com/m/1",
    )
    task = client(linear).create(task_spec)

    assert task == TaskRef(
        key="ENG-1",
        id=task_spec.idempotency_key,
        url="https://linear.app/acme/issue/eng-1",
        extra={"team": ENG_ID},
    )
    create = linear.requests[-1]
    assert create["operationName"] == "GroupRelayIssueCreate"
    assert create["authorization"] == API_KEY  # a personal key goes bare, no "Bearer"
    sent = create["variables"]["input"]
    assert sent["id"] == task_spec.idempotency_key
    assert sent["teamId"] == ENG_ID
    assert sent["assigneeId"] == "u-ada"
    assert sent["subscriberIds"] == ["u-bob"]  # Linear has one assignee
    assert sent["dueDate"] == "2026-12-10"
    assert sent["priority"] == 1
    assert sent["description"].endswith(f"`{task_spec.marker}`")
    assert "[Message in chat](https://chat.example.com/m/1)" in sent["description"]
    issue = linear.issues[task_spec.idempotency_key]
    assert issue["assignee"]["id"] == "u-ada"
    assert [s["id"] for s in issue["subscribers"]["nodes"]] == ["u-bob"]


def test_an_oauth_token_goes_as_bearer(linear: FakeLinear) -> None:
    client(linear, authorization=f"Bearer {OAUTH_TOKEN}").create(spec())

    assert linear.requests[-1]["authorization"] == f"Bearer {OAUTH_TOKEN}"
    assert len(linear.issues) == 1


@pytest.mark.parametrize(
    ("authorization", "kind"),
    [(f"Bearer {API_KEY}", "OAuth token"), (OAUTH_TOKEN, "API key"), (REVOKED_KEY, "API key")],
)
def test_a_refused_credential_is_permanent_and_hidden(
    linear: FakeLinear, authorization: str, kind: str
) -> None:
    with pytest.raises(PermanentDeliveryError, match=f"Linear refused the {kind}") as error:
        client(linear, authorization=authorization).find(spec())

    assert "Authentication required" in str(error.value)
    assert_hidden(error.value, API_KEY, OAUTH_TOKEN, REVOKED_KEY)


def test_a_create_that_times_out_is_found_by_its_id_and_not_repeated(linear: FakeLinear) -> None:
    linear.after_create = "timeout"
    task_spec = spec()

    with pytest.raises(AmbiguousOutcome, match="creating the issue"):
        client(linear, timeout=0.5).create(task_spec)

    linear.after_create = None
    found = client(linear).find(task_spec)
    assert found is not None and found.key == "ENG-1"
    assert client(linear).find(spec("dlv_other")) is None
    assert len(linear.issues) == 1


def test_a_second_create_with_the_same_id_is_taken_as_done(linear: FakeLinear) -> None:
    linear.after_create = "502"
    task_spec = spec()
    with pytest.raises(AmbiguousOutcome, match="HTTP 502"):
        client(linear).create(task_spec)

    linear.after_create = None
    again = client(linear).create(task_spec)  # Linear refuses the id; the issue is found

    assert again.key == "ENG-1"
    assert len(linear.issues) == 1
    assert linear.operations()[-2:] == ["GroupRelayIssueCreate", "GroupRelayIssue"]


def test_an_unknown_assignee_is_refused_when_nothing_was_created(linear: FakeLinear) -> None:
    with pytest.raises(AssigneeRefused) as refused:
        client(linear).create(spec(assignees=(Assignee("zed", "u-zed"),)))

    assert refused.value.refused == ["zed"]
    assert "Entity not found: User" in refused.value.reason
    assert linear.issues == {}
    assert client(linear).create(spec()).key == "ENG-1"  # what the flow does next


def test_team_key_is_resolved_once_and_cached_in_redis(
    linear: FakeLinear, redis_client: redis.Redis
) -> None:
    client(linear, team_id=None, team_key="ENG", state=redis_client).create(spec("dlv_1"))
    client(linear, team_id=None, team_key="ENG", state=redis_client).create(spec("dlv_2"))

    assert linear.operations().count("GroupRelayTeamByKey") == 1
    assert {i["identifier"] for i in linear.issues.values()} == {"ENG-1", "ENG-2"}
    cached = redis_client.keys("relay:linear:team:*")
    assert sorted(k.rsplit(b":", 1)[1] for k in cached) == [ENG_ID.encode(), b"ENG"]
    assert all(API_KEY.encode() not in k for k in cached)
    assert 0 < redis_client.ttl(cached[0]) <= 3600


def test_close_and_reopen_move_to_the_teams_states(linear: FakeLinear) -> None:
    task = client(linear).create(spec())

    client(linear).close(task)
    assert linear.issues[task.id]["state"]["name"] == "Done"
    client(linear).reopen(task)
    assert linear.issues[task.id]["state"]["name"] == "Todo"

    named = client(linear, done_state="canceled", reopen_state="In Progress")
    named.close(task)
    assert linear.issues[task.id]["state"]["name"] == "Canceled"
    named.reopen(task)
    assert linear.issues[task.id]["state"]["name"] == "In Progress"


def test_a_state_name_the_team_lacks_is_permanent_and_lists_its_states(
    linear: FakeLinear,
) -> None:
    task = client(linear).create(spec())

    with pytest.raises(PermanentDeliveryError, match="no a state named 'Shipped'") as error:
        client(linear, done_state="Shipped").close(task)
    assert "Backlog, Todo, In Progress" in str(error.value)


def test_lookup_takes_an_identifier_and_closes_in_the_issues_own_team(
    linear: FakeLinear,
) -> None:
    ops_issue = client(linear, team_id=OPS_ID).create(spec())

    found = client(linear).lookup("OPS-1")  # a client of team ENG
    assert found is not None and found.id == ops_issue.id
    assert client(linear).lookup("ENG-404") is None

    client(linear).close(TaskRef(key="OPS-1", id=ops_issue.id))  # extra lost: read the issue
    assert linear.issues[ops_issue.id]["state"]["id"] == "ops-state-4"


def test_assign_replaces_the_assignee_and_subscribes_the_rest(linear: FakeLinear) -> None:
    task = client(linear).create(spec(assignees=(Assignee("ada", "u-ada"),)))

    client(linear).assign(task, ["u-bob", "u-cyd"])

    issue = linear.issues[task.id]
    assert issue["assignee"]["id"] == "u-bob"
    assert {s["id"] for s in issue["subscribers"]["nodes"]} == {"u-ada", "u-cyd"}
    with pytest.raises(AssigneeRefused) as refused:
        client(linear).assign(task, ["u-zed"])
    assert refused.value.refused == ["u-zed"]
    assert issue["assignee"]["id"] == "u-bob"


def test_a_comment_has_an_id_from_its_marker_and_is_posted_once(linear: FakeLinear) -> None:
    task = client(linear).create(spec())
    marker = marker_for("dlv_1", "comment")

    client(linear).comment(task, "the fix is in #45", marker)
    client(linear).comment(task, "the fix is in #45", marker)  # a retry: refused, found

    [comment] = linear.comments.values()
    assert comment["id"] == idempotency_uuid(marker)
    assert comment["body"] == f"the fix is in #45\n\n`{marker}`"
    assert comment["issue"]["id"] == task.id


def test_ratelimited_throttles_the_target_until_the_bucket_resets(linear: FakeLinear) -> None:
    linear.ratelimit(1, reset_in=30)

    with pytest.raises(TargetThrottled, match="RATELIMITED|Rate limit") as throttled:
        client(linear).create(spec())

    wait = throttled.value.retry_after
    assert wait is not None and 1 <= wait <= 30
    assert linear.issues == {}
    assert client(linear).create(spec()).key == "ENG-1"


def test_other_graphql_errors_keep_linears_message(linear: FakeLinear) -> None:
    with pytest.raises(PermanentDeliveryError, match="no team") as error:
        client(linear, team_id="00000000-0000-4000-8000-000000000000").create(spec())
    assert_hidden(error.value, API_KEY)

    with pytest.raises(PermanentDeliveryError, match="no team with key NOPE"):
        client(linear, team_id=None, team_key="NOPE").create(spec())


def test_every_operation_the_client_sends_is_valid_against_the_schema(
    linear: FakeLinear,
) -> None:
    """The fake answers 400 GRAPHQL_VALIDATION_FAILED to a field Linear lacks; a full
    round of the client's operations passes."""
    made = client(linear, team_id=None, team_key="ENG")
    task = made.create(spec(assignees=(Assignee("ada", "u-ada"),)))
    made.find(spec())
    made.lookup("ENG-1")
    made.assign(task, ["u-bob"])
    made.close(task)
    made.reopen(task)
    made.comment(task, "hi", marker_for("dlv_1", "comment"))
    made.comment_exists(idempotency_uuid("none"))

    assert set(linear.operations()) == {
        "GroupRelayTeamByKey",
        "GroupRelayIssueCreate",
        "GroupRelayIssue",
        "GroupRelayIssueUpdate",
        "GroupRelayCommentCreate",
        "GroupRelayComment",
    }


# -- the target ------------------------------------------------------------------------


def test_the_kind_is_registered_on_the_pm_queue() -> None:
    assert_registered(LinearTarget, "linear", "pm")
    assert LinearTarget.key_pattern == r"[A-Z][A-Z0-9]+-\d+"
    assert LinearTarget.account_platform == "linear"


def test_the_target_builds_its_client_from_options(
    linear: FakeLinear, redis_client: redis.Redis
) -> None:
    target = build_target(
        LinearTarget,
        "eng-linear",
        timeout=3.0,
        oauth_token=OAUTH_TOKEN,
        team_key="eng",
        api_base=linear.base + "/graphql",
    )
    made = target.client(delivery_context(state=redis_client))

    assert made.authorization == f"Bearer {OAUTH_TOKEN}"
    assert made.timeout == 3.0 and made.redis is redis_client
    assert made.create(spec()).key == "ENG-1"

    with_key = build_target(
        LinearTarget, "eng", api_key=API_KEY, team_id=ENG_ID, api_base=linear.base
    )
    assert with_key.client(delivery_context()).create(spec("dlv_2")).key == "ENG-2"
    assert linear.requests[-1]["authorization"] == API_KEY


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"team_id": ENG_ID}, "exactly one of api_key and oauth_token"),
        ({"api_key": API_KEY, "oauth_token": OAUTH_TOKEN, "team_id": ENG_ID}, "exactly one"),
        ({"api_key": API_KEY}, "exactly one of team_id and team_key"),
        ({"api_key": f"Bearer {API_KEY}", "team_id": ENG_ID}, "without"),
        ({"api_key": API_KEY, "team_key": "E-NG"}, "team key"),
    ],
)
def test_options_are_checked_without_showing_secrets(options: dict[str, str], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem) as error:
        LinearOptions.model_validate(options)
    assert API_KEY not in str(error.value)


def test_a_loopback_api_needs_allow_private() -> None:
    options = LinearOptions.model_validate(
        {"api_key": API_KEY, "team_id": ENG_ID, "api_base": "http://127.0.0.1:9"}
    )
    config = TargetConfig(id="lin", kind="linear", allow_private=False, options=options)
    with pytest.raises(ConfigError, match="api_base"):
        LinearTarget(config)
    assert API_KEY not in repr(options)


def test_a_chat_command_becomes_one_issue_even_when_the_answer_is_lost(
    linear: FakeLinear, redis_client: redis.Redis
) -> None:
    """Through the shared flow: the first attempt's create times out after Linear made
    the issue; the retry finds it by the id the relay chose and creates nothing."""
    target = build_target(
        LinearTarget,
        "eng-linear",
        timeout=0.5,
        api_key=API_KEY,
        team_key="ENG",
        api_base=linear.base,
    )
    people = People({"ada": Person(name="Ada", slack="U01ADA", linear="u-ada")})

    def attempt(n: int) -> DeliveryContext:
        return delivery_context(
            "dlv_cmd",
            attempt=n,
            state=redis_client,
            people=people,
            source_kind="slack",
            text="task Fix the login timeout @ada due:2026-12-10 p2",
            mentions=[Party(id="U01ADA", name="ada")],
        )

    linear.after_create = "timeout"
    with pytest.raises(AmbiguousOutcome):
        target.deliver(attempt(1))
    linear.after_create = None
    result = target.deliver(attempt(2))

    assert result.excerpt == "created ENG-1 https://linear.app/acme/issue/eng-1"
    [issue] = linear.issues.values()
    assert issue["id"] == idempotency_uuid("dlv_cmd")
    assert issue["title"] == "Fix the login timeout"
    assert issue["assignee"]["id"] == "u-ada"
    assert issue["dueDate"] == "2026-12-10" and issue["priority"] == 2
    assert linear.operations().count("GroupRelayIssueCreate") == 1
