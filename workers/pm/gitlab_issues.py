"""``gitlab_issues`` target: a GitLab issue per chat command (gitlab.com or self-managed).

GitLab's REST API v4, authenticated with ``PRIVATE-TOKEN``. GitLab has no idempotency
key, so every issue carries a hidden marker (``<!-- group-relay:… -->``) at the end of
its description and the ``group-relay`` label; ``find`` lists the project's issues with
that label (all states, newest first; the list API, never search) and matches the
marker. Comments carry their own marker and are looked for before being posted, so a
retry after a lost answer never posts twice.

GitLab answers 201 and silently drops assignees it cannot assign (unknown users,
users who cannot see the project, every assignee but the first on GitLab Free), so
assignees are compared with what the answer holds: after a create the ones missing
are named in ``TaskRef.extra["unassigned"]``; ``assign`` raises ``AssigneeRefused``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal
from urllib.parse import quote, urlencode

from pydantic import ConfigDict, Field, ValidationInfo, field_validator

from relay.errors import (
    PermanentDeliveryError,
    RetryableDeliveryError,
    TargetThrottled,
)
from workers.net.addresses import check_url, safe_url
from workers.net.http import HttpAnswer, guarded_pool, send
from workers.net.outcomes import excerpt, parse_retry_after, response_text
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

DEFAULT_RETRY_AFTER = 60.0  # GitLab's limits reset each minute; a 429 says when, mostly
PAGE_SIZE = 50
FIND_PAGES = 2  # the newest 100 relay issues: a retry comes within hours of its create
DROPPED = (
    "GitLab did not assign them (unknown user, no access to the project, "
    "or the project allows one assignee)"
)
Priority = Literal["p1", "p2", "p3", "p4"]


class GitLabIssuesOptions(PmOptions):
    """What a ``gitlab_issues`` target adds to the project-management options."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    token: str = Field(min_length=1, repr=False, description="Sent as PRIVATE-TOKEN.")
    project: str = Field(min_length=1, description='Numeric id or path ("group/name").')
    base_url: str = Field("https://gitlab.com", description="The GitLab instance.")
    done_label: str | None = Field(None, description="Added on close, removed on reopen.")
    priority_labels: dict[Priority, str] = Field(
        default_factory=dict, description="Label per priority (p1..p4); none by default."
    )

    @field_validator("project", mode="before")
    @classmethod
    def _project(cls, value: object) -> object:
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        if isinstance(value, str):
            value = value.strip().strip("/")
            if not value:
                raise ValueError('must be the numeric project id or its path ("group/name")')
        return value

    @field_validator("base_url")
    @classmethod
    def _base(cls, value: str, info: ValidationInfo) -> str:
        context = info.context if isinstance(info.context, dict) else {}
        check_url(value, allow_private=bool(context.get("allow_private", True)))
        value = value.rstrip("/")
        return value.removesuffix("/api/v4")


class GitLabClient:
    """One GitLab project's issues, as the project-management flow uses them."""

    native_idempotency = False

    def __init__(
        self,
        *,
        base_url: str,
        token: str,
        project: str,
        timeout: float,
        allow_private: bool,
        done_label: str | None = None,
        priority_labels: Mapping[str, str] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.project = project
        self.timeout = timeout
        self.allow_private = allow_private
        self.done_label = done_label
        self.priority_labels = dict(priority_labels or {})
        self.api = f"{self.base_url}/api/v4/projects/{quote(project, safe='')}"

    # -- the PmClient protocol ---------------------------------------------------------

    def find(self, spec: TaskSpec) -> TaskRef | None:
        for page in range(1, FIND_PAGES + 1):
            params = {
                "labels": RELAY_LABEL,
                "state": "all",
                "order_by": "created_at",
                "sort": "desc",
                "per_page": PAGE_SIZE,
                "page": page,
                "scope": "all",
            }
            issues = self.call("GET", "/issues", "listing issues", params=params)
            if not isinstance(issues, list):
                return None
            for issue in issues:
                if isinstance(issue, dict) and spec.marker in str(issue.get("description") or ""):
                    return self.ref(issue, spec)
            if len(issues) < PAGE_SIZE:
                return None
        return None

    def create(self, spec: TaskSpec) -> TaskRef:
        ids, unusable = user_ids([a.account or "" for a in spec.assignees])
        if unusable:
            names = [a.name for a in spec.assignees if (a.account or "") in unusable]
            raise AssigneeRefused(names, "a GitLab assignee is a numeric user id")
        body: dict[str, Any] = {
            "title": spec.title,
            "description": described(spec),
            "labels": ",".join(self.labels(spec)),
        }
        if ids:
            body["assignee_ids"] = ids
        if spec.due is not None:
            body["due_date"] = spec.due.isoformat()
        issue = self.call("POST", "/issues", "creating the issue", body=body, ambiguous=True)
        return self.ref(issue, spec)

    def lookup(self, key: str) -> TaskRef | None:
        iid = key.strip().removeprefix("#")
        if not iid.isdigit():
            return None
        issue = self.call("GET", f"/issues/{iid}", f"reading issue #{iid}", missing_ok=True)
        return None if issue is None else self.ref(issue)

    def assign(self, task: TaskRef, accounts: Sequence[str]) -> None:
        ids, unusable = user_ids(accounts)
        if ids:
            current = self.call("GET", f"/issues/{task.id}", f"reading issue {task.key}")
            wanted = list(dict.fromkeys([*assignee_ids(current), *ids]))
            issue = self.call(
                "PUT", f"/issues/{task.id}", f"assigning {task.key}", body={"assignee_ids": wanted}
            )
            got = assignee_ids(issue)
            unusable += [str(i) for i in ids if i not in got]
        if unusable:
            raise AssigneeRefused(unusable, DROPPED)

    def close(self, task: TaskRef) -> None:
        body: dict[str, Any] = {"state_event": "close"}
        if self.done_label:
            body["add_labels"] = self.done_label
        self.call("PUT", f"/issues/{task.id}", f"closing {task.key}", body=body)

    def reopen(self, task: TaskRef) -> None:
        body: dict[str, Any] = {"state_event": "reopen"}
        if self.done_label:
            body["remove_labels"] = self.done_label
        self.call("PUT", f"/issues/{task.id}", f"reopening {task.key}", body=body)

    def comment(self, task: TaskRef, text: str, marker: str) -> None:
        """A note ending with the hidden marker, unless one with it is already there."""
        notes_path = f"/issues/{task.id}/notes"
        params = {"sort": "desc", "order_by": "created_at", "per_page": PAGE_SIZE}
        notes = self.call("GET", notes_path, f"reading notes of {task.key}", params=params)
        if isinstance(notes, list) and any(
            isinstance(n, dict) and marker in str(n.get("body") or "") for n in notes
        ):
            return
        body = {"body": f"{text.rstrip()}\n\n<!-- {marker} -->"}
        self.call("POST", notes_path, f"commenting on {task.key}", body=body, ambiguous=True)

    # -- pieces ------------------------------------------------------------------------

    def labels(self, spec: TaskSpec) -> list[str]:
        """``group-relay`` (``find`` lists by it), the spec's, and the priority's label;
        commas split labels in GitLab's API, so they cannot be part of one."""
        priority = self.priority_labels.get(spec.priority or "")
        names = [RELAY_LABEL, *spec.labels, *([priority] if priority else [])]
        cleaned = (" ".join(n.replace(",", " ").split()) for n in names)
        return list(dict.fromkeys(n for n in cleaned if n))

    def ref(self, issue: Any, spec: TaskSpec | None = None) -> TaskRef:
        if not isinstance(issue, dict) or not isinstance(issue.get("iid"), int):
            raise PermanentDeliveryError(
                f"GitLab at {safe_url(self.base_url)} answered without an issue; check base_url"
            )
        iid = issue["iid"]
        extra: dict[str, str] = {"project": self.project}
        if spec is not None:
            got = {str(i) for i in assignee_ids(issue)}
            dropped = [a.name for a in spec.assignees if (a.account or "").strip() not in got]
            if dropped:
                extra["unassigned"] = ", ".join(dropped)
                extra["unassigned_reason"] = DROPPED
        url = issue.get("web_url")
        return TaskRef(
            key=f"#{iid}", id=str(iid), url=url if isinstance(url, str) else None, extra=extra
        )

    def call(
        self,
        method: str,
        path: str,
        action: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Mapping[str, Any] | None = None,
        ambiguous: bool = False,
        missing_ok: bool = False,
    ) -> Any:
        """One API call; the answer's JSON, or None for a 404 when ``missing_ok``.

        ``ambiguous`` marks a call that may have taken effect when its answer is lost
        (a POST): a timeout, a reset connection or a 5xx is then ``AmbiguousOutcome``.
        """
        url = self.api + path + (f"?{urlencode(params)}" if params else "")
        headers = {"PRIVATE-TOKEN": self.token, "Accept": "application/json"}
        try:
            answer = send(
                guarded_pool(self.allow_private),
                method,
                url,
                timeout=self.timeout,
                json=dict(body) if body is not None else None,
                headers=headers,
            )
        except RetryableDeliveryError as exc:
            if ambiguous:
                raise AmbiguousOutcome(f"GitLab, {action}: {exc.message}") from None
            raise
        if missing_ok and answer.status == 404:
            return None
        if 200 <= answer.status < 300:
            try:
                return answer.json()
            except ValueError:
                raise PermanentDeliveryError(
                    f"GitLab, {action}: the answer is not JSON; check base_url "
                    f"({safe_url(self.base_url)})",
                    status=answer.status,
                ) from None
        raise self.failure(answer, action, ambiguous)

    def failure(
        self, answer: HttpAnswer, action: str, ambiguous: bool
    ) -> PermanentDeliveryError | RetryableDeliveryError:
        """The error a non-2xx answer means, with GitLab's own message."""
        status = answer.status
        text = excerpt(self.hide(response_text(answer)))
        said = self.hide(gitlab_message(answer))
        if status == 429:
            wait = parse_retry_after(answer.headers.get("retry-after"))
            return TargetThrottled(
                f"GitLab throttles this token ({action}): HTTP 429 {said}".rstrip(),
                retry_after=DEFAULT_RETRY_AFTER if wait is None else wait,
                status=status,
                excerpt=text,
            )
        if status in (408, 425) or status >= 500:
            message = f"GitLab, {action}: HTTP {status} {said}".rstrip()
            if ambiguous:
                return AmbiguousOutcome(message, status=status, excerpt=text)
            wait = parse_retry_after(answer.headers.get("retry-after"))
            return RetryableDeliveryError(message, retry_after=wait, status=status, excerpt=text)
        if status == 401:
            hint = "check token: it may be expired or revoked"
            message = f"GitLab refused the token (HTTP 401): {said}; {hint}"
        elif status == 403:
            hint = "the token needs the api scope and at least the Planner or Reporter role"
            message = (
                f"GitLab refused {action} in project {self.project} (HTTP 403): {said}; {hint}"
            )
        elif status == 404:
            hint = "check project and base_url, and that the token can see the project"
            message = f"GitLab, {action} in project {self.project}: {said} (HTTP 404); {hint}"
        elif 300 <= status < 400:
            message = f"GitLab, {action}: HTTP {status} redirect not followed; check base_url"
        else:
            message = f"GitLab refused {action} (HTTP {status}): {said}"
        return PermanentDeliveryError(message, status=status, excerpt=text)

    def hide(self, text: str) -> str:
        return text.replace(self.token, "[token]") if self.token else text


class GitLabIssuesTarget(PmTarget):
    """Issues in one GitLab project."""

    kind: ClassVar[str] = "gitlab_issues"
    Options: ClassVar[type[GitLabIssuesOptions]] = GitLabIssuesOptions
    options: GitLabIssuesOptions
    address_option: ClassVar[str] = "base_url"
    # GitLab's issue-creation limit is 300/min per user and project where it is on
    # (gitlab-org/gitlab!28130), notes 300/min; a delivery makes two to four calls.
    default_rate_limits: ClassVar[tuple[str, ...]] = ("60/min",)
    title_limit: ClassVar[int] = 255
    key_pattern: ClassVar[str] = r"#\d+"
    account_platform: ClassVar[str] = "gitlab"

    def client(self, context: DeliveryContext) -> GitLabClient:
        options = self.options
        return GitLabClient(
            base_url=options.base_url,
            token=options.token,
            project=options.project,
            timeout=self.config.timeout or context.timeout,
            allow_private=self.config.allow_private,
            done_label=options.done_label,
            priority_labels={str(k): v for k, v in options.priority_labels.items()},
        )


def described(spec: TaskSpec) -> str:
    """The description: the body, the chat link, then the hidden marker ``find`` matches."""
    parts = [spec.body.rstrip()]
    if spec.link:
        parts.append(f"[Message in chat]({spec.link})")
    parts.append(f"<!-- {spec.marker} -->")
    return "\n\n".join(p for p in parts if p)


def user_ids(accounts: Sequence[str]) -> tuple[list[int], list[str]]:
    """GitLab user ids from people-map accounts, and the accounts that are not ids."""
    ids: list[int] = []
    unusable: list[str] = []
    for account in accounts:
        value = account.strip()
        if value.isdigit() and int(value) > 0:
            ids.append(int(value))
        else:
            unusable.append(account)
    return list(dict.fromkeys(ids)), unusable


def assignee_ids(issue: Any) -> set[int]:
    """The ids of the users an issue (as GitLab answers it) is assigned to."""
    people = issue.get("assignees") if isinstance(issue, dict) else None
    if not isinstance(people, list):
        return set()
    return {p["id"] for p in people if isinstance(p, dict) and isinstance(p.get("id"), int)}


def gitlab_message(answer: HttpAnswer) -> str:
    """GitLab's own words: ``message`` (a string, or field -> errors), else ``error``
    and ``error_description`` (OAuth-style), else the start of the body."""
    try:
        data = json.loads(answer.body)
    except ValueError:
        return " ".join(response_text(answer, 300).split())
    if not isinstance(data, dict):
        return excerpt(str(data), 300)
    message = data.get("message")
    if isinstance(message, dict):
        fields = []
        for name, errors in message.items():
            said = ", ".join(map(str, errors)) if isinstance(errors, list) else str(errors)
            fields.append(f"{name} {said}")
        return excerpt("; ".join(fields), 300)
    if isinstance(message, list):
        return excerpt("; ".join(map(str, message)), 300)
    if message:
        return excerpt(str(message), 300)
    error, description = data.get("error"), data.get("error_description")
    if error or description:
        return excerpt(": ".join(str(x) for x in (error, description) if x), 300)
    return excerpt(json.dumps(data, ensure_ascii=False), 300)
