"""``jira`` target: Jira Cloud (REST v3) and Jira Data Center (REST v2) issues.

Jira has no idempotency key, so every issue carries two labels: ``group-relay`` and one
derived from the delivery's marker (``gr-<24 hex>``). ``find`` asks
``POST /rest/api/3/search/jql`` for that label; the legacy ``/rest/api/{2,3}/search``
answers 410 on Cloud and is used only for Data Center, which never had ``search/jql``.
The marker also ends the description, as small grey text (ADF has no comments).

Failures are classified per call: 429 (and 503) are rejections that carry
``Retry-After``; a timeout or 5xx on a create or comment is ``AmbiguousOutcome``
(the flow looks the issue up before trying again); 401/403 and validation errors are
permanent with Jira's own words. Credentials never appear in a message or excerpt.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar, Literal, NoReturn

from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator

from relay.errors import (
    PermanentDeliveryError,
    RetryableDeliveryError,
    TargetThrottled,
)
from workers.net.addresses import check_url
from workers.net.http import HttpAnswer, guarded_pool, send
from workers.net.outcomes import excerpt, parse_retry_after, response_text
from workers.pm import adf
from workers.pm.flow import PmTarget
from workers.pm.options import PmOptions
from workers.pm.spec import (
    MARKER_PREFIX,
    RELAY_LABEL,
    AmbiguousOutcome,
    AssigneeRefused,
    TaskRef,
    TaskSpec,
)
from workers.targets.base import DeliveryContext

SUMMARY_LIMIT = 255  # characters Jira takes in a summary
TEXT_LIMIT = 30_000  # characters of body we send; Jira refuses text fields over 32,767
LABEL_LIMIT = 255
PRIORITY_LEVELS = ("p1", "p2", "p3", "p4")
KEY = re.compile(r"^[A-Z][A-Z0-9_]+-\d+$")
DONE = ("done",)
OPEN = ("new", "indeterminate")


class JiraOptions(PmOptions):
    """What a ``jira`` target adds to the common PM options."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    base_url: str = Field(description="The site, e.g. https://acme.atlassian.net.")
    deployment: Literal["cloud", "data_center"] = "cloud"
    api_version: Literal[2, 3] | None = Field(
        None, description="REST version: 3 on Cloud (ADF), 2 for plain-text bodies."
    )
    email: str | None = Field(None, description="The bot account's email (Cloud).")
    api_token: str | None = Field(None, repr=False, description="Its API token (Cloud).")
    bearer_token: str | None = Field(None, repr=False, description="A Data Center PAT.")
    project: str = Field(description="The project key, e.g. OPS.")
    issue_type: str = "Task"
    done_transition: str | None = Field(None, description="Transition (or status) name.")
    reopen_transition: str | None = Field(None, description="Transition (or status) name.")
    priorities: dict[str, str] = Field(
        default_factory=dict, description="p1..p4 to the site's priority names."
    )

    @field_validator("base_url")
    @classmethod
    def _base(cls, value: str, info: ValidationInfo) -> str:
        context = info.context if isinstance(info.context, dict) else {}
        check_url(value, allow_private=bool(context.get("allow_private", True)))
        return value.rstrip("/")

    @field_validator("project")
    @classmethod
    def _project(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Z][A-Z0-9_]+", value):
            raise ValueError("must be a project key such as OPS (capitals, digits, _)")
        return value

    @field_validator("priorities")
    @classmethod
    def _levels(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(PRIORITY_LEVELS))
        if unknown:
            raise ValueError(f"keys must be p1..p4, not {', '.join(unknown)}")
        return value

    @model_validator(mode="after")
    def _credentials(self) -> JiraOptions:
        for name in ("email", "api_token", "bearer_token"):
            if getattr(self, name) == "":
                raise ValueError(f"{name} is empty (is its environment variable set?)")
        basic = self.email is not None or self.api_token is not None
        if basic and self.bearer_token is not None:
            raise ValueError("set email and api_token, or bearer_token, not both")
        if basic and (self.email is None or self.api_token is None):
            raise ValueError("email and api_token go together")
        if not basic and self.bearer_token is None:
            raise ValueError("set email and api_token (Cloud) or bearer_token (Data Center)")
        if self.deployment == "data_center" and self.api_version == 3:
            raise ValueError("Jira Data Center has no REST v3; use api_version 2")
        return self

    @property
    def version(self) -> int:
        """The REST version in use: as configured, else 3 on Cloud and 2 on Data Center."""
        if self.api_version is not None:
            return self.api_version
        return 3 if self.deployment == "cloud" else 2

    def authorization(self) -> str:
        if self.bearer_token is not None:
            return f"Bearer {self.bearer_token}"
        pair = f"{self.email}:{self.api_token}".encode()
        return "Basic " + base64.b64encode(pair).decode()

    def secrets(self) -> list[str]:
        """Every form a credential could take in an answer, for redaction."""
        found = [s for s in (self.api_token, self.bearer_token) if s]
        if self.api_token:
            found.append(self.authorization().removeprefix("Basic "))
        return found


def delivery_label(marker: str) -> str:
    """The per-delivery label: ``gr-`` and the marker's digest (labels take no spaces)."""
    digest = marker.removeprefix(MARKER_PREFIX)
    return "gr-" + re.sub(r"[^A-Za-z0-9_-]", "", digest)


def clean_label(label: str) -> str:
    """A label Jira accepts: no whitespace, at most 255 characters."""
    return re.sub(r"\s+", "_", label.strip())[:LABEL_LIMIT]


def summary_of(title: str) -> str:
    """One line, within Jira's limit (a newline in a summary is refused)."""
    line = " ".join(title.split())
    return line if len(line) <= SUMMARY_LIMIT else line[: SUMMARY_LIMIT - 1] + "…"


def capped(text: str, limit: int = TEXT_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _unique(labels: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for label in labels:
        if label:
            seen.setdefault(label, None)
    return list(seen)


class JiraClient:
    """Jira's REST API as the PM flow uses it (``workers.pm.spec.PmClient``)."""

    native_idempotency = False

    def __init__(self, options: JiraOptions, *, timeout: float, allow_private: bool) -> None:
        self.options = options
        self.timeout = timeout
        self.pools = guarded_pool(allow_private)
        self.api = f"{options.base_url}/rest/api/{options.version}"
        self.headers = {"Accept": "application/json", "Authorization": options.authorization()}
        self.secrets = options.secrets()

    # -- the PmClient operations ---------------------------------------------------

    def find(self, spec: TaskSpec) -> TaskRef | None:
        """The issue carrying this delivery's label, if an earlier attempt created it."""
        label = delivery_label(spec.marker)
        query = {"jql": f'labels = "{label}"', "fields": ["summary"], "maxResults": 10}
        path = "/search/jql" if self.options.deployment == "cloud" else "/search"
        answer = self._call("POST", path, "the search", json=query)
        issues = [i for i in self._json(answer).get("issues") or [] if isinstance(i, dict)]
        issues.sort(key=lambda issue: _number(issue.get("id")))  # the first one made
        return self._ref(issues[0]) if issues else None

    def create(self, spec: TaskSpec) -> TaskRef:
        fields = self.fields(spec)
        assignee = next(iter(fields.get("assignee", {}).values()), None)
        answer = self._call(
            "POST",
            "/issue",
            "the issue",
            json={"fields": fields},
            ambiguous=True,
            assignee=assignee,
        )
        return self._ref(self._json(answer))

    def fields(self, spec: TaskSpec) -> dict[str, Any]:
        """The create body's ``fields``: what the issue says and where it goes."""
        opts = self.options
        labels = [RELAY_LABEL, delivery_label(spec.marker)]
        labels += [clean_label(label) for label in (*opts.labels, *spec.labels)]
        fields: dict[str, Any] = {
            "project": {"key": opts.project},
            "issuetype": {"name": opts.issue_type},
            "summary": summary_of(spec.title),
            "description": self.text(spec.body, spec.marker, spec.link),
            "labels": _unique(labels),
        }
        accounts = [a.account for a in spec.assignees if a.account]
        if accounts:  # a Jira issue has one assignee: the first one named
            fields["assignee"] = self.user(accounts[0])
        if spec.due is not None:
            fields["duedate"] = spec.due.isoformat()
        priority = opts.priorities.get(spec.priority or "")
        if priority:
            fields["priority"] = {"name": priority}
        return fields

    def text(self, body: str, marker: str, link: str | None = None) -> Any:
        """A description or comment: ADF on v3, wiki-markup text on v2; marker last."""
        body = capped(body)
        if link and link not in body:
            body = f"{body}\n\nChat message: {link}" if body else f"Chat message: {link}"
        if self.options.version == 3:
            return adf.document(body, marker)
        tail = "{color:#97a0af}~" + marker + "~{color}"
        return f"{body}\n\n{tail}" if body else tail

    def user(self, account: str) -> dict[str, str]:
        """Cloud names people by accountId; Data Center by user name."""
        return {"accountId" if self.options.deployment == "cloud" else "name": account}

    def lookup(self, key: str) -> TaskRef | None:
        """``OPS-12``; ``12`` or ``#12`` mean an issue of the target's project."""
        wanted = key.strip().lstrip("#").upper()
        if wanted.isdigit():
            wanted = f"{self.options.project}-{int(wanted)}"
        if not KEY.match(wanted):
            return None
        answer = self._call("GET", f"/issue/{wanted}?fields=summary", "the lookup", missing=True)
        return None if answer.status == 404 else self._ref(self._json(answer))

    def assign(self, task: TaskRef, accounts: Sequence[str]) -> None:
        if not accounts:
            return
        try:
            self._call(
                "PUT",
                f"/issue/{task.key}/assignee",
                "the assignee",
                json=self.user(accounts[0]),
                assignee=accounts[0],
            )
        except PermanentDeliveryError as exc:
            if exc.status != 400:  # this endpoint's 400 means "not this user"
                raise
            raise AssigneeRefused([accounts[0]], exc.message) from None
        if len(accounts) > 1:
            raise AssigneeRefused(accounts[1:], f"a Jira issue has one assignee: {accounts[0]}")

    def close(self, task: TaskRef) -> None:
        self._move(task, DONE, self.options.done_transition, already=lambda c: c in DONE)

    def reopen(self, task: TaskRef) -> None:
        self._move(task, OPEN, self.options.reopen_transition, already=lambda c: c not in DONE)

    def comment(self, task: TaskRef, text: str, marker: str) -> None:
        self._call(
            "POST",
            f"/issue/{task.key}/comment",
            "the comment",
            json={"body": self.text(text, marker)},
            ambiguous=True,
        )

    # -- transitions ---------------------------------------------------------------

    def _move(
        self,
        task: TaskRef,
        categories: Sequence[str],
        name: str | None,
        already: Callable[[str], bool],
    ) -> None:
        """Apply the transition to a status of ``categories`` (or the one named), unless
        the issue is already where it should be: a repeated close changes nothing."""
        if already(self.status_category(task)):
            return
        answer = self._call("GET", f"/issue/{task.key}/transitions", "the transitions")
        transitions = [
            t for t in self._json(answer).get("transitions") or [] if isinstance(t, dict)
        ]
        chosen = pick_transition(transitions, categories, name)
        if chosen is None:
            offered = ", ".join(_describe(t) for t in transitions) or "none"
            wanted = f"named {name!r}" if name else f"to a {'/'.join(categories)} status"
            option = "done_transition" if categories == DONE else "reopen_transition"
            raise PermanentDeliveryError(
                f"{task.key} has no transition {wanted} (offered: {offered}); set {option}"
            )
        self._call(
            "POST",
            f"/issue/{task.key}/transitions",
            "the transition",
            json={"transition": {"id": str(chosen.get("id"))}},
        )

    def status_category(self, task: TaskRef) -> str:
        """The key of the issue's status category: ``new``, ``indeterminate`` or ``done``."""
        answer = self._call("GET", f"/issue/{task.key}?fields=status", "the lookup")
        status = (self._json(answer).get("fields") or {}).get("status") or {}
        return str((status.get("statusCategory") or {}).get("key") or "")

    # -- HTTP ----------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        action: str,
        *,
        json: Any = None,
        ambiguous: bool = False,
        assignee: str | None = None,
        missing: bool = False,
    ) -> HttpAnswer:
        """One request; a non-2xx answer raises (a 404 is returned when ``missing``).

        ``ambiguous``: the call may take effect although its answer is lost (a create or
        a comment). With ``assignee`` sent, a 400 about the assignee field is
        ``AssigneeRefused`` (Jira validates every field first: nothing was made)."""
        try:
            answer = send(
                self.pools,
                method,
                self.api + path,
                timeout=self.timeout,
                json=json,
                headers=self.headers,
            )
        except RetryableDeliveryError as exc:
            if ambiguous:
                raise AmbiguousOutcome(f"{exc.message}; Jira may have made {action}") from None
            raise
        if 200 <= answer.status < 300 or (missing and answer.status == 404):
            return answer
        if assignee is not None and answer.status == 400:
            refused = self._json(answer).get("errors") or {}
            if isinstance(refused, dict) and "assignee" in refused:
                raise AssigneeRefused([assignee], self._hide(str(refused["assignee"])))
        self._fail(answer, action, ambiguous)

    def _fail(self, answer: HttpAnswer, action: str, ambiguous: bool) -> NoReturn:
        status = answer.status
        detail = self._hide(self._detail(answer))
        shown = self._hide(excerpt(response_text(answer)))
        retry_after = parse_retry_after(answer.headers.get("retry-after"))
        if status == 429:
            reason = answer.headers.get("ratelimit-reason") or "rate limited"
            if retry_after is not None and "per-issue" not in reason:
                raise TargetThrottled(
                    f"Jira is throttling this site ({reason}); waiting {retry_after:g}s",
                    retry_after=retry_after,
                    status=status,
                    excerpt=shown,
                )
            raise RetryableDeliveryError(
                f"Jira rate limited {action} ({reason})",
                retry_after=retry_after,
                status=status,
                excerpt=shown,
            )
        if status >= 500 or status in (408, 425):
            error = AmbiguousOutcome if ambiguous else RetryableDeliveryError
            said = f": {detail}" if detail else ""
            raise error(
                f"Jira answered HTTP {status} to {action}{said}",
                retry_after=retry_after,
                status=status,
                excerpt=shown,
            )
        if status in (401, 403):
            raise PermanentDeliveryError(
                f"Jira refused the credentials (HTTP {status}): {detail or 'no reason given'}",
                status=status,
                excerpt=shown,
            )
        raise PermanentDeliveryError(
            f"Jira refused {action} (HTTP {status}): {detail or 'no reason given'}",
            status=status,
            excerpt=shown,
        )

    def _detail(self, answer: HttpAnswer) -> str:
        """Jira's own words: ``errorMessages`` and ``errors`` (field: message), else the
        start of the body (an HTML error page from a proxy, plain text on a 401)."""
        body = self._json(answer)
        words = [str(m) for m in body.get("errorMessages") or [] if m]
        errors = body.get("errors")
        if isinstance(errors, dict):
            words += [f"{field}: {message}" for field, message in errors.items()]
        if isinstance(body.get("message"), str):
            words.append(body["message"])
        if words:
            return "; ".join(words)[:500]
        return " ".join(re.sub(r"<[^>]+>", " ", answer.decode(300)).split())

    def _hide(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    @staticmethod
    def _json(answer: HttpAnswer) -> dict[str, Any]:
        try:
            data = answer.json()
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    def _ref(self, issue: dict[str, Any]) -> TaskRef:
        key = str(issue.get("key") or "")
        if not key:
            raise PermanentDeliveryError("Jira answered without an issue key")
        return TaskRef(key=key, id=str(issue.get("id") or key), url=self.browse(key))

    def browse(self, key: str) -> str:
        return f"{self.options.base_url}/browse/{key}"


def pick_transition(
    transitions: Sequence[dict[str, Any]], categories: Sequence[str], name: str | None
) -> dict[str, Any] | None:
    """The transition named ``name`` (or leading to a status of that name), else the
    first one leading to a status in ``categories``."""
    for transition in transitions:
        to = transition.get("to") or {}
        if name is not None:
            names = {str(transition.get("name", "")).casefold(), str(to.get("name", "")).casefold()}
            if name.casefold() in names:
                return transition
        elif (to.get("statusCategory") or {}).get("key") in categories:
            return transition
    return None


def _describe(transition: dict[str, Any]) -> str:
    to = (transition.get("to") or {}).get("name")
    return f"{transition.get('name')} → {to}" if to else str(transition.get("name"))


def _number(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


class JiraTarget(PmTarget):
    """Issues in one Jira project: created from group messages, closed by replies."""

    kind: ClassVar[str] = "jira"
    Options: ClassVar[type[PmOptions]] = JiraOptions
    options: JiraOptions
    address_option: ClassVar[str] = "base_url"
    # Atlassian publishes no figure for API-token burst limits (per endpoint, per
    # second); 100 deliveries a minute stays well under them and Retry-After does the rest.
    default_rate_limits: ClassVar[tuple[str, ...]] = ("100/min",)
    title_limit: ClassVar[int] = SUMMARY_LIMIT
    account_platform: ClassVar[str] = (
        "jira"  # people map: accountId (Cloud) or user name (Data Center)
    )
    key_pattern: ClassVar[str] = r"[A-Z][A-Z0-9_]+-\d+"

    def client(self, context: DeliveryContext) -> JiraClient:
        return JiraClient(
            self.options,
            timeout=self.config.timeout or context.timeout,
            allow_private=self.config.allow_private,
        )
