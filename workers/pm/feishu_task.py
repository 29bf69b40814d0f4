"""``feishu_task`` target: a Feishu/Lark Task v2 task per chat command.

The app creates tasks with its tenant token (``workers.net.feishu_auth``), so the app
is the creator and only the task's members see it: assignees from the @mentions (their
open_ids come straight from a Feishu source, or from the people map's ``feishu``),
plus ``followers`` from the options. Creates carry ``client_token`` (the delivery's
idempotency key): Feishu creates at most one task per token, so a retry after a
timeout gets the task the first attempt made. Task v2 has no search, so ``find`` has
nothing to look in and relies on that. Every answer's body ``code`` is checked, not
only the HTTP status.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal
from urllib.parse import quote

from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator

from relay.config.models import TargetConfig
from relay.errors import (
    PermanentDeliveryError,
    RetryableDeliveryError,
    TargetThrottled,
)
from workers.net.addresses import check_url
from workers.net.feishu_auth import (
    FEISHU_API,
    TenantTokens,
    TokenRejected,
    bearer,
    feishu_data,
    with_token,
)
from workers.net.http import HttpAnswer, guarded_pool, send
from workers.pm.flow import PmTarget
from workers.pm.options import PmOptions
from workers.pm.spec import (
    RELAY_LABEL,
    AmbiguousOutcome,
    AssigneeRefused,
    TaskRef,
    TaskSpec,
)
from workers.targets.base import DeliveryContext

TASKS = "/open-apis/task/v2/tasks"
COMMENTS = "/open-apis/task/v2/comments"
TEXT_LIMIT = 3000  # characters Feishu takes in a summary, description or comment
MEMBER_CODES = frozenset({99992351, 99992352, 99992353, 1470610, 1470611})
NOT_FOUND = 1470404
GUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"


class FeishuTaskOptions(PmOptions):
    """What a ``feishu_task`` target adds to the project-management options."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    app_id: str = Field(min_length=1, description="The app's App ID (cli_...).")
    app_secret: str = Field(min_length=1, repr=False, description="The app's App Secret.")
    api_base: str = Field(FEISHU_API, description="https://open.larksuite.com for Lark.")
    tasklist_guid: str | None = Field(None, description="Tasklist new tasks are added to.")
    followers: list[str] = Field(
        default_factory=list, description="Users (open_ids) who follow every task."
    )
    user_id_type: Literal["open_id", "union_id", "user_id"] = "open_id"

    @field_validator("api_base")
    @classmethod
    def _base(cls, value: str, info: ValidationInfo) -> str:
        context = info.context if isinstance(info.context, dict) else {}
        check_url(value, allow_private=bool(context.get("allow_private", True)))
        return value.rstrip("/")

    @model_validator(mode="after")
    def _no_blank_followers(self) -> FeishuTaskOptions:
        if any(not f.strip() for f in self.followers):
            raise ValueError("followers: an entry is empty (is its environment variable set?)")
        return self


class FeishuTaskClient:
    """Task v2 as the shared flow uses it (``workers.pm.spec.PmClient``)."""

    native_idempotency = True

    def __init__(
        self,
        options: FeishuTaskOptions,
        tokens: TenantTokens,
        *,
        state: Any,
        timeout: float,
        allow_private: bool,
    ) -> None:
        self.options = options
        self.tokens = tokens
        self.state = state
        self.timeout = timeout
        self.allow_private = allow_private

    # -- PmClient ----------------------------------------------------------------------

    def find(self, spec: TaskSpec) -> TaskRef | None:
        """Nothing to search: Task v2 has no query by ``extra`` or client token, and the
        create's ``client_token`` already answers a repeat with the first task."""
        return None

    def create(self, spec: TaskSpec) -> TaskRef:
        members = [_member(a.account, "assignee") for a in spec.assignees if a.account]
        members += [_member(f, "follower") for f in self.options.followers]
        body: dict[str, Any] = {
            "summary": _cut(spec.title, TEXT_LIMIT) or "Task from chat",
            "description": _with_marker(spec.body, spec.marker),
            "extra": spec.marker,
            "client_token": spec.idempotency_key,
            "origin": _origin(spec),
        }
        if spec.due is not None:
            midnight = datetime(spec.due.year, spec.due.month, spec.due.day, tzinfo=UTC)
            body["due"] = {"timestamp": str(int(midnight.timestamp()) * 1000), "is_all_day": True}
        if members:
            body["members"] = members
        if self.options.tasklist_guid:
            body["tasklists"] = [{"tasklist_guid": self.options.tasklist_guid}]
        try:
            data = self._call("POST", TASKS, body, what="Feishu refused the task", sent_once=True)
        except _MembersRefused as refused:
            if not spec.assignees:  # the followers from the options: a config problem
                raise PermanentDeliveryError(
                    f"Feishu refused the task's followers ({refused.reason}); "
                    "check the followers option"
                ) from None
            names = [f"@{a.name}" for a in spec.assignees]
            raise AssigneeRefused(names, refused.reason) from None
        return _task_ref(data)

    def lookup(self, key: str) -> TaskRef | None:
        """A task by its guid; Feishu has no API that finds a task by the code it shows
        (``t6272302``), so such a key finds nothing."""
        if not re.fullmatch(GUID, key):
            return None
        try:
            path = f"{TASKS}/{quote(key, safe='')}"
            data = self._call("GET", path, None, what="Feishu refused the task lookup")
        except PermanentDeliveryError as exc:
            if f"code {NOT_FOUND}" in exc.message or exc.status == 404:
                return None
            raise
        return _task_ref(data)

    def assign(self, task: TaskRef, accounts: Sequence[str]) -> None:
        body = {"members": [_member(a, "assignee") for a in accounts]}
        try:
            self._call(
                "POST",
                f"{TASKS}/{quote(task.id, safe='')}/add_members",
                body,
                what="Feishu refused the assignees",
            )
        except _MembersRefused as refused:
            raise AssigneeRefused(list(accounts), refused.reason) from None

    def close(self, task: TaskRef) -> None:
        self._complete(task, str(int(time.time() * 1000)))

    def reopen(self, task: TaskRef) -> None:
        self._complete(task, "0")

    def comment(self, task: TaskRef, text: str, marker: str) -> None:
        """Post ``text`` ending with ``marker``, unless a comment with the marker is
        already there (an earlier attempt whose answer was lost)."""
        if self._commented(task, marker):
            return
        body = {
            "content": _with_marker(text, marker),
            "resource_type": "task",
            "resource_id": task.id,
        }
        self._call("POST", COMMENTS, body, what="Feishu refused the comment", sent_once=True)

    # -- calls -------------------------------------------------------------------------

    def _complete(self, task: TaskRef, completed_at: str) -> None:
        body = {"task": {"completed_at": completed_at}, "update_fields": ["completed_at"]}
        path = f"{TASKS}/{quote(task.id, safe='')}"
        self._call("PATCH", path, body, what="Feishu refused to update the task")

    def _commented(self, task: TaskRef, marker: str) -> bool:
        """Whether one of the task's newest comments carries ``marker``."""
        query = f"resource_type=task&resource_id={quote(task.id, safe='')}&direction=desc"
        data = self._call(
            "GET", f"{COMMENTS}?{query}&page_size=100", None, what="Feishu refused comments"
        )
        items = data.get("items")
        return isinstance(items, list) and any(
            isinstance(c, dict) and marker in str(c.get("content") or "") for c in items
        )

    def _call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        *,
        what: str,
        sent_once: bool = False,
    ) -> dict[str, Any]:
        """``data`` of one API call with the tenant token (refreshed once if refused).
        ``sent_once`` marks a call that must not happen twice (a create or comment): a
        failure that may have come after Feishu acted is an ``AmbiguousOutcome``."""
        separator = "&" if "?" in path else "?"
        url = f"{self.options.api_base}{path}{separator}user_id_type={self.options.user_id_type}"
        data = None if body is None else json.dumps(body, ensure_ascii=False).encode()

        def attempt(token: str) -> dict[str, Any]:
            headers = {**bearer(token), "Content-Type": "application/json; charset=utf-8"}
            try:
                response = send(
                    guarded_pool(self.allow_private),
                    method,
                    url,
                    timeout=self.timeout,
                    data=data,
                    headers=headers,
                )
            except RetryableDeliveryError as exc:
                raise _unsure(exc) if sent_once else exc from None
            _check_members(response)
            try:
                return feishu_data(response, what)
            except (TokenRejected, TargetThrottled):
                raise  # refused before acting: safe to repeat
            except RetryableDeliveryError as exc:
                raise _unsure(exc) if sent_once else exc from None

        return with_token(self.tokens, self.state, self.timeout, attempt)


class _MembersRefused(Exception):  # noqa: N818 - a refusal, not a crash
    """Feishu refused a member id (unknown user, not visible to the app, too many)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _check_members(response: HttpAnswer) -> None:
    """Raise ``_MembersRefused`` for an answer that refuses the members: an invalid
    user id code, or a parameter error about ``members``."""
    if response.status >= 500:
        return
    try:
        body = json.loads(response.body or b"null")
    except ValueError:
        return
    if not isinstance(body, dict):
        return
    code, message = body.get("code"), str(body.get("msg") or "")
    about_members = code == 1470400 and "member" in message.lower()
    if code in MEMBER_CODES or about_members:
        raise _MembersRefused(f"Feishu code {code}: {message[:300]}")


def _unsure(error: RetryableDeliveryError) -> AmbiguousOutcome:
    return AmbiguousOutcome(
        f"{error.message} (the task may have been created)",
        status=error.status,
        excerpt=error.excerpt,
        retry_after=error.retry_after,
    )


def _member(account: str, role: str) -> dict[str, str]:
    return {"id": account, "type": "user", "role": role}


def _origin(spec: TaskSpec) -> dict[str, Any]:
    """Where the task came from, shown on its page: the relay, and the message's link."""
    origin: dict[str, Any] = {"platform_i18n_name": {"zh_cn": RELAY_LABEL, "en_us": RELAY_LABEL}}
    if spec.link and spec.link.startswith(("https://", "http://")) and len(spec.link) <= 1024:
        origin["href"] = {"url": spec.link, "title": _cut(spec.title, 512)}
    return origin


def _with_marker(text: str, marker: str) -> str:
    """``text`` cut to fit Feishu's 3,000 characters with the marker on its last line."""
    room = TEXT_LIMIT - len(marker) - 2
    return f"{_cut(text.rstrip(), room)}\n\n{marker}"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _task_ref(data: dict[str, Any]) -> TaskRef:
    """The task in a create/get/add_members answer: its key is the code Feishu shows on
    the task (``t6272302``), its id the guid the API takes."""
    task = data.get("task")
    if not isinstance(task, dict) or not task.get("guid"):
        raise RetryableDeliveryError("Feishu answered without the task's guid")
    guid = str(task["guid"])
    url = task.get("url")
    return TaskRef(key=str(task.get("task_id") or guid), id=guid, url=str(url) if url else None)


class FeishuTaskTarget(PmTarget):
    """Tasks in Feishu/Lark Task v2, made and followed up from chat commands."""

    kind: ClassVar[str] = "feishu_task"
    Options: ClassVar[type[PmOptions]] = FeishuTaskOptions
    options: FeishuTaskOptions
    default_rate_limits: ClassVar[tuple[str, ...]] = ("10/s", "100/min")
    title_limit: ClassVar[int] = TEXT_LIMIT
    key_pattern: ClassVar[str] = GUID
    account_platform: ClassVar[str] = "feishu"

    def __init__(self, config: TargetConfig) -> None:
        super().__init__(config)
        options = self.options
        self.tokens = TenantTokens(
            options.api_base, options.app_id, options.app_secret, config.allow_private
        )

    def client(self, context: DeliveryContext) -> FeishuTaskClient:
        return FeishuTaskClient(
            self.options,
            self.tokens,
            state=context.state,
            timeout=self.config.timeout or context.timeout,
            allow_private=self.config.allow_private,
        )
