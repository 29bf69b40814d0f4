"""The ``feishu_task`` client and target against the loopback fake of Feishu's token
endpoint and Task v2 API (``tests.pm.feishu_fake``), with the suite's own Redis."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

import pytest
import redis
from pytest_httpserver import HTTPServer

from relay.config.models import TargetConfig
from relay.errors import ConfigError, PermanentDeliveryError, TargetThrottled
from relay.events import Party
from tests.pm.feishu_fake import APP_ID, APP_SECRET, FakeFeishuTasks, answer
from tests.workers.support import (
    assert_hidden,
    assert_registered,
    build_target,
    delivery_context,
)
from workers.pm.feishu_task import FeishuTaskClient, FeishuTaskOptions, FeishuTaskTarget
from workers.pm.spec import AmbiguousOutcome, Assignee, AssigneeRefused, TaskRef, TaskSpec

MARKER = "group-relay:0123456789abcdef01234567"
KEY = "5f0c8a52-1d2e-4c3b-9a4f-6e7d8c9b0a1f"


@pytest.fixture
def state(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def feishu(threaded_httpserver: HTTPServer) -> FakeFeishuTasks:
    return FakeFeishuTasks(threaded_httpserver)


def target(fake: FakeFeishuTasks, **options: Any) -> FeishuTaskTarget:
    return build_target(
        FeishuTaskTarget,
        "tasks",
        app_id=APP_ID,
        app_secret=APP_SECRET,
        api_base=fake.base,
        **options,
    )


def client(
    fake: FakeFeishuTasks, state: redis.Redis | None, timeout: float = 5.0, **options: Any
) -> FeishuTaskClient:
    return target(fake, **options).client(delivery_context(state=state, timeout=timeout))


def spec(**fields: Any) -> TaskSpec:
    values: dict[str, Any] = {
        "title": "Fix login",
        "body": "> the login page is broken\n— Grace in Ops room",
        "marker": MARKER,
        "idempotency_key": KEY,
        "assignees": (Assignee("Ada", "ou_ada"),),
        **fields,
    }
    return TaskSpec(**values)


def test_registered_as_a_pm_target() -> None:
    assert_registered(FeishuTaskTarget, "feishu_task", "pm")


def test_create_sends_what_task_v2_documents(feishu: FakeFeishuTasks, state: redis.Redis) -> None:
    tasks = client(feishu, state, followers=["ou_follower"], tasklist_guid="tl-1")
    link = "https://applink.feishu.cn/client/chat/open?openChatId=oc_1"
    task = tasks.create(spec(due=date(2026, 3, 5), link=link))

    [body] = feishu.calls("POST", "/open-apis/task/v2/tasks")
    assert body["summary"] == "Fix login"
    assert body["description"].startswith("> the login page is broken")
    assert body["description"].endswith(f"\n\n{MARKER}")
    assert body["extra"] == MARKER and body["client_token"] == KEY
    stamp = int(datetime(2026, 3, 5, tzinfo=UTC).timestamp() * 1000)
    assert body["due"] == {"timestamp": str(stamp), "is_all_day": True}
    assert body["members"] == [
        {"id": "ou_ada", "type": "user", "role": "assignee"},
        {"id": "ou_follower", "type": "user", "role": "follower"},
    ]
    assert body["origin"]["platform_i18n_name"]["en_us"] == "group-relay"
    assert body["origin"]["href"] == {"url": link, "title": "Fix login"}
    assert body["tasklists"] == [{"tasklist_guid": "tl-1"}]
    assert all(q.get("user_id_type") == "open_id" for q in feishu.queries())

    [made] = feishu.tasks.values()
    assert task == TaskRef(key=made["task_id"], id=made["guid"], url=made["url"])
    assert task.url and task.url.startswith("https://applink.feishu.cn/client/todo/detail")


def test_a_long_body_is_cut_but_keeps_its_marker(
    feishu: FakeFeishuTasks, state: redis.Redis
) -> None:
    client(feishu, state).create(spec(body="x" * 5000, assignees=()))
    [body] = feishu.calls("POST", "/open-apis/task/v2/tasks")
    assert len(body["description"]) <= 3000
    assert body["description"].endswith(MARKER)
    assert "members" not in body and "due" not in body and "href" not in body["origin"]


def test_two_clients_share_one_token_through_redis(
    feishu: FakeFeishuTasks, state: redis.Redis
) -> None:
    first, second = client(feishu, state), client(feishu, state)
    first.create(spec())
    second.create(spec(idempotency_key="another-delivery-key-0001"))
    assert feishu.auth.fetches == 1
    assert len(feishu.tasks) == 2


def test_an_expired_token_is_refetched_and_the_call_made_once_more(
    feishu: FakeFeishuTasks, state: redis.Redis
) -> None:
    tasks = client(feishu, state)
    tasks.create(spec())
    feishu.auth.expire_all()
    tasks.close(next(iter_tasks(feishu)))
    assert feishu.auth.fetches == 2
    assert next(iter(feishu.tasks.values()))["status"] == "done"


def iter_tasks(fake: FakeFeishuTasks) -> Iterator[TaskRef]:
    for task in fake.tasks.values():
        yield TaskRef(key=task["guid"], id=task["guid"], url=task["url"])


def test_a_create_that_timed_out_is_repeated_into_the_same_task(
    feishu: FakeFeishuTasks, state: redis.Redis
) -> None:
    feishu.hang_after_create = 1.5  # Feishu made the task; its answer never arrives
    with pytest.raises(AmbiguousOutcome, match="may have been created"):
        client(feishu, state, timeout=0.5).create(spec())
    assert len(feishu.tasks) == 1

    feishu.hang_after_create = 0
    tasks = client(feishu, state)
    assert tasks.native_idempotency is True
    assert tasks.find(spec()) is None  # nothing to search: client_token answers instead
    again = tasks.create(spec())
    assert len(feishu.tasks) == 1
    assert again.id == next(iter(feishu.tasks))


def test_a_server_error_on_create_is_ambiguous_but_throttling_is_not(
    feishu: FakeFeishuTasks, state: redis.Redis
) -> None:
    tasks = client(feishu, state)
    feishu.forced.append(answer(500, 1470422, "concurrent calls with the same client_token"))
    with pytest.raises(AmbiguousOutcome, match="1470422"):
        tasks.create(spec())
    feishu.throttle_next = 1
    with pytest.raises(TargetThrottled) as info:
        tasks.create(spec())
    assert type(info.value) is TargetThrottled and info.value.retry_after == 7
    assert not feishu.tasks
    tasks.create(spec())
    assert len(feishu.tasks) == 1


def test_a_refused_assignee_creates_nothing_and_names_who(
    feishu: FakeFeishuTasks, state: redis.Redis
) -> None:
    tasks = client(feishu, state)
    with pytest.raises(AssigneeRefused) as info:
        tasks.create(spec(assignees=(Assignee("Ada", "ou_ada"), Assignee("Zed", "ou_zed"))))
    assert info.value.refused == ["@Ada", "@Zed"]
    assert "99992352" in info.value.reason
    assert not feishu.tasks
    tasks.create(spec(assignees=()))  # what the flow does next
    assert len(feishu.tasks) == 1


def test_refused_followers_are_a_configuration_error(
    feishu: FakeFeishuTasks, state: redis.Redis
) -> None:
    tasks = client(feishu, state, followers=["ou_gone"])
    with pytest.raises(PermanentDeliveryError, match="followers"):
        tasks.create(spec(assignees=()))


def test_a_parameter_error_is_permanent_with_feishus_words(
    feishu: FakeFeishuTasks, state: redis.Redis
) -> None:
    tasks = client(feishu, state)
    token = tasks.tokens.get(state, 5)
    feishu.forced.append(answer(400, 1470400, "Invalid Param 'repeat_rule'."))
    with pytest.raises(
        PermanentDeliveryError, match="1470400: Invalid Param 'repeat_rule'"
    ) as info:
        tasks.create(spec())
    assert type(info.value) is PermanentDeliveryError
    assert_hidden(info.value, APP_SECRET, token)


def test_close_and_reopen_patch_completed_at(feishu: FakeFeishuTasks, state: redis.Redis) -> None:
    tasks = client(feishu, state)
    task = tasks.create(spec())
    before = int(time.time() * 1000)
    tasks.close(task)
    tasks.reopen(task)
    closed, reopened = feishu.calls("PATCH", "/open-apis/task/v2/tasks/")
    assert closed["update_fields"] == ["completed_at"]
    assert int(closed["task"]["completed_at"]) >= before
    assert reopened == {"task": {"completed_at": "0"}, "update_fields": ["completed_at"]}
    assert feishu.tasks[task.id]["status"] == "todo"


def test_assign_adds_assignees_and_names_refusals(
    feishu: FakeFeishuTasks, state: redis.Redis
) -> None:
    tasks = client(feishu, state)
    task = tasks.create(spec(assignees=()))
    tasks.assign(task, ["ou_bob"])
    assert feishu.tasks[task.id]["members"] == [
        {"id": "ou_bob", "type": "user", "role": "assignee"}
    ]
    with pytest.raises(AssigneeRefused) as info:
        tasks.assign(task, ["ou_nobody"])
    assert info.value.refused == ["ou_nobody"]


def test_a_comment_is_posted_once_per_marker(feishu: FakeFeishuTasks, state: redis.Redis) -> None:
    tasks = client(feishu, state)
    task = tasks.create(spec())
    tasks.comment(task, "could not assign @Zed", "group-relay:c1")
    tasks.comment(task, "could not assign @Zed", "group-relay:c1")  # a retry
    tasks.comment(task, "x" * 4000, "group-relay:c2")
    first, second = feishu.comments
    assert first["content"] == "could not assign @Zed\n\ngroup-relay:c1"
    assert first["resource_id"] == task.id
    assert len(second["content"]) <= 3000 and second["content"].endswith("group-relay:c2")


def test_lookup_by_guid(feishu: FakeFeishuTasks, state: redis.Redis) -> None:
    tasks = client(feishu, state)
    task = tasks.create(spec())
    assert tasks.lookup(task.id) == task
    assert tasks.lookup("00000000-0000-4000-8000-000000000000") is None
    assert tasks.lookup(task.key) is None  # the code Feishu shows: no API finds by it


def test_a_loopback_api_base_needs_allow_private() -> None:
    options = FeishuTaskOptions(app_id=APP_ID, app_secret=APP_SECRET, api_base="http://127.0.0.1:1")
    config = TargetConfig(id="tasks", kind="feishu_task", options=options)
    with pytest.raises(ConfigError, match="api_base"):
        FeishuTaskTarget(config)
    assert APP_SECRET not in repr(options)


def test_a_command_in_chat_becomes_one_task(feishu: FakeFeishuTasks, state: redis.Redis) -> None:
    """The shared flow driving this client: a Feishu message with a ``task`` command."""
    tasks = target(feishu)
    context = delivery_context(
        "dlv_feishu_1",
        state=state,
        source_kind="feishu",
        text="task Fix login @Ada",
        mentions=[Party(id="ou_ada", name="Ada")],
    )
    result = tasks.deliver(context)
    [made] = feishu.tasks.values()
    assert made["summary"] == "Fix login"
    assert made["members"] == [{"id": "ou_ada", "type": "user", "role": "assignee"}]
    assert result.excerpt == f"created {made['task_id']} {made['url']}"
    tasks.deliver(context)  # a redelivery of the same delivery
    assert len(feishu.tasks) == 1
