"""Options every project-management target has, beside its tool's own."""

from __future__ import annotations

from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from relay.templates import check_template
from workers.targets.base import TargetOptions

ConfirmOn = Literal["created", "closed", "reopened", "assigned", "commented", "problems"]


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
    def _yaml_on(cls, data: Any) -> Any:
        """PyYAML reads an unquoted ``on:`` key as the boolean ``True``."""
        if isinstance(data, dict) and True in data and "on" not in data:
            data = {("on" if k is True else k): v for k, v in data.items()}
        return data

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

    def chained_targets(self) -> list[str]:
        """The targets this one's confirmations go to (checked to exist at load)."""
        return [self.confirm.target] if self.confirm else []
