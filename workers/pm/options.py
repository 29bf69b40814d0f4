"""Options every project-management target has, beside its tool's own."""

from __future__ import annotations

from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from relay.config.units import Duration
from relay.templates import check_template
from workers.targets.base import TargetOptions

ConfirmOn = Literal["created", "closed", "reopened", "assigned", "commented", "problems"]
UpdateOn = Literal["updated", "closed", "reopened", "assigned", "commented"]


def _yaml_on(data: Any) -> Any:
    """PyYAML reads an unquoted ``on:`` key as the boolean ``True``."""
    if isinstance(data, dict) and True in data and "on" not in data:
        data = {("on" if k is True else k): v for k, v in data.items()}
    return data


def _default_on() -> list[ConfirmOn]:
    return ["created", "closed", "problems"]


class Confirm(BaseModel):
    """Post a short confirmation into the group after a task is created or changed: a
    chained delivery to ``target`` (a notification target, for example a
    ``dingtalk_app`` in ``mode: reply`` or a ``telegram`` target replying in the
    thread), with its own id, record and retries."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    target: str = Field(description="The id of the notification target that posts it.")
    template: str | None = Field(None, description="Jinja2; sees event, task and command.")
    on: list[ConfirmOn] = Field(
        default_factory=_default_on,
        description="When to confirm; YAML 1.1 reads a bare `on` key as true, so both work.",
    )

    @model_validator(mode="before")
    @classmethod
    def _on_key(cls, data: Any) -> Any:
        return _yaml_on(data)

    def model_post_init(self, _: object) -> None:
        if self.template is not None:
            check_template(self.template)


def _all_updates() -> list[UpdateOn]:
    return ["updated", "closed", "reopened", "assigned", "commented"]


class Updates(BaseModel):
    """Tell the chat thread a task came from what happens to the task in the tool
    (two-way sync): the tool's webhooks arrive through its source kind (``jira``,
    ``github``, ...) and each change of a task the relay created is posted, through
    ``target`` (default: ``confirm.target``), as a reply where the task was born.
    Changes the relay made itself are never posted back; a burst of changes within
    ``coalesce`` becomes one message."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    target: str | None = Field(None, description="Notification target; default confirm's.")
    template: str | None = Field(None, description="Jinja2; sees event, task and updates.")
    on: list[UpdateOn] = Field(default_factory=_all_updates, description="Which changes.")
    coalesce: Duration = Field(
        5, ge=0, le=3600, description="Changes of one task within this window: one message."
    )
    echo_window: Duration = Field(
        600,
        gt=0,
        description="How long a change the relay made waits for the tool to report it back "
        "(that report is then recognised as the relay's own).",
    )

    @model_validator(mode="before")
    @classmethod
    def _on_key(cls, data: Any) -> Any:
        return _yaml_on(data)

    def model_post_init(self, _: object) -> None:
        if self.template is not None:
            check_template(self.template)


class PmOptions(TargetOptions):
    """``trigger: command`` makes tasks only of messages with the command word
    (``task``/``任务``); ``any`` makes one of every message the route passes."""

    trigger: Literal["command", "any"] = "command"
    labels: list[str] = Field(default_factory=list, description="Added to every task.")
    title_template: str | None = Field(None, description="Jinja2 for the title.")
    follow_ups: bool = Field(True, description="Replies and references act on tasks.")
    confirm: Confirm | None = None
    updates: Updates | None = Field(
        default_factory=Updates, description="Two-way sync; false turns it off."
    )
    timezone: str = Field("UTC", description="Where relative dates (tomorrow, fri) are read.")
    bot_names: list[str] = Field(
        default_factory=list, description="The bot's names, skipped at the start of a command."
    )

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (e.g. Asia/Shanghai)") from None
        return value

    @field_validator("updates", mode="before")
    @classmethod
    def _updates_off(cls, value: Any) -> Any:
        return None if value is False else value

    def chained_targets(self) -> list[str]:
        """The targets this one's confirmations and updates go to (checked at load)."""
        named = [self.confirm.target] if self.confirm else []
        if self.updates is not None and self.updates.target:
            named.append(self.updates.target)
        return named

    def updates_target(self) -> str | None:
        """Where the tool's changes are told: ``updates.target``, else confirm's."""
        if self.updates is None:
            return None
        return self.updates.target or (self.confirm.target if self.confirm else None)
