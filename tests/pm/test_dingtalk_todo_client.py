"""The ``dingtalk_todo`` client and target against the loopback fake of DingTalk's
access-token and to-do API (``tests.pm.dingtalk_fake``), with the suite's own Redis."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis
from pytest_httpserver import HTTPServer

from relay.config.people import People, Person
from relay.errors import PermanentDeliveryError, RetryableDeliveryError, TargetThrottled
from relay.events import Party
from tests.pm.dingtalk_fake import APP_KEY, APP_SECRET, OPERATOR, FakeDingTalkTodo, refusal
from tests.workers.support import (
    assert_hidden,
    assert_registered,
    build_target,
    delivery_context,
)
from workers.pm.dingtalk_todo import DingTalkTodoClient, DingTalkTodoTarget
from workers.pm.spec import AmbiguousOutcome, Assignee, AssigneeRefused, TaskSpec

MARKER = "group-relay:fedcba9876543210fedcba98"
KEY = "0d6b1c1e-7f43-4a8e-9c51-3b2a1f0e9d8c"


@pytest.fixture
def state(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def dingtalk(threaded_httpserver: HTTPServer) -> FakeDingTalkTodo:
    return FakeDingTalkTodo(threaded_httpserver)


def target(fake: FakeDingTalkTodo, **options: Any) -> DingTalkTodoTarget:
    values = {"app_key": APP_KEY, "app_secret": APP_SECRET, "operator": OPERATOR, **options}
    return build_target(DingTalkTodoTarget, "todo", api_base=fake.base, **values)


def client(
    fake: FakeDingTalkTodo, state: redis.Redis | None, timeout: float = 5.0, **options: Any
) -> DingTalkTodoClient:
    return target(fake, **options).client(delivery_context(state=state, timeout=timeout))


def spec(**fields: Any) -> TaskSpec:
    values: dict[str, Any] = {
        "title": "Renew the certificate",
        "body": "> the certificate expires on Friday\n— Bob in 运维群",
        "marker": MARKER,
        "idempotency_key": KEY,
        "assignees": (Assignee("Ada", "unionAda"),),
        **fields,
    }
    return TaskSpec(**values)


def test_registered_as_a_pm_target() -> None:
    assert_registered(DingTalkTodoTarget, "dingtalk_todo", "pm")


def test_create_sends_what_the_todo_api_documents(
    dingtalk: FakeDingTalkTodo, state: redis.Redis
) -> None:
    todo = client(dingtalk, state, timezone="Asia/Shanghai", creator="unionBob")
    link = "https://example.com/chat/msg/1"
    task = todo.create(spec(due=date(2026, 3, 5), priority="p1", link=link))

    [(body, query)] = dingtalk.calls("POST", f"/users/{OPERATOR}/tasks")
    assert query == {"operatorId": OPERATOR}
    assert body["subject"] == "Renew the certificate"
    assert body["description"].endswith(f"\n\n{MARKER}")
    assert body["sourceId"] == KEY and body["creatorId"] == "unionBob"
    assert body["executorIds"] == ["unionAda"]
    due = datetime(2026, 3, 5, 23, 59, tzinfo=ZoneInfo("Asia/Shanghai"))
    assert body["dueTime"] == int(due.timestamp() * 1000)
    assert body["priority"] == 40
    assert body["detailUrl"] == {"appUrl": link, "pcUrl": link}

    [made] = dingtalk.tasks.values()
    assert (task.key, task.id, task.url) == (made["id"], made["id"], None)
    assert task.extra == {"operator": OPERATOR}


@pytest.mark.parametrize(("priority", "value"), [("p2", 30), ("p3", 20), ("p4", 10)])
def test_priorities_map_to_dingtalks_levels(
    dingtalk: FakeDingTalkTodo, state: redis.Redis, priority: str, value: int
) -> None:
    client(dingtalk, state).create(spec(priority=priority, assignees=()))
    [(body, _)] = dingtalk.calls("POST", "/tasks")
    assert body["priority"] == value
    assert "executorIds" not in body and "dueTime" not in body and "detailUrl" not in body


def test_the_detail_url_option_links_tasks_without_a_link(
    dingtalk: FakeDingTalkTodo, state: redis.Redis
) -> None:
    client(dingtalk, state, detail_url="https://ops.example.com/tasks").create(spec())
    [(body, _)] = dingtalk.calls("POST", "/tasks")
    assert body["detailUrl"]["pcUrl"] == "https://ops.example.com/tasks"


def test_two_clients_share_one_token_and_refetch_it_once_when_refused(
    dingtalk: FakeDingTalkTodo, state: redis.Redis
) -> None:
    first, second = client(dingtalk, state), client(dingtalk, state)
    task = first.create(spec())
    assert second.lookup(task.id) == task
    assert dingtalk.token_fetches == 1
    dingtalk.expire_all()  # revoked early: 401 InvalidAuthentication
    second.close(task)
    assert dingtalk.token_fetches == 2
    assert dingtalk.tasks[task.id]["done"] is True


def test_a_create_that_timed_out_is_found_by_its_source_id(
    dingtalk: FakeDingTalkTodo, state: redis.Redis
) -> None:
    dingtalk.hang_after_create = 1.5
    with pytest.raises(AmbiguousOutcome, match="may have been created"):
        client(dingtalk, state, timeout=0.5).create(spec())
    dingtalk.hang_after_create = 0
    todo = client(dingtalk, state)
    found = todo.find(spec())
    [made] = dingtalk.tasks.values()
    assert found is not None and found.id == made["id"]
    [(_, query)] = dingtalk.calls("GET", f"/tasks/sources/{KEY}")
    assert query == {}
    assert todo.find(spec(idempotency_key="a-delivery-never-created")) is None


def test_a_repeated_create_answers_the_existing_todo(
    dingtalk: FakeDingTalkTodo, state: redis.Redis
) -> None:
    todo = client(dingtalk, state)
    first = todo.create(spec())
    again = todo.create(spec())  # DingTalk: 400 "task exist" for the sourceId
    assert again == first and len(dingtalk.tasks) == 1


def test_a_server_error_on_create_is_ambiguous(
    dingtalk: FakeDingTalkTodo, state: redis.Redis
) -> None:
    dingtalk.forced.append(refusal(500, "todo.taskCreate.systemError", "system error"))
    with pytest.raises(AmbiguousOutcome, match="systemError"):
        client(dingtalk, state).create(spec())
    dingtalk.forced.append(refusal(400, "todo.taskCreate.lockError", "lock error"))
    with pytest.raises(AmbiguousOutcome, match="lockError"):
        client(dingtalk, state).create(spec())


def test_qps_limits_throttle_the_target(dingtalk: FakeDingTalkTodo, state: redis.Redis) -> None:
    todo = client(dingtalk, state)
    dingtalk.qps_limited = 1
    with pytest.raises(TargetThrottled, match="QpsLimitForApi") as info:
        todo.create(spec())
    assert type(info.value) is TargetThrottled and info.value.retry_after == 2.0
    dingtalk.forced.append(
        refusal(400, "todo.taskCreate.flowControlError", "flowControl because of executorId")
    )
    with pytest.raises(TargetThrottled):
        todo.create(spec())
    assert not dingtalk.tasks
    todo.create(spec())
    assert len(dingtalk.tasks) == 1


def test_refused_executors_create_nothing_and_are_named(
    dingtalk: FakeDingTalkTodo, state: redis.Redis
) -> None:
    todo = client(dingtalk, state)
    with pytest.raises(AssigneeRefused) as info:
        todo.create(spec(assignees=(Assignee("Ada", "unionAda"), Assignee("Zed", "unionZed"))))
    assert info.value.refused == ["@Ada", "@Zed"]
    assert "unionZed" in info.value.reason
    assert not dingtalk.tasks
    todo.create(spec(assignees=()))
    assert len(dingtalk.tasks) == 1


def test_close_reopen_and_assign_update_the_todo(
    dingtalk: FakeDingTalkTodo, state: redis.Redis
) -> None:
    todo = client(dingtalk, state)
    task = todo.create(spec())
    todo.close(task)
    assert dingtalk.tasks[task.id]["done"] is True
    todo.reopen(task)
    assert dingtalk.tasks[task.id]["done"] is False
    todo.assign(task, ["unionBob", "unionAda"])
    assert dingtalk.tasks[task.id]["executorIds"] == ["unionAda", "unionBob"]
    updates = dingtalk.calls("PUT", f"/tasks/{task.id}")
    assert [b for b, _ in updates] == [
        {"done": True},
        {"done": False},
        {"executorIds": ["unionAda", "unionBob"]},
    ]
    assert all(q == {"operatorId": OPERATOR} for _, q in updates)
    with pytest.raises(AssigneeRefused) as info:
        todo.assign(task, ["unionNobody"])
    assert info.value.refused == ["unionNobody"]


def test_a_comment_is_appended_to_the_description_once(
    dingtalk: FakeDingTalkTodo, state: redis.Redis
) -> None:
    todo = client(dingtalk, state)
    task = todo.create(spec())
    todo.comment(task, "Closed by Bob in 运维群", "group-relay:c1")
    todo.comment(task, "Closed by Bob in 运维群", "group-relay:c1")  # a retry
    description = dingtalk.tasks[task.id]["description"]
    assert description.endswith("Closed by Bob in 运维群\n\ngroup-relay:c1")
    assert description.count("group-relay:c1") == 1
    assert description.startswith("> the certificate expires")
    todo.comment(task, "y" * 3000, "group-relay:c2")
    description = dingtalk.tasks[task.id]["description"]
    assert len(description) <= 4096 and description.endswith("group-relay:c2")


def test_lookup_of_a_missing_todo_is_none(dingtalk: FakeDingTalkTodo, state: redis.Redis) -> None:
    assert client(dingtalk, state).lookup("task000000000000000000000000") is None


def test_errors_keep_dingtalks_words_and_no_secret(
    dingtalk: FakeDingTalkTodo, state: redis.Redis
) -> None:
    todo = client(dingtalk, state)
    token = todo.tokens.get(state, 5)
    dingtalk.forced.append(
        refusal(403, "Forbidden.AccessDenied.AccessTokenPermissionDenied", "no permission")
    )
    with pytest.raises(PermanentDeliveryError, match="Todo.Todo.Write") as info:
        todo.create(spec())
    assert "AccessTokenPermissionDenied" in str(info.value)
    assert_hidden(info.value, APP_SECRET, token)
    dingtalk.forced.append(refusal(400, "todo.taskCreate.paramError", "subject is oversize"))
    with pytest.raises(PermanentDeliveryError, match="subject is oversize"):
        todo.create(spec())
    dingtalk.forced += [refusal(401, "InvalidAuthentication", "不合法的access_token")] * 2
    with pytest.raises(RetryableDeliveryError, match="after a token refresh") as retry:
        todo.create(spec())
    assert_hidden(retry.value, APP_SECRET, token)


def test_wrong_credentials_are_permanent(dingtalk: FakeDingTalkTodo, state: redis.Redis) -> None:
    todo = client(dingtalk, state, app_secret="wrong-secret-Zz9Yy8Xx7")
    with pytest.raises(PermanentDeliveryError, match="check app_key and app_secret") as info:
        todo.create(spec())
    assert_hidden(info.value, "wrong-secret-Zz9Yy8Xx7")


def test_a_command_in_chat_becomes_one_todo(dingtalk: FakeDingTalkTodo, state: redis.Redis) -> None:
    """The shared flow driving this client: a DingTalk message mentioning Ada, whose
    unionId the people map knows."""
    todo = target(dingtalk)
    people = People({"ada": Person(name="Ada", dingtalk="manager4521", dingtalk_union="unionAda")})
    context = delivery_context(
        "dlv_todo_1",
        state=state,
        people=people,
        source_kind="dingtalk_robot",
        text="task Renew the certificate @Ada p2",
        mentions=[Party(id="manager4521", name="Ada")],
    )
    todo.deliver(context)
    [made] = dingtalk.tasks.values()
    assert made["subject"] == "Renew the certificate"
    assert made["executorIds"] == ["unionAda"] and made["priority"] == 30
    todo.deliver(context)
    assert len(dingtalk.tasks) == 1
