"""``GroupEvent``: the one shape every source produces and every target consumes."""

from __future__ import annotations

import json
import secrets
import time
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

EventType = Literal[
    "message.created",
    "file.shared",
    "member.joined",
    "member.left",
    "group.updated",
    "task.created",
    "task.updated",
    "task.closed",
    "task.reopened",
    "task.commented",
    "task.assigned",
    "custom",
]
EVENT_TYPES: tuple[str, ...] = EventType.__args__  # type: ignore[attr-defined]
TASK_EVENT_TYPES: tuple[str, ...] = tuple(t for t in EVENT_TYPES if t.startswith("task."))

TaskTool = Literal[
    "jira", "github_issues", "gitlab_issues", "linear", "feishu_task", "dingtalk_todo"
]
TASK_TOOLS: tuple[str, ...] = TaskTool.__args__  # type: ignore[attr-defined]


class Party(BaseModel):
    """A group or a person as the platform names it."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, max_length=256)
    name: str | None = Field(None, max_length=1024)


class FileRef(BaseModel):
    """A file in the event: a URL to fetch or a platform reference (``ref``) to resolve."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=1024)
    size: int | None = Field(None, ge=0)
    mime: str | None = Field(None, max_length=255)
    url: str | None = Field(None, max_length=4096)
    ref: str | None = Field(None, max_length=4096)

    @model_validator(mode="after")
    def _url_or_ref(self) -> FileRef:
        if not self.url and not self.ref:
            raise ValueError("a file needs a url or a ref")
        return self


class ReplyHandle(BaseModel):
    """Where a reply into the same conversation can be posted, and until when.

    DingTalk puts a short-lived ``sessionWebhook`` on each robot message; a route can
    answer through it while ``expires_at`` has not passed.
    """

    model_config = ConfigDict(extra="forbid")
    kind: str = Field(max_length=64, description="Which platform's reply mechanism.")
    url: str = Field(max_length=4096)
    expires_at: datetime | None = None


class TaskChange(BaseModel):
    """What happened to a task in a project-management tool: the ``task`` of a
    ``task.*`` event, as the tool's webhook told it."""

    model_config = ConfigDict(extra="forbid")
    tool: TaskTool = Field(description="The tool, named as its target kind.")
    key: str = Field(
        min_length=1,
        max_length=256,
        description="The key people type and the relay's targets record: OPS-12, #12, "
        "ENG-12, a Feishu task_id, a DingTalk taskId.",
    )
    id: str | None = Field(None, max_length=256, description="The tool's API id, if another.")
    project: str | None = Field(
        None, max_length=1024, description="The Jira project, repository or Linear team."
    )
    url: str | None = Field(None, max_length=4096)
    title: str | None = Field(None, max_length=4096)
    status: str | None = Field(None, max_length=256)
    assignees: list[Party] = Field(default_factory=list)
    actor: Party | None = Field(None, description="Who made the change.")
    comment: str | None = Field(None, max_length=65536, description="A comment's text.")
    changes: list[str] = Field(
        default_factory=list, description="The fields the change touched (status, assignee)."
    )
    by_relay: bool = Field(
        False,
        description="The change carries the relay's marker or was made by an account the "
        "source names as the relay's own: an echo, never posted back into the group.",
    )


def new_event_id() -> str:
    """Time-ordered, unguessable id: ``evt_`` + ms timestamp (hex) + 80 random bits."""
    return f"evt_{int(time.time() * 1000):012x}{secrets.token_hex(10)}"


class GroupEvent(BaseModel):
    """One thing that happened in a chat group, normalised across platforms."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(default_factory=new_event_id)
    source: str
    type: EventType = "custom"
    occurred_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    group: Party | None = None
    sender: Party | None = None
    text: str | None = None
    mentions: list[Party] = Field(default_factory=list)
    mentions_bot: bool = Field(False, description="The message @-mentions the relay's bot.")
    message_id: str | None = Field(None, max_length=256, description="The platform's own id.")
    in_reply_to: str | None = Field(
        None,
        max_length=256,
        description="The message_id of the message this one answers: the root of its "
        "thread (Feishu root_id, Slack thread_ts) or the message it quotes (Telegram "
        "reply_to_message, WeCom quote).",
    )
    link: str | None = Field(
        None,
        max_length=2048,
        description="A link to the message in the platform's own app, where the platform "
        "has one: Slack (with the source's workspace_url), Telegram groups with a public "
        "username and supergroups.",
    )
    reply: ReplyHandle | None = None
    files: list[FileRef] = Field(default_factory=list)
    task: TaskChange | None = Field(None, description="The task a task.* event is about.")
    raw: Any = None

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, data: str | bytes) -> GroupEvent:
        return cls.model_validate_json(data)


def json_schema() -> dict[str, Any]:
    """The JSON Schema of ``GroupEvent`` (also written by ``relay schema``)."""
    schema = GroupEvent.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://group-relay.dev/schema/group-event.json"
    return schema


def schema_text() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"
