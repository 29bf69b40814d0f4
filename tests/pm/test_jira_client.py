"""The ``jira`` client and target against a loopback fake of Jira's REST API
(``tests/pm/jira_fake.py``), and the ADF builder it sends descriptions with."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import replace
from datetime import date
from typing import Any

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
from tests.pm.jira_fake import (
    ADA,
    ADF_REFUSAL,
    API_TOKEN,
    BOB,
    EMAIL,
    NOT_ASSIGNABLE,
    PAT,
    FakeJira,
)
from tests.workers.support import assert_hidden, assert_registered, build_target, delivery_context
from workers.pm import adf
from workers.pm.jira import JiraClient, JiraOptions, JiraTarget, delivery_label
from workers.pm.spec import (
    AmbiguousOutcome,
    Assignee,
    AssigneeRefused,
    TaskSpec,
    idempotency_uuid,
    marker_for,
)

BASIC = "Basic " + base64.b64encode(f"{EMAIL}:{API_TOKEN}".encode()).decode()


@pytest.fixture
def jira(threaded_httpserver: HTTPServer) -> Iterator[FakeJira]:
    yield FakeJira(threaded_httpserver)


def options(fake: FakeJira, **extra: Any) -> JiraOptions:
    values: dict[str, Any] = {
        "base_url": fake.base,
        "email": EMAIL,
        "api_token": API_TOKEN,
        "project": "OPS",
        **extra,
    }
    return JiraOptions.model_validate(values)


def client(fake: FakeJira, *, timeout: float = 5.0, **extra: Any) -> JiraClient:
    return JiraClient(options(fake, **extra), timeout=timeout, allow_private=True)


def spec(delivery: str = "dlv_1", **fields: Any) -> TaskSpec:
    values: dict[str, Any] = {
        "title": "Fix the login timeout",
        "body": "> Fix the login timeout @ada\n— Grace in Ops room\n\nFiles:\n- trace.log",
        "marker": marker_for(delivery),
        "idempotency_key": idempotency_uuid(delivery),
        "labels": ("group-relay", "ops", "bug"),
        **fields,
    }
    return TaskSpec(**values)


# -- create ------------------------------------------------------------------------------


def test_create_sends_an_adf_description_labels_and_basic_auth(jira: FakeJira) -> None:
    task_spec = spec(
        assignees=(Assignee("ada", ADA), Assignee("bob", BOB)),
        due=date(2026, 12, 10),
        priority="p1",
        link="https://chat.example/ops/msg/42",
    )
    task = client(jira, priorities={"p1": "Highest"}, labels=["from chat"]).create(task_spec)

    assert (task.key, task.id, task.url) == ("OPS-1", "10001", f"{jira.base}/browse/OPS-1")
    (call,) = jira.calls("POST", "/rest/api/3/issue")
    assert call["headers"]["Authorization"] == BASIC
    assert call["headers"]["Content-Type"] == "application/json"
    fields = call["json"]["fields"]
    assert fields["project"] == {"key": "OPS"}
    assert fields["issuetype"] == {"name": "Task"}
    assert fields["summary"] == "Fix the login timeout"
    assert fields["labels"] == [
        "group-relay",
        delivery_label(task_spec.marker),
        "from_chat",
        "ops",
        "bug",
    ]
    assert delivery_label(task_spec.marker) == "gr-" + task_spec.marker.split(":")[1]
    assert fields["assignee"] == {"accountId": ADA}  # one assignee: the first named
    assert fields["duedate"] == "2026-12-10"
    assert fields["priority"] == {"name": "Highest"}
    description = fields["description"]
    assert description["type"] == "doc" and description["version"] == 1
    kinds = [block["type"] for block in description["content"]]
    assert kinds == ["blockquote", "paragraph", "paragraph", "bulletList", "paragraph", "paragraph"]
    marker = description["content"][-1]["content"][0]
    assert marker["text"] == task_spec.marker
    assert {"type": "subsup", "attrs": {"type": "sub"}} in marker["marks"]
    text = adf.plain_text(description)
    assert "Chat message: https://chat.example/ops/msg/42" in text
    assert "trace.log" in text


def test_a_plain_string_description_is_refused_by_v3_with_jiras_words(jira: FakeJira) -> None:
    """What a client that forgot ADF would meet: the fake answers as Cloud does."""
    plain = client(jira)
    plain.text = lambda body, marker, link=None: f"{body}\n{marker}"  # type: ignore[method-assign]

    with pytest.raises(PermanentDeliveryError) as info:
        plain.create(spec())

    assert str(info.value) == (f"Jira refused the issue (HTTP 400): description: {ADF_REFUSAL}")
    assert info.value.status == 400
    assert not jira.issues


def test_api_version_2_sends_wiki_text_to_the_v2_endpoint(jira: FakeJira) -> None:
    task_spec = spec()
    task = client(jira, api_version=2).create(task_spec)

    (call,) = jira.calls("POST", "/rest/api/2/issue")
    description = call["json"]["fields"]["description"]
    assert isinstance(description, str)
    assert description.startswith("> Fix the login timeout")
    assert description.endswith("{color:#97a0af}~" + task_spec.marker + "~{color}")
    assert task.key == "OPS-1"
    assert client(jira, api_version=2).find(task_spec) == task
    assert jira.calls("POST", "/rest/api/2/search/jql")


def test_a_long_multi_line_title_becomes_one_line_within_255(jira: FakeJira) -> None:
    client(jira).create(spec(title="first line\nsecond " + "x" * 400))
    summary = jira.issues["OPS-1"]["fields"]["summary"]
    assert summary.startswith("first line second xx") and len(summary) == 255


# -- exactly once ------------------------------------------------------------------------


def test_a_create_that_times_out_after_creating_is_found_by_its_label(jira: FakeJira) -> None:
    jira.after_create = "timeout"
    task_spec = spec()

    with pytest.raises(AmbiguousOutcome, match="Jira may have made the issue"):
        client(jira, timeout=0.5).create(task_spec)

    jira.after_create = None
    found = client(jira).find(task_spec)
    assert found is not None and found.key == "OPS-1"
    assert found.url == f"{jira.base}/browse/OPS-1"
    assert len(jira.issues) == 1 and len(jira.calls("POST", "/rest/api/3/issue")) == 1
    (search,) = jira.calls("POST", "/rest/api/3/search/jql")
    assert search["json"]["jql"] == f'labels = "{delivery_label(task_spec.marker)}"'
    assert search["json"]["fields"] == ["summary"]
    assert not jira.calls("POST", "/rest/api/3/search") and not jira.calls("GET", "/search")


def test_a_502_on_create_is_ambiguous_and_a_503_carries_retry_after(jira: FakeJira) -> None:
    jira.after_create = "502"
    with pytest.raises(AmbiguousOutcome, match="HTTP 502"):
        client(jira).create(spec())
    assert client(jira).find(spec()) is not None

    jira.fail_next(503, retry_after="30")
    with pytest.raises(AmbiguousOutcome) as info:
        client(jira).create(spec("dlv_2"))
    assert info.value.retry_after == 30.0


def test_find_is_none_for_another_delivery_and_picks_the_first_made(jira: FakeJira) -> None:
    task_spec = spec()
    assert client(jira).find(task_spec) is None
    label = delivery_label(task_spec.marker)
    jira.add_issue("first", "group-relay", label)
    jira.add_issue("unrelated", "group-relay")
    jira.add_issue("a duplicate made by hand", "group-relay", label)

    found = client(jira).find(task_spec)

    assert found is not None and found.key == "OPS-1"
    assert client(jira).find(spec("dlv_other")) is None


def test_data_center_uses_bearer_v2_legacy_search_and_user_names(
    threaded_httpserver: HTTPServer,
) -> None:
    jira = FakeJira(threaded_httpserver, data_center=True)
    dc = JiraClient(
        JiraOptions(base_url=jira.base, deployment="data_center", bearer_token=PAT, project="OPS"),
        timeout=5.0,
        allow_private=True,
    )
    task_spec = spec(assignees=(Assignee("ada", "ada"),))

    task = dc.create(task_spec)

    (call,) = jira.calls("POST", "/rest/api/2/issue")
    assert call["headers"]["Authorization"] == f"Bearer {PAT}"
    assert call["json"]["fields"]["assignee"] == {"name": "ada"}
    assert isinstance(call["json"]["fields"]["description"], str)
    assert dc.find(task_spec) == task
    assert jira.calls("POST", "/rest/api/2/search") and not jira.calls("POST", "/search/jql")


# -- assignees ---------------------------------------------------------------------------


def test_a_refused_assignee_creates_nothing_and_names_the_account(jira: FakeJira) -> None:
    task_spec = spec(assignees=(Assignee("zed", NOT_ASSIGNABLE),))

    with pytest.raises(AssigneeRefused) as info:
        client(jira).create(task_spec)

    assert info.value.refused == [NOT_ASSIGNABLE]
    assert "cannot be assigned issues" in info.value.reason
    assert not jira.issues
    task = client(jira).create(TaskSpec(**{**task_spec.__dict__, "assignees": ()}))
    assert task.key == "OPS-1" and "assignee" not in jira.issues["OPS-1"]["fields"]


def test_assign_puts_the_first_account_and_refuses_the_rest(jira: FakeJira) -> None:
    task = client(jira).create(spec())

    with pytest.raises(AssigneeRefused) as info:
        client(jira).assign(task, [BOB, ADA])

    assert jira.issues["OPS-1"]["fields"]["assignee"] == {"accountId": BOB}
    assert info.value.refused == [ADA] and "one assignee" in info.value.reason
    (put,) = jira.calls("PUT", "/rest/api/3/issue/OPS-1/assignee")
    assert put["json"] == {"accountId": BOB}

    with pytest.raises(AssigneeRefused) as refused:
        client(jira).assign(task, [NOT_ASSIGNABLE])
    assert refused.value.refused == [NOT_ASSIGNABLE]
    assert jira.issues["OPS-1"]["fields"]["assignee"] == {"accountId": BOB}


# -- follow-ups --------------------------------------------------------------------------


def test_close_and_reopen_follow_status_categories_and_repeat_safely(jira: FakeJira) -> None:
    jira_client = client(jira)
    task = jira_client.create(spec())

    jira_client.close(task)
    assert jira.status_of("OPS-1") == "Done"
    (done,) = jira.calls("POST", "/issue/OPS-1/transitions")
    assert done["json"] == {"transition": {"id": "31"}}

    jira_client.close(task)  # already done: nothing is applied
    assert len(jira.calls("POST", "/issue/OPS-1/transitions")) == 1

    jira_client.reopen(task)
    assert jira.status_of("OPS-1") == "To Do"
    jira_client.reopen(task)
    assert len(jira.calls("POST", "/issue/OPS-1/transitions")) == 2


def test_named_transitions_for_a_custom_workflow(jira: FakeJira) -> None:
    jira.statuses.update({"Closed": ("6", "done", "Done"), "Ready": ("7", "done", "Done")})
    jira.workflow = [("41", "Ship", "Ready"), ("51", "Resolve", "Closed"), ("11", "Back", "To Do")]
    task = client(jira).create(spec())

    client(jira, done_transition="resolve").close(task)
    assert jira.status_of("OPS-1") == "Closed"

    client(jira, reopen_transition="To Do").reopen(task)  # a status name works too
    assert jira.status_of("OPS-1") == "To Do"


def test_no_transition_to_done_is_permanent_and_lists_what_is_offered(jira: FakeJira) -> None:
    jira.workflow = [("21", "Start Progress", "In Progress")]
    task = client(jira).create(spec())

    with pytest.raises(PermanentDeliveryError, match="set done_transition") as info:
        client(jira).close(task)
    assert "Start Progress → In Progress" in str(info.value)


def test_a_comment_is_adf_with_its_marker(jira: FakeJira) -> None:
    task = client(jira).create(spec())
    marker = marker_for("dlv_1", "comment")

    client(jira).comment(task, "Closed by **Grace** in Ops, see [~accountid:" + ADA + "]", marker)

    (comment,) = jira.comments["OPS-1"]
    body = comment["body"]
    assert body["type"] == "doc"
    first = body["content"][0]["content"]
    assert {"type": "text", "text": "Grace", "marks": [{"type": "strong"}]} in first
    assert {"type": "mention", "attrs": {"id": ADA}} in first
    assert body["content"][-1]["content"][0]["text"] == marker


def test_a_comment_lost_in_a_timeout_is_ambiguous(jira: FakeJira) -> None:
    task = client(jira).create(spec())
    jira.fail_next(504)
    with pytest.raises(AmbiguousOutcome, match="HTTP 504"):
        client(jira).comment(task, "done", marker_for("dlv_1", "comment"))


def test_lookup_takes_keys_numbers_and_hash_numbers(jira: FakeJira) -> None:
    client(jira).create(spec())
    jira_client = client(jira)

    for key in ("OPS-1", "ops-1", "1", "#1"):
        found = jira_client.lookup(key)
        assert found is not None and found.key == "OPS-1" and found.id == "10001"
    assert jira_client.lookup("OPS-99") is None
    assert jira_client.lookup("not a key") is None


# -- failures ----------------------------------------------------------------------------


def test_a_burst_429_throttles_the_target_for_retry_after(jira: FakeJira) -> None:
    jira.throttle(retry_after="17")
    with pytest.raises(TargetThrottled) as info:
        client(jira).create(spec())
    assert info.value.retry_after == 17.0 and "jira-burst-based" in str(info.value)
    assert not jira.issues


def test_a_per_issue_429_holds_back_only_this_delivery(jira: FakeJira) -> None:
    task = client(jira).create(spec())
    jira.throttle(retry_after="5", reason="jira-per-issue-on-write")
    with pytest.raises(RetryableDeliveryError) as info:
        client(jira).comment(task, "done", marker_for("dlv_1", "comment"))
    assert type(info.value) is RetryableDeliveryError and info.value.retry_after == 5.0


def test_a_503_on_a_read_is_retryable_with_retry_after(jira: FakeJira) -> None:
    jira.fail_next(503, retry_after="12")
    with pytest.raises(RetryableDeliveryError) as info:
        client(jira).find(spec())
    assert type(info.value) is RetryableDeliveryError and info.value.retry_after == 12.0


def test_a_wrong_token_is_permanent_with_jiras_words_and_hidden(jira: FakeJira) -> None:
    wrong = "ATATT3xWrongTokenValue000000"
    with pytest.raises(PermanentDeliveryError) as info:
        client(jira, api_token=wrong).create(spec())
    assert str(info.value).startswith("Jira refused the credentials (HTTP 401): Client must")
    basic = base64.b64encode(f"{EMAIL}:{wrong}".encode()).decode()
    assert_hidden(info.value, wrong, basic)


def test_an_answer_that_echoes_the_credentials_is_redacted(jira: FakeJira) -> None:
    jira.echo_auth = True
    with pytest.raises(PermanentDeliveryError) as info:
        client(jira, project="NOPE").create(spec())
    assert "project: valid project is required" in str(info.value)
    assert "***" in str(info.value)
    assert_hidden(info.value, API_TOKEN, BASIC.removeprefix("Basic "))


def test_an_unreachable_site_on_create_is_ambiguous_and_on_read_retryable() -> None:
    dead = JiraClient(
        JiraOptions(base_url="http://127.0.0.1:9", email=EMAIL, api_token=API_TOKEN, project="OPS"),
        timeout=2.0,
        allow_private=True,
    )
    with pytest.raises(AmbiguousOutcome):
        dead.create(spec())
    with pytest.raises(RetryableDeliveryError) as info:
        dead.lookup("OPS-1")
    assert type(info.value) is RetryableDeliveryError


# -- options and target ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ({"api_token": None}, "email and api_token go together"),
        ({"bearer_token": "x"}, "not both"),
        ({"email": None, "api_token": None}, "set email and api_token"),
        ({"api_token": ""}, "api_token is empty"),
        ({"project": "ops"}, "project key"),
        ({"priorities": {"urgent": "Highest"}}, "p1..p4"),
        ({"deployment": "data_center", "api_version": 3}, "no REST v3"),
    ],
)
def test_options_are_checked(extra: dict[str, Any], problem: str) -> None:
    values = {"base_url": "https://acme.atlassian.net", "email": EMAIL, "api_token": API_TOKEN}
    with pytest.raises(ValidationError, match=problem) as info:
        JiraOptions.model_validate({**values, "project": "OPS", **extra})
    assert API_TOKEN not in str(info.value)


def test_the_kind_is_registered_on_the_pm_queue() -> None:
    assert_registered(JiraTarget, "jira", "pm")
    assert JiraTarget.default_rate_limits == ("100/min",)
    assert JiraTarget.title_limit == 255 and JiraTarget.account_platform == "jira"


def test_the_target_builds_its_client_from_its_config(jira: FakeJira) -> None:
    target = build_target(
        JiraTarget,
        "ops-jira",
        timeout=3.0,
        base_url=jira.base,
        email=EMAIL,
        api_token=API_TOKEN,
        project="OPS",
    )
    jira_client = target.client(delivery_context())
    assert jira_client.timeout == 3.0
    assert jira_client.create(spec()).key == "OPS-1"


def test_a_loopback_site_needs_allow_private() -> None:
    config = TargetConfig(
        id="ops-jira",
        kind="jira",
        options=JiraOptions(
            base_url="http://127.0.0.1:8080", email=EMAIL, api_token=API_TOKEN, project="OPS"
        ),
    )
    with pytest.raises(ConfigError, match="targets.ops-jira.base_url"):
        JiraTarget(config)


# -- ADF ---------------------------------------------------------------------------------


def test_adf_links_code_and_no_empty_text_nodes() -> None:
    doc = adf.document("see [the run](https://ci.example/1) or https://x.example/a.\n`x`")
    (paragraph,) = doc["content"]
    nodes = paragraph["content"]
    assert nodes[1] == {
        "type": "text",
        "text": "the run",
        "marks": [{"type": "link", "attrs": {"href": "https://ci.example/1"}}],
    }
    assert nodes[3]["marks"][0]["attrs"]["href"] == "https://x.example/a"
    assert nodes[4] == {"type": "text", "text": "."}
    assert nodes[5] == {"type": "hardBreak"}
    assert nodes[6] == {"type": "text", "text": "x", "marks": [{"type": "code"}]}
    assert all(n.get("text") != "" for n in nodes)


def test_adf_of_an_empty_body_is_still_a_document() -> None:
    assert adf.document("") == {
        "type": "doc",
        "version": 1,
        "content": [{"type": "paragraph", "content": []}],
    }
    quoted = adf.document("> > nested\n> plain")
    (quote,) = quoted["content"]
    assert quote["type"] == "blockquote"
    assert [b["type"] for b in quote["content"]] == ["paragraph"]  # no quote in a quote


# -- through the shared flow -------------------------------------------------------------


def test_a_chat_command_becomes_one_issue_and_done_closes_it(
    jira: FakeJira, redis_client: redis.Redis
) -> None:
    """The target as the worker runs it: the shared flow, this client, the ledger in
    Redis. A person Jira refuses never loses the issue; a retry after a lost answer
    finds it instead of creating another."""
    target = build_target(
        JiraTarget, "ops-jira", base_url=jira.base, email=EMAIL, api_token=API_TOKEN, project="OPS"
    )
    people = People({"zed": Person(name="Zed", dingtalk="u9", jira=NOT_ASSIGNABLE)})
    command = delivery_context(
        "dlv_7",
        state=redis_client,
        people=people,
        source_kind="dingtalk_robot",
        text="task Fix the login timeout @Zed due:2026-12-10 #bug",
        mentions=[Party(id="u9", name="Zed")],
    )
    jira.after_create = "timeout"
    slow = build_target(
        JiraTarget,
        "ops-jira",
        timeout=0.5,
        base_url=jira.base,
        email=EMAIL,
        api_token=API_TOKEN,
        project="OPS",
    )
    with pytest.raises(AmbiguousOutcome):  # Zed refused, made without him, answer lost
        slow.deliver(command)
    jira.after_create = None

    result = target.deliver(replace(command, attempt=2))

    assert result.excerpt == f"created OPS-1 {jira.base}/browse/OPS-1"
    assert list(jira.issues) == ["OPS-1"]
    assert len(jira.calls("POST", "/rest/api/3/issue")) == 2  # refused, then made once
    fields = jira.issues["OPS-1"]["fields"]
    assert "assignee" not in fields
    assert "bug" in fields["labels"] and fields["duedate"] == "2026-12-10"

    done = delivery_context(
        "dlv_8", state=redis_client, source_kind="dingtalk_robot", text="done OPS-1"
    )
    assert target.deliver(done).excerpt == f"closed OPS-1 {jira.base}/browse/OPS-1"
    assert jira.status_of("OPS-1") == "Done"
    assert "Closed by Grace" in adf.plain_text(jira.comments["OPS-1"][-1]["body"])
