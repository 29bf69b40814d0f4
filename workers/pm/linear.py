"""``linear`` target: a Linear issue per chat command, through Linear's GraphQL API.

A personal API key goes in ``Authorization`` as it is (no ``Bearer``); an OAuth token
as ``Bearer <token>``. Linear takes a client-chosen issue id (``IssueCreateInput.id``,
a UUID v4), so every create sends the delivery's ``idempotency_key`` as the id and
``find`` is ``issue(id:)``: a retry after a lost answer finds the issue the first
attempt made, and a second create with the same id, which Linear refuses, is taken
as done once the issue is found. Comments get an id derived from their marker the same
way. Linear has one assignee: the first mapped mention; the others are subscribed.

The team (``team_id``, or ``team_key`` resolved with ``teams``) and its workflow
states are cached in Redis for an hour, shared by every worker; ``done``/``reopen``
move an issue to ``done_state``/``reopen_state`` (by name), else to the team's first
state of type ``completed``/``unstarted``.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator

from relay.errors import (
    PermanentDeliveryError,
    RetryableDeliveryError,
    TargetThrottled,
)
from relay.state import keys
from workers.net.addresses import check_url, safe_url
from workers.net.http import HttpAnswer, guarded_pool, send
from workers.net.outcomes import excerpt, parse_retry_after, response_text
from workers.pm.flow import PmTarget
from workers.pm.options import PmOptions
from workers.pm.spec import (
    AmbiguousOutcome,
    AssigneeRefused,
    TaskRef,
    TaskSpec,
    idempotency_uuid,
)
from workers.targets.base import DeliveryContext

DEFAULT_RETRY_AFTER = 60.0  # RATELIMITED without a reset header
TEAM_TTL = 3600  # seconds the team's id and workflow states are cached
PRIORITIES = {"p1": 1, "p2": 2, "p3": 3, "p4": 4}  # Linear: 1 urgent, 2 high, 3 medium, 4 low
PEOPLE = re.compile(r"\b(assignee|subscriber|user)s?\b", re.IGNORECASE)

ISSUE_FIELDS = "id identifier url title team { id } assignee { id } subscribers { nodes { id } }"
STATE_FIELDS = "id key states { nodes { id name type position } }"
QUERIES = {
    "issue": f"query GroupRelayIssue($id: String!) {{ issue(id: $id) {{ {ISSUE_FIELDS} }} }}",
    "team": f"query GroupRelayTeam($id: String!) {{ team(id: $id) {{ {STATE_FIELDS} }} }}",
    "team_by_key": "query GroupRelayTeamByKey($key: String!) "
    f"{{ teams(filter: {{ key: {{ eq: $key }} }}) {{ nodes {{ {STATE_FIELDS} }} }} }}",
    "create": "mutation GroupRelayIssueCreate($input: IssueCreateInput!) "
    f"{{ issueCreate(input: $input) {{ success issue {{ {ISSUE_FIELDS} }} }} }}",
    "update": "mutation GroupRelayIssueUpdate($id: String!, $input: IssueUpdateInput!) "
    f"{{ issueUpdate(id: $id, input: $input) {{ success issue {{ {ISSUE_FIELDS} }} }} }}",
    "comment": "mutation GroupRelayCommentCreate($input: CommentCreateInput!) "
    "{ commentCreate(input: $input) { success comment { id } } }",
    "comment_by_id": "query GroupRelayComment($id: String!) { comment(id: $id) { id } }",
}


class LinearOptions(PmOptions):
    """What a ``linear`` target adds to the project-management options."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    api_key: str | None = Field(None, repr=False, description="A personal API key (lin_api_…).")
    oauth_token: str | None = Field(None, repr=False, description="An OAuth access token.")
    team_id: str | None = Field(None, description="The team's id (UUID).")
    team_key: str | None = Field(None, description='The team\'s key, e.g. "ENG".')
    done_state: str | None = Field(None, description="Workflow state name for done.")
    reopen_state: str | None = Field(None, description="Workflow state name for reopen.")
    api_base: str = Field("https://api.linear.app", description="POSTs go to <api_base>/graphql.")

    @field_validator("api_key", "oauth_token")
    @classmethod
    def _bare(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if not value:
            raise ValueError("must not be empty")
        if value.lower().startswith("bearer "):
            raise ValueError('give the key or token without "Bearer "; the relay adds what is due')
        return value

    @field_validator("team_key")
    @classmethod
    def _team_key(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9_]{1,16}", value.strip()):
            raise ValueError('must be the team key issue ids start with, e.g. "ENG"')
        return value.strip().upper() if value is not None else None

    @field_validator("api_base")
    @classmethod
    def _base(cls, value: str, info: ValidationInfo) -> str:
        context = info.context if isinstance(info.context, dict) else {}
        check_url(value, allow_private=bool(context.get("allow_private", True)))
        return value.rstrip("/").removesuffix("/graphql")

    @model_validator(mode="after")
    def _one_of_each(self) -> LinearOptions:
        if (self.api_key is None) == (self.oauth_token is None):
            raise ValueError("set exactly one of api_key and oauth_token")
        if (self.team_id is None) == (self.team_key is None):
            raise ValueError("set exactly one of team_id and team_key")
        return self

    @property
    def authorization(self) -> str:
        """The ``Authorization`` header: a personal key bare, an OAuth token as Bearer."""
        return self.api_key if self.api_key else f"Bearer {self.oauth_token}"


class LinearRefused(PermanentDeliveryError):
    """Linear answered with GraphQL errors (not throttling, not credentials)."""

    def __init__(self, action: str, errors: list[dict[str, Any]], status: int, text: str) -> None:
        self.errors = errors
        self.said = said(errors)
        codes = sorted({code for code in map(error_code, errors) if code})
        shown = f" ({', '.join(codes)})" if codes else ""
        super().__init__(
            f"Linear refused {action}: {self.said}{shown}", status=status, excerpt=text
        )

    @property
    def not_found(self) -> bool:
        return any(
            str(e.get("message", "")).startswith("Entity not found")
            or error_code(e) in ("ENTITY_NOT_FOUND", "NOT_FOUND")
            for e in self.errors
        )

    @property
    def about_people(self) -> bool:
        return PEOPLE.search(self.said) is not None


class LinearClient:
    """One Linear team's issues, as the project-management flow uses them."""

    native_idempotency = True

    def __init__(
        self,
        *,
        authorization: str,
        team_id: str | None,
        team_key: str | None,
        timeout: float,
        allow_private: bool,
        api_base: str = "https://api.linear.app",
        done_state: str | None = None,
        reopen_state: str | None = None,
        state: Any = None,
    ) -> None:
        self.authorization = authorization
        self.team_ref = team_id or f"key:{team_key}"
        self.team_key = team_key
        self.timeout = timeout
        self.allow_private = allow_private
        self.api_base = api_base.rstrip("/")
        self.done_state = done_state
        self.reopen_state = reopen_state
        self.redis = state
        self.kind = "API key" if not authorization.startswith("Bearer ") else "OAuth token"
        secret = authorization.removeprefix("Bearer ")
        self.secret = secret
        self.account = hashlib.sha256(f"{self.api_base}\n{secret}".encode()).hexdigest()[:16]
        self.local: dict[str, Any] = {}

    # -- the PmClient protocol ---------------------------------------------------------

    def find(self, spec: TaskSpec) -> TaskRef | None:
        return self.issue(spec.idempotency_key)

    def create(self, spec: TaskSpec) -> TaskRef:
        accounts = [a.account for a in spec.assignees if a.account]
        team = self.team()
        issue_input: dict[str, Any] = {
            "id": spec.idempotency_key,
            "teamId": team["id"],
            "title": spec.title,
            "description": described(spec.body, spec.marker, spec.link),
        }
        if accounts:
            issue_input["assigneeId"] = accounts[0]
        if accounts[1:]:
            issue_input["subscriberIds"] = accounts[1:]
        if spec.due is not None:
            issue_input["dueDate"] = spec.due.isoformat()
        if spec.priority in PRIORITIES:
            issue_input["priority"] = PRIORITIES[spec.priority]
        try:
            data = self.graphql("create", {"input": issue_input}, "creating the issue", True)
        except LinearRefused as refused:
            # The id may exist already (an earlier attempt made it): then it is done.
            existing = self.issue(spec.idempotency_key)
            if existing is not None:
                return existing
            if accounts and refused.about_people:
                raise AssigneeRefused([a.name for a in spec.assignees], refused.said) from None
            raise
        created = payload(data, "issueCreate", "issue")
        if created is None:
            existing = self.issue(spec.idempotency_key)
            if existing is None:
                raise PermanentDeliveryError("Linear did not create the issue (success: false)")
            return existing
        return self.ref(created)

    def lookup(self, key: str) -> TaskRef | None:
        return self.issue(key.strip())

    def assign(self, task: TaskRef, accounts: Sequence[str]) -> None:
        """Linear has one assignee: the first account; the rest (and the assignee it
        replaces) are subscribed, keeping the issue's other subscribers."""
        if not accounts:
            return
        current = self.issue_data(task.id, f"reading {task.key}")
        if current is None:
            raise PermanentDeliveryError(f"Linear has no issue {task.key} (deleted?)")
        first = accounts[0]
        before = ids_of(current.get("assignee"))
        subscribers = [n["id"] for n in nodes(current.get("subscribers"))]
        wanted = list(dict.fromkeys([*subscribers, *accounts[1:], *before]))
        wanted = [w for w in wanted if w != first]
        update: dict[str, Any] = {"assigneeId": first}
        if wanted != subscribers:
            update["subscriberIds"] = wanted
        try:
            data = self.graphql("update", {"id": task.id, "input": update}, f"assigning {task.key}")
        except LinearRefused as refused:
            if refused.about_people:
                raise AssigneeRefused(list(accounts), refused.said) from None
            raise
        issue = payload(data, "issueUpdate", "issue")
        if issue is None or first not in ids_of(issue.get("assignee")):
            raise AssigneeRefused([first], "Linear did not assign them")

    def close(self, task: TaskRef) -> None:
        self.move(task, self.done_state, "completed", "closing")

    def reopen(self, task: TaskRef) -> None:
        self.move(task, self.reopen_state, "unstarted", "reopening")

    def comment(self, task: TaskRef, text: str, marker: str) -> None:
        """A comment whose id is derived from ``marker``: Linear refuses a second one
        with the same id, which is then found and taken as done."""
        comment_id = idempotency_uuid(marker)
        body = f"{text.rstrip()}\n\n`{marker}`"
        comment_input = {"id": comment_id, "issueId": task.id, "body": body}
        try:
            self.graphql("comment", {"input": comment_input}, f"commenting on {task.key}", True)
        except LinearRefused:
            if self.comment_exists(comment_id):
                return
            raise

    # -- pieces ------------------------------------------------------------------------

    def issue(self, issue_id: str) -> TaskRef | None:
        data = self.issue_data(issue_id, f"reading issue {issue_id}")
        return None if data is None else self.ref(data)

    def issue_data(self, issue_id: str, action: str) -> dict[str, Any] | None:
        try:
            data = self.graphql("issue", {"id": issue_id}, action)
        except LinearRefused as refused:
            if refused.not_found:
                return None
            raise
        issue = data.get("issue")
        return issue if isinstance(issue, dict) else None

    def comment_exists(self, comment_id: str) -> bool:
        try:
            data = self.graphql("comment_by_id", {"id": comment_id}, "reading a comment")
        except LinearRefused as refused:
            if refused.not_found:
                return False
            raise
        return isinstance(data.get("comment"), dict)

    def move(self, task: TaskRef, name: str | None, kind: str, verb: str) -> None:
        team_id = task.extra.get("team")
        if not team_id:
            current = self.issue_data(task.id, f"reading {task.key}")
            if current is None:
                raise PermanentDeliveryError(f"Linear has no issue {task.key} (deleted?)")
            team_id = str((current.get("team") or {}).get("id") or "")
        state_id = self.state_id(team_id or None, name, kind)
        update = {"id": task.id, "input": {"stateId": state_id}}
        self.graphql("update", update, f"{verb} {task.key}")

    def state_id(self, team_id: str | None, name: str | None, kind: str) -> str:
        """The workflow state named ``name`` (any case), else the first of type ``kind``;
        a name the cache does not know refetches the team once (it may be new)."""
        for fresh in (False, True):
            team = self.team(team_id, fresh=fresh)
            states = sorted(nodes(team.get("states")), key=lambda s: s.get("position") or 0)
            for state in states:
                if (name and str(state.get("name", "")).casefold() == name.casefold()) or (
                    not name and state.get("type") == kind
                ):
                    return str(state["id"])
        names = ", ".join(str(s.get("name")) for s in states)
        wanted = f"a state named {name!r}" if name else f"a state of type {kind}"
        raise PermanentDeliveryError(
            f"Linear team {team.get('key') or team.get('id')} has no {wanted}; "
            f"its states: {names or 'none'}"
        )

    def team(self, team_id: str | None = None, *, fresh: bool = False) -> dict[str, Any]:
        """The team (``id``, ``key``, ``states``): the configured one unless ``team_id``
        names another (an issue looked up by key may be in any team). A team found by
        its key is cached under its id too."""
        ref = team_id or self.team_ref
        if not fresh and (cached := self.cache_get(ref)) is not None:
            return cached
        if ref.startswith("key:"):
            data = self.graphql("team_by_key", {"key": self.team_key}, "reading the team")
            found = nodes(data.get("teams"))
            if not found:
                raise PermanentDeliveryError(
                    f"Linear has no team with key {self.team_key} that this "
                    f"{self.kind} can see; check team_key"
                )
            team = found[0]
        else:
            try:
                data = self.graphql("team", {"id": ref}, "reading the team")
            except LinearRefused as refused:
                if not refused.not_found:
                    raise
                raise PermanentDeliveryError(
                    f"Linear has no team {ref} that this {self.kind} can see; check team_id"
                ) from None
            answered = data.get("team")
            team = answered if isinstance(answered, dict) else {}
        if not team.get("id"):
            raise PermanentDeliveryError(f"Linear answered no team for {ref}")
        for name in dict.fromkeys([ref, str(team["id"])]):
            self.cache_set(name, team)
        return team

    def cache_key(self, ref: str) -> str:
        return keys.linear_team(self.account, ref)

    def cache_get(self, ref: str) -> dict[str, Any] | None:
        """A team cached in Redis (else in this client) within ``TEAM_TTL`` seconds."""
        key = self.cache_key(ref)
        raw = self.redis.get(key) if self.redis is not None else self.local.get(key)
        try:
            value = json.loads(raw) if raw else None
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    def cache_set(self, ref: str, team: dict[str, Any]) -> None:
        key, encoded = self.cache_key(ref), json.dumps(team)
        if self.redis is not None:
            self.redis.set(key, encoded, ex=TEAM_TTL)
        else:
            self.local[key] = encoded

    def ref(self, issue: Mapping[str, Any]) -> TaskRef:
        identifier, issue_id = issue.get("identifier"), issue.get("id")
        if not isinstance(identifier, str) or not isinstance(issue_id, str):
            raise PermanentDeliveryError("Linear answered an issue without id or identifier")
        team = issue.get("team")
        extra = {"team": str(team["id"])} if isinstance(team, dict) and team.get("id") else {}
        url = issue.get("url")
        return TaskRef(
            key=identifier, id=issue_id, url=url if isinstance(url, str) else None, extra=extra
        )

    def graphql(
        self, name: str, variables: Mapping[str, Any], action: str, ambiguous: bool = False
    ) -> dict[str, Any]:
        """One operation; its ``data``. ``ambiguous`` marks a mutation that may have
        taken effect when its answer is lost: a timeout or 5xx is ``AmbiguousOutcome``."""
        try:
            answer = send(
                guarded_pool(self.allow_private),
                "POST",
                f"{self.api_base}/graphql",
                timeout=self.timeout,
                json={"query": QUERIES[name], "variables": dict(variables)},
                headers={"Authorization": self.authorization, "Accept": "application/json"},
            )
        except RetryableDeliveryError as exc:
            if ambiguous:
                raise AmbiguousOutcome(f"Linear, {action}: {exc.message}") from None
            raise
        status = answer.status
        text = excerpt(self.hide(response_text(answer)))
        body = json_body(answer)
        errors = graphql_errors(body)
        codes = {error_code(e) for e in errors}
        if "RATELIMITED" in codes or status == 429:
            raise TargetThrottled(
                f"Linear throttles this {self.kind} ({action}): {self.hide(said(errors))}",
                retry_after=retry_after(answer),
                status=status,
                excerpt=text,
            )
        if "AUTHENTICATION_ERROR" in codes or status == 401:
            raise PermanentDeliveryError(
                f"Linear refused the {self.kind}: {self.hide(said(errors)) or f'HTTP {status}'}",
                status=status,
                excerpt=text,
            )
        if status >= 500 or status in (408, 425):
            message = f"Linear, {action}: HTTP {status}"
            if ambiguous:
                raise AmbiguousOutcome(message, status=status, excerpt=text)
            raise RetryableDeliveryError(
                message,
                retry_after=parse_retry_after(answer.headers.get("retry-after")),
                status=status,
                excerpt=text,
            )
        if body is None:
            raise PermanentDeliveryError(
                f"Linear, {action}: HTTP {status}, not a GraphQL answer; check api_base "
                f"({safe_url(self.api_base)})",
                status=status,
                excerpt=text,
            )
        if errors:
            hidden = [{**e, "message": self.hide(str(e.get("message", "")))} for e in errors]
            raise LinearRefused(action, hidden, status, text)
        data = body.get("data")
        if not 200 <= status < 300 or not isinstance(data, dict):
            raise PermanentDeliveryError(
                f"Linear, {action}: HTTP {status} without data", status=status, excerpt=text
            )
        return data

    def hide(self, text: str) -> str:
        return text.replace(self.secret, "[secret]") if self.secret else text


class LinearTarget(PmTarget):
    """Issues in one Linear team."""

    kind: ClassVar[str] = "linear"
    Options: ClassVar[type[LinearOptions]] = LinearOptions
    options: LinearOptions
    # Linear's leaky bucket allows about 5,000 requests an hour per key (83/min);
    # a delivery makes one to three, and the key may serve other tools too.
    default_rate_limits: ClassVar[tuple[str, ...]] = ("80/min",)
    title_limit: ClassVar[int] = 255
    key_pattern: ClassVar[str] = r"[A-Z][A-Z0-9]+-\d+"
    account_platform: ClassVar[str] = "linear"

    def client(self, context: DeliveryContext) -> LinearClient:
        options = self.options
        return LinearClient(
            authorization=options.authorization,
            team_id=options.team_id,
            team_key=options.team_key,
            timeout=self.config.timeout or context.timeout,
            allow_private=self.config.allow_private,
            api_base=options.api_base,
            done_state=options.done_state,
            reopen_state=options.reopen_state,
            state=context.state,
        )


def described(body: str, marker: str, link: str | None) -> str:
    """The Markdown description: the body, the chat link, the marker as a last line."""
    parts = [body.rstrip(), f"[Message in chat]({link})" if link else "", f"`{marker}`"]
    return "\n\n".join(p for p in parts if p)


def json_body(answer: HttpAnswer) -> dict[str, Any] | None:
    try:
        data = answer.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def graphql_errors(body: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    errors = body.get("errors") if body else None
    return [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []


def error_code(error: Mapping[str, Any]) -> str:
    extensions = error.get("extensions")
    return str(extensions.get("code") or "") if isinstance(extensions, dict) else ""


def said(errors: Sequence[Mapping[str, Any]]) -> str:
    """Linear's own words: each error's message, with its user-facing text when it
    adds something."""
    parts = []
    for error in errors:
        message = str(error.get("message") or "").strip()
        extensions = error.get("extensions")
        shown = extensions.get("userPresentableMessage") if isinstance(extensions, dict) else None
        if isinstance(shown, str) and shown.strip() and shown.strip() not in message:
            message = f"{message} ({shown.strip()})" if message else shown.strip()
        if message:
            parts.append(message)
    return excerpt("; ".join(dict.fromkeys(parts)), 500)


def retry_after(answer: HttpAnswer) -> float:
    """Seconds until Linear's bucket refills: ``X-RateLimit-Requests-Reset`` (or the
    complexity one) is an epoch in milliseconds; else ``Retry-After``; else 60 s."""
    now = time.time()
    for header in ("x-ratelimit-requests-reset", "x-ratelimit-complexity-reset"):
        value = (answer.headers.get(header) or "").strip()
        if value.isdigit():
            reset = int(value) / 1000 if int(value) > 10**11 else int(value)
            if reset > now:
                return max(1.0, round(reset - now, 3))
    wait = parse_retry_after(answer.headers.get("retry-after"))
    return DEFAULT_RETRY_AFTER if wait is None else wait


def payload(data: Mapping[str, Any], field: str, entity: str) -> dict[str, Any] | None:
    """``data[field][entity]`` of a mutation payload, or None unless it succeeded."""
    result = data.get(field)
    if not isinstance(result, dict) or result.get("success") is False:
        return None
    value = result.get(entity)
    return value if isinstance(value, dict) else None


def nodes(connection: Any) -> list[dict[str, Any]]:
    items = connection.get("nodes") if isinstance(connection, dict) else None
    return [n for n in items if isinstance(n, dict)] if isinstance(items, list) else []


def ids_of(user: Any) -> list[str]:
    return [str(user["id"])] if isinstance(user, dict) and user.get("id") else []
