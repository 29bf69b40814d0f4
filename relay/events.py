"""``GroupEvent``: the one shape every source produces and every target consumes."""

from __future__ import annotations

import json
import secrets
import time
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

EventType = Literal[
    "message.created", "file.shared", "member.joined", "member.left", "group.updated", "custom"
]
EVENT_TYPES: tuple[str, ...] = EventType.__args__  # type: ignore[attr-defined]


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
    reply: ReplyHandle | None = None
    files: list[FileRef] = Field(default_factory=list)
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
