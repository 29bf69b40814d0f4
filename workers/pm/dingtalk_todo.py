"""``dingtalk_todo`` target: a DingTalk to-do (待办) per chat command.

The app creates to-dos *as* ``operator`` (a unionId: DingTalk files every to-do under a
user) with its access token (``workers.targets.dingtalk_app.AccessTokens``, cached in
Redis for all workers), the mentioned people as executors (their unionIds come from
the people map's ``dingtalk_union``). Each create carries ``sourceId`` (the delivery's
idempotency key), and ``find`` looks a to-do up by it before any repeat, so a timeout
after DingTalk created the to-do still ends with one. DingTalk answers errors as HTTP
status + ``{code, message}``; a refused token is refreshed once and the call repeated.

The to-do API has no comments: a comment is appended to the to-do's description, with
its marker, so a repeated comment is recognised.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, time
from typing import Any, ClassVar
from urllib.parse import quote
from zoneinfo import ZoneInfo

from pydantic import ConfigDict, Field, ValidationInfo, field_validator

from relay.config.models import TargetConfig
from relay.errors import (
    PermanentDeliveryError,
    RetryableDeliveryError,
    TargetThrottled,
)
from workers.net.addresses import check_url
from workers.net.http import HttpAnswer, guarded_pool, send
from workers.net.outcomes import classify, excerpt, parse_retry_after, response_text
from workers.pm.flow import PmTarget
from workers.pm.options import PmOptions
from workers.pm.spec import AmbiguousOutcome, AssigneeRefused, TaskRef, TaskSpec
from workers.targets.base import DeliveryContext
from workers.targets.dingtalk_app import AccessTokens
from workers.targets.dingtalk_messages import QPS_WAIT, json_body, token_rejected

SUBJECT_LIMIT = 1024  # characters
DESCRIPTION_LIMIT = 4096  # characters
COMMENT_LIMIT = 1500  # characters of one appended comment
PRIORITIES = {"p1": 40, "p2": 30, "p3": 20, "p4": 10}  # 非常紧急, 紧急, 普通, 较低
DUE_AT = time(23, 59)  # a due date is due at the end of that day, in the target's zone
LOOKUP = "DingTalk refused the to-do lookup"
UPDATE = "DingTalk refused to update the to-do"
HINTS = {
    "Forbidden.AccessDenied": "give the app the permission Todo.Todo.Write",
    "InvalidAuthentication": "check app_key and app_secret",
}


class DingTalkTodoOptions(PmOptions):
    """What a ``dingtalk_todo`` target adds to the project-management options."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    app_key: str = Field(min_length=1, description="The app's AppKey (Client ID).")
    app_secret: str = Field(min_length=1, repr=False, description="AppSecret (Client Secret).")
    api_base: str = "https://api.dingtalk.com"
    operator: str = Field(min_length=1, description="unionId the to-dos are created as.")
    creator: str | None = Field(None, min_length=1, description="unionId shown as creator.")
    detail_url: str | None = Field(
        None, description="Page a to-do links to when the message has no link of its own."
    )

    @field_validator("api_base")
    @classmethod
    def _base(cls, value: str, info: ValidationInfo) -> str:
        context = info.context if isinstance(info.context, dict) else {}
        check_url(value, allow_private=bool(context.get("allow_private", True)))
        return value.rstrip("/")

    @field_validator("detail_url")
    @classmethod
    def _web_page(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://", "dingtalk://")):
            raise ValueError("must be an https://, http:// or dingtalk:// URL")
        return value


class DingTalkTodoClient:
    """The to-do API as the shared flow uses it (``workers.pm.spec.PmClient``)."""

    native_idempotency = False  # sourceId is looked up by ``find``, not enforced alone

    def __init__(
        self,
        options: DingTalkTodoOptions,
        tokens: AccessTokens,
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
        """The to-do an earlier attempt created with this sourceId, if any."""
        path = f"{self._user(None)}/tasks/sources/{quote(spec.idempotency_key, safe='')}"
        return self._get_or_none(path)

    def create(self, spec: TaskSpec) -> TaskRef:
        executors = [a.account for a in spec.assignees if a.account]
        body: dict[str, Any] = {
            "subject": _cut(spec.title, SUBJECT_LIMIT) or "Task from chat",
            "description": _with_marker(spec.body, spec.marker, DESCRIPTION_LIMIT),
            "sourceId": spec.idempotency_key,
            "creatorId": self.options.creator or self.options.operator,
        }
        if executors:
            body["executorIds"] = executors
        if spec.due is not None:
            zone = ZoneInfo(self.options.timezone)
            body["dueTime"] = int(datetime.combine(spec.due, DUE_AT, zone).timestamp() * 1000)
        if spec.priority in PRIORITIES:
            body["priority"] = PRIORITIES[spec.priority]
        link = spec.link or self.options.detail_url
        if link:
            body["detailUrl"] = {"appUrl": link, "pcUrl": link}
        path = f"{self._user(None)}/tasks?{self._operator()}"
        response = self._exchange("POST", path, body, once=True)
        if 200 <= response.status < 300:
            return self._ref(json_body(response) or {})
        refusal = _Refusal(response)
        if refusal.exists:  # DingTalk already has a to-do with this sourceId
            found = self.find(spec)
            if found is not None:
                return found
        error = _error(response, "DingTalk refused the to-do", once=True)
        if refusal.executors and executors and type(error) is PermanentDeliveryError:
            names = [f"@{a.name}" for a in spec.assignees if a.account]
            raise AssigneeRefused(names, refusal.reason)
        raise error

    def lookup(self, key: str) -> TaskRef | None:
        """A to-do by its id (the key DingTalk gives; people do not type one)."""
        return self._get_or_none(f"{self._user(None)}/tasks/{quote(key, safe='')}")

    def assign(self, task: TaskRef, accounts: Sequence[str]) -> None:
        """Add executors: DingTalk replaces the list, so the current one is read first."""
        current = self._call("GET", self._task_path(task), None, what=LOOKUP)
        executors = current.get("executorIds")
        known = executors if isinstance(executors, list) else []
        merged = list(dict.fromkeys([*map(str, known), *accounts]))
        response = self._exchange("PUT", self._update_path(task), {"executorIds": merged})
        if 200 <= response.status < 300:
            return
        refusal, error = _Refusal(response), _error(response, "DingTalk refused the executors")
        if refusal.executors and type(error) is PermanentDeliveryError:
            raise AssigneeRefused(list(accounts), refusal.reason)
        raise error

    def close(self, task: TaskRef) -> None:
        self._call("PUT", self._update_path(task), {"done": True}, what=UPDATE)

    def reopen(self, task: TaskRef) -> None:
        self._call("PUT", self._update_path(task), {"done": False}, what=UPDATE)

    def comment(self, task: TaskRef, text: str, marker: str) -> None:
        """Append ``text`` and ``marker`` to the description (the to-do API has no
        comments), unless the marker is already there."""
        current = self._call("GET", self._task_path(task), None, what=LOOKUP)
        description = str(current.get("description") or "")
        if marker in description:
            return
        addition = _with_marker(text, marker, COMMENT_LIMIT)
        room = DESCRIPTION_LIMIT - len(addition) - 2
        body = {"description": f"{_cut(description, room)}\n\n{addition}"}
        self._call("PUT", self._update_path(task), body, what=UPDATE)

    # -- calls -------------------------------------------------------------------------

    def _user(self, task: TaskRef | None) -> str:
        """The path of the user the to-dos are filed under (the one a task was made as)."""
        operator = (task.extra.get("operator") if task else None) or self.options.operator
        return f"/v1.0/todo/users/{quote(operator, safe='')}"

    def _operator(self) -> str:
        return f"operatorId={quote(self.options.operator, safe='')}"

    def _task_path(self, task: TaskRef) -> str:
        return f"{self._user(task)}/tasks/{quote(task.id, safe='')}"

    def _update_path(self, task: TaskRef) -> str:
        return f"{self._task_path(task)}?{self._operator()}"

    def _ref(self, data: dict[str, Any]) -> TaskRef:
        task_id = data.get("id")
        if not task_id:
            raise RetryableDeliveryError("DingTalk answered without the to-do's id")
        extra = {"operator": self.options.operator}
        return TaskRef(key=str(task_id), id=str(task_id), url=None, extra=extra)

    def _get_or_none(self, path: str) -> TaskRef | None:
        """The to-do a GET answers, or None when DingTalk says there is none."""
        response = self._exchange("GET", path, None)
        if 200 <= response.status < 300:
            found = json_body(response) or {}
            return self._ref(found) if found.get("id") else None
        if _Refusal(response).missing:
            return None
        raise _error(response, LOOKUP)

    def _call(
        self, method: str, path: str, body: dict[str, Any] | None, *, what: str
    ) -> dict[str, Any]:
        """The JSON body of a call that must succeed; any refusal raises its error."""
        response = self._exchange(method, path, body)
        if 200 <= response.status < 300:
            return json_body(response) or {}
        raise _error(response, what)

    def _exchange(
        self, method: str, path: str, body: dict[str, Any] | None, *, once: bool = False
    ) -> HttpAnswer:
        """One call with the access token, refreshed and repeated once if DingTalk
        refuses it. ``once`` marks a create: a transport failure, which may have come
        after DingTalk acted, is an ``AmbiguousOutcome``."""
        url = f"{self.options.api_base}{path}"
        data = None if body is None else json.dumps(body, ensure_ascii=False).encode()
        token = self.tokens.get(self.state, self.timeout)
        response = self._send(method, url, data, token, once)
        if token_rejected(response):  # expired or revoked early
            token = self.tokens.get(self.state, self.timeout, rejected=token)
            response = self._send(method, url, data, token, once)
        return response

    def _send(
        self, method: str, url: str, data: bytes | None, token: str, once: bool
    ) -> HttpAnswer:
        try:
            return send(
                guarded_pool(self.allow_private),
                method,
                url,
                timeout=self.timeout,
                data=data,
                headers={
                    "x-acs-dingtalk-access-token": token,
                    "Content-Type": "application/json; charset=utf-8",
                },
            )
        except RetryableDeliveryError as exc:
            raise _unsure(exc) if once else exc from None


class _Refusal:
    """What a DingTalk refusal says beyond its error: the sourceId is taken, there is
    no such to-do, or an executor was refused (DingTalk has no dedicated code for
    that; its message names the executor or user)."""

    def __init__(self, response: HttpAnswer) -> None:
        body = json_body(response) or {}
        code, message = str(body.get("code") or ""), str(body.get("message") or "")
        self.reason = f"{code}: {message[:300]}" if message else code or f"HTTP {response.status}"
        said = f"{code} {message}".lower()
        self.exists = response.status == 400 and "task exist" in said
        self.missing = response.status == 404 or (
            response.status == 400 and ("notexist" in said or "not exist" in said)
        )
        self.executors = response.status == 400 and any(
            word in said for word in ("executor", "unionid", "user")
        )


def _error(response: HttpAnswer, what: str, *, once: bool = False) -> Exception:
    """The delivery error a DingTalk refusal means (``{code, message}`` bodies); for a
    create (``once``), a 5xx may have come after DingTalk acted: ambiguous."""
    status = response.status
    body = json_body(response) or {}
    code, message = str(body.get("code") or ""), str(body.get("message") or "")[:300]
    detail = " ".join(p for p in (f"HTTP {status}", code) if p)
    said = f"{what} ({detail}: {message})" if message else f"{what} ({detail})"
    text = excerpt(response_text(response))
    wait = parse_retry_after(response.headers.get("retry-after"))
    throttled = "QpsLimit" in code or code.startswith("Throttling") or "flowControl" in code
    if throttled or status == 429:
        return TargetThrottled(said, retry_after=wait or QPS_WAIT, status=status, excerpt=text)
    if status in (408, 425) or status >= 500 or "lockError" in code:
        error = RetryableDeliveryError(said, retry_after=wait, status=status, excerpt=text)
        return _unsure(error) if once and (status >= 500 or "lockError" in code) else error
    if token_rejected(response):  # even a token fetched a moment ago: try again later
        return RetryableDeliveryError(
            f"{said} (after a token refresh)", status=status, excerpt=text
        )
    if not body:
        try:
            classify(response)
        except PermanentDeliveryError as exc:
            exc.message = f"{what}: {exc.message}"
            exc.args = (exc.message,)
            return exc
    hint = next((h for prefix, h in HINTS.items() if code.startswith(prefix)), None)
    denied = body.get("accessdenieddetail")
    scopes = denied.get("requiredScopes") if isinstance(denied, dict) else None
    if hint and isinstance(scopes, list) and scopes:
        hint = f"give the app the permission {', '.join(map(str, scopes))}"
    return PermanentDeliveryError(f"{said}; {hint}" if hint else said, status=status, excerpt=text)


def _unsure(error: RetryableDeliveryError) -> AmbiguousOutcome:
    return AmbiguousOutcome(
        f"{error.message} (the to-do may have been created)",
        status=error.status,
        excerpt=error.excerpt,
        retry_after=error.retry_after,
    )


def _with_marker(text: str, marker: str, limit: int) -> str:
    room = limit - len(marker) - 2
    return f"{_cut(text.rstrip(), room)}\n\n{marker}"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(0, limit - 1)].rstrip() + "…"


class DingTalkTodoTarget(PmTarget):
    """To-dos in DingTalk, made and followed up from chat commands."""

    kind: ClassVar[str] = "dingtalk_todo"
    Options: ClassVar[type[PmOptions]] = DingTalkTodoOptions
    options: DingTalkTodoOptions
    default_rate_limits: ClassVar[tuple[str, ...]] = ("20/s",)
    title_limit: ClassVar[int] = SUBJECT_LIMIT
    key_pattern: ClassVar[str] = r"[A-Za-z0-9_]{16,64}"
    account_platform: ClassVar[str] = "dingtalk_union"

    def __init__(self, config: TargetConfig) -> None:
        super().__init__(config)
        options = self.options
        self.tokens = AccessTokens(
            options.api_base, options.app_key, options.app_secret, config.allow_private
        )

    def client(self, context: DeliveryContext) -> DingTalkTodoClient:
        return DingTalkTodoClient(
            self.options,
            self.tokens,
            state=context.state,
            timeout=self.config.timeout or context.timeout,
            allow_private=self.config.allow_private,
        )
