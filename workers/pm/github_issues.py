"""``github_issues`` target: issues in one GitHub (or GitHub Enterprise) repository.

GitHub has no idempotency key. Every issue gets the label ``group-relay`` and ends with
the delivery's marker as an HTML comment (``<!-- group-relay:… -->``, invisible when
rendered); ``find`` reads the newest labelled issues through the *list* API and matches
the marker. The search API is never used: its index lags, and a lookup through it has
created duplicates for others.

Authentication is a token (a fine-grained PAT) or a GitHub App installation: the
app's installation token is minted with a JWT signed by its private key and cached in
Redis for every worker until shortly before it expires.

Failures: 403/429 with ``retry-after``, an exhausted primary limit
(``x-ratelimit-remaining: 0``) or a secondary limit hold the whole target back
(``TargetThrottled``); a timeout or 5xx on a create or comment is ``AmbiguousOutcome``;
401, 404 (repository), 410 (issues disabled) and 422 are permanent with GitHub's words.
"""

from __future__ import annotations

import base64
import hashlib
import json as jsonlib
import re
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar, NoReturn

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator

from relay.config.models import TargetConfig
from relay.errors import (
    PermanentDeliveryError,
    RetryableDeliveryError,
    TargetThrottled,
)
from relay.state import keys
from workers.net.addresses import check_url
from workers.net.http import HttpAnswer, guarded_pool, send
from workers.net.outcomes import excerpt, parse_retry_after, response_text
from workers.net.shared_tokens import SharedToken, cache_life
from workers.pm.flow import PmTarget
from workers.pm.options import PmOptions
from workers.pm.spec import RELAY_LABEL, AmbiguousOutcome, AssigneeRefused, TaskRef, TaskSpec
from workers.targets.base import DeliveryContext

API_VERSION = "2022-11-28"
TITLE_LIMIT = 256  # characters GitHub takes in an issue title
BODY_LIMIT = 65_000  # GitHub refuses bodies over 65,536 characters; room for the marker
FIND_PAGES = 2  # pages of 50 of the newest labelled issues that ``find`` reads
SECONDARY_WAIT = 60.0  # seconds after a secondary limit that names no wait (GitHub's advice)
REPO = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
NUMBER = re.compile(r"^#?(\d{1,10})$")


class GitHubIssuesOptions(PmOptions):
    """What a ``github_issues`` target adds to the common PM options."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    repo: str = Field(description="owner/name")
    api_base: str = Field("https://api.github.com", description="Enterprise: https://host/api/v3")
    token: str | None = Field(None, repr=False, description="A fine-grained PAT.")
    app_id: str | None = Field(None, description="GitHub App: its App ID or Client ID.")
    installation_id: int | None = Field(None, ge=1, description="The app's installation.")
    private_key: str | None = Field(None, repr=False, description="The app's PEM key.")

    @field_validator("api_base")
    @classmethod
    def _base(cls, value: str, info: ValidationInfo) -> str:
        context = info.context if isinstance(info.context, dict) else {}
        check_url(value, allow_private=bool(context.get("allow_private", True)))
        return value.rstrip("/")

    @field_validator("repo")
    @classmethod
    def _repo(cls, value: str) -> str:
        if not REPO.match(value.strip()):
            raise ValueError("must be owner/name, e.g. acme/ops")
        return value.strip()

    @field_validator("private_key")
    @classmethod
    def _key(cls, value: str | None) -> str | None:
        if value:
            load_key(value)
        return value

    @model_validator(mode="after")
    def _credentials(self) -> GitHubIssuesOptions:
        for name in ("token", "app_id", "private_key"):
            if getattr(self, name) == "":
                raise ValueError(f"{name} is empty (is its environment variable set?)")
        app = [self.app_id, self.installation_id, self.private_key]
        if self.token is not None and any(v is not None for v in app):
            raise ValueError("set token, or app_id/installation_id/private_key, not both")
        if self.token is None and not all(v is not None for v in app):
            raise ValueError("set token, or all of app_id, installation_id and private_key")
        return self


def load_key(pem: str) -> rsa.RSAPrivateKey:
    """The app's RSA private key; a ``ValueError`` that does not echo the key."""
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError):
        raise ValueError("is not a PEM private key (the .pem file GitHub gave)") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("must be the RSA key GitHub generated for the app")
    return key


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def app_jwt(app_id: str, private_key: str, now: float | None = None) -> str:
    """The RS256 JWT a GitHub App authenticates with: issued a minute in the past (clock
    drift), valid nine minutes (GitHub allows ten)."""
    issued = int(now if now is not None else time.time()) - 60
    header = _b64url(jsonlib.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    claims = {"iat": issued, "exp": issued + 600, "iss": app_id}
    payload = _b64url(jsonlib.dumps(claims).encode())
    signing_input = f"{header}.{payload}".encode()
    signature = load_key(private_key).sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return f"{header}.{payload}.{_b64url(signature)}"


def api_headers(authorization: str) -> dict[str, str]:
    return {
        "Accept": "application/vnd.github+json",
        "X-GitHub-Api-Version": API_VERSION,
        "Authorization": authorization,
    }


class InstallationTokens(SharedToken):
    """A GitHub App installation token, shared by every worker
    (``workers.net.shared_tokens``); GitHub's tokens live an hour."""

    def __init__(  # noqa: PLR0913 - one value per piece of the app's identity
        self,
        api_base: str,
        app_id: str,
        installation_id: int,
        private_key: str,
        allow_private: bool,
    ) -> None:
        digest = hashlib.sha256(f"{api_base}\n{app_id}\n{installation_id}".encode()).hexdigest()
        super().__init__(keys.github_token(digest[:32]))
        self.url = f"{api_base}/app/installations/{installation_id}/access_tokens"
        self.app_id, self.private_key = app_id, private_key
        self.allow_private = allow_private

    def fetch(self, timeout: float) -> tuple[str, int]:
        """POST the app's JWT; the installation token and how long (s) it may be cached."""
        jwt = app_jwt(self.app_id, self.private_key)
        answer = send(
            guarded_pool(self.allow_private),
            "POST",
            self.url,
            timeout=timeout,
            headers=api_headers(f"Bearer {jwt}"),
        )
        body = _json(answer)
        token = body.get("token")
        if answer.status == 201 and isinstance(token, str) and token:
            return token, _token_life(body.get("expires_at"))
        if answer.status in (403, 429) and _throttle_wait(answer) is not None:
            _fail(answer, "the installation token", ambiguous=False, repo="", secrets=[jwt])
        if answer.status in (408, 425, 429) or answer.status >= 500:
            raise RetryableDeliveryError(
                f"GitHub answered HTTP {answer.status} to the installation token request",
                retry_after=parse_retry_after(answer.headers.get("retry-after")),
                status=answer.status,
            )
        raise PermanentDeliveryError(
            f"GitHub refused the app's credentials (HTTP {answer.status}): "
            f"{_message(answer) or 'no reason given'}; check app_id, installation_id and "
            "private_key",
            status=answer.status,
        )


def _token_life(expires_at: Any) -> int:
    """Seconds to cache a token expiring at ``expires_at`` (ISO 8601), dropped early."""
    try:
        expires = datetime.fromisoformat(str(expires_at).replace("Z", "+00:00"))
        life = int((expires - datetime.now(UTC)).total_seconds())
    except ValueError:
        life = 3600
    return cache_life(life, default=3600) if life > 0 else 1  # already expired: skewed clocks


class GitHubClient:
    """GitHub's issues API as the PM flow uses it (``workers.pm.spec.PmClient``)."""

    native_idempotency = False

    def __init__(
        self,
        options: GitHubIssuesOptions,
        *,
        timeout: float,
        allow_private: bool,
        state: Any = None,
        tokens: InstallationTokens | None = None,
    ) -> None:
        self.options = options
        self.timeout = timeout
        self.pools = guarded_pool(allow_private)
        self.state = state
        self.tokens = tokens
        self.repo_url = f"{options.api_base}/repos/{options.repo}"
        self.secrets: list[str] = [options.token] if options.token else []

    # -- the PmClient operations ---------------------------------------------------

    def find(self, spec: TaskSpec) -> TaskRef | None:
        """The newest labelled issues (list API, newest first) whose body has the marker."""
        wanted = hidden(spec.marker)
        for page in range(1, FIND_PAGES + 1):
            query = (
                f"?labels={RELAY_LABEL}&state=all&sort=created&direction=desc"
                f"&per_page=50&page={page}"
            )
            answer = self._call("GET", "/issues" + query, "the issue list")
            try:
                issues = answer.json()
            except ValueError:
                issues = None
            if not isinstance(issues, list):
                return None
            for issue in issues:
                if isinstance(issue, dict) and "pull_request" not in issue:
                    if wanted in str(issue.get("body") or ""):
                        return self._ref(issue)
            if len(issues) < 50:
                return None
        return None

    def create(self, spec: TaskSpec) -> TaskRef:
        logins = [a.account for a in spec.assignees if a.account]
        payload = {
            "title": title_of(spec.title),
            "body": body_of(spec.body, spec.marker, spec.link),
            "labels": _unique([RELAY_LABEL, *self.options.labels, *spec.labels]),
        }
        if logins:
            payload["assignees"] = logins
        answer = self._call(
            "POST", "/issues", "the issue", json=payload, ambiguous=True, assignees=logins
        )
        return self._ref(_json(answer))

    def lookup(self, key: str) -> TaskRef | None:
        """``#12`` or ``12``; a pull request is not an issue here."""
        number = NUMBER.match(key.strip())
        if number is None:
            return None
        answer = self._call("GET", f"/issues/{int(number.group(1))}", "the lookup", missing=True)
        issue = _json(answer) if answer.status == 200 else {}
        if not issue or "pull_request" in issue:
            return None
        return self._ref(issue)

    def assign(self, task: TaskRef, accounts: Sequence[str]) -> None:
        """Add assignees. GitHub answers 201 and silently leaves out a login that cannot
        be assigned, so the answer's assignees are compared with those asked for."""
        if not accounts:
            return
        answer = self._call(
            "POST",
            f"/issues/{task.id}/assignees",
            f"the assignees of {task.key}",
            json={"assignees": list(accounts)},
            assignees=list(accounts),
        )
        given = {str(a.get("login", "")).casefold() for a in _json(answer).get("assignees") or []}
        missing = [login for login in accounts if login.casefold() not in given]
        if missing:
            raise AssigneeRefused(
                missing, f"GitHub left them out: they cannot be assigned in {self.options.repo}"
            )

    def close(self, task: TaskRef) -> None:
        state = {"state": "closed", "state_reason": "completed"}
        self._call("PATCH", f"/issues/{task.id}", f"closing {task.key}", json=state)

    def reopen(self, task: TaskRef) -> None:
        state = {"state": "open", "state_reason": "reopened"}
        self._call("PATCH", f"/issues/{task.id}", f"reopening {task.key}", json=state)

    def comment(self, task: TaskRef, text: str, marker: str) -> None:
        self._call(
            "POST",
            f"/issues/{task.id}/comments",
            f"the comment on {task.key}",
            json={"body": body_of(text, marker)},
            ambiguous=True,
        )

    # -- HTTP ----------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        action: str,
        *,
        json: Any = None,
        ambiguous: bool = False,
        assignees: Sequence[str] = (),
        missing: bool = False,
    ) -> HttpAnswer:
        """One request; a non-2xx answer raises (404 and 410 are returned when
        ``missing``). An app token GitHub rejects (401: nothing was done) is replaced
        once and the request repeated."""
        token = self._token()
        answer = self._send(method, path, action, json, token, ambiguous)
        if answer.status == 401 and self.tokens is not None:
            token = self._token(rejected=token)
            answer = self._send(method, path, action, json, token, ambiguous)
        if 200 <= answer.status < 300 or (missing and answer.status in (404, 410)):
            return answer
        if assignees and answer.status == 422:
            refused = refused_assignees(_json(answer), assignees)
            if refused:
                raise AssigneeRefused(refused, self._hide(_message(answer)))
        _fail(answer, action, ambiguous=ambiguous, repo=self.options.repo, secrets=self.secrets)

    def _send(
        self, method: str, path: str, action: str, json: Any, token: str, ambiguous: bool
    ) -> HttpAnswer:
        try:
            return send(
                self.pools,
                method,
                self.repo_url + path,
                timeout=self.timeout,
                json=json,
                headers=api_headers(f"Bearer {token}"),
            )
        except RetryableDeliveryError as exc:
            if ambiguous:
                raise AmbiguousOutcome(f"{exc.message}; GitHub may have made {action}") from None
            raise

    def _token(self, rejected: str | None = None) -> str:
        if self.tokens is None:
            assert self.options.token is not None  # the options require one or the other
            return self.options.token
        token = self.tokens.get(self.state, self.timeout, rejected=rejected)
        if token not in self.secrets:
            self.secrets.append(token)
        return token

    def _hide(self, text: str) -> str:
        return _redact(text, self.secrets)

    def _ref(self, issue: dict[str, Any]) -> TaskRef:
        number = issue.get("number")
        if not isinstance(number, int):
            raise PermanentDeliveryError("GitHub answered without an issue number")
        url = issue.get("html_url")
        extra = {"node_id": str(issue["node_id"])} if issue.get("node_id") else {}
        return TaskRef(
            key=f"#{number}",
            id=str(number),
            url=url if isinstance(url, str) else None,
            extra=extra,
        )


def hidden(marker: str) -> str:
    """The marker as GitHub Markdown hides it: an HTML comment."""
    return f"<!-- {marker} -->"


def title_of(title: str) -> str:
    line = " ".join(title.split())
    return line if len(line) <= TITLE_LIMIT else line[: TITLE_LIMIT - 1] + "…"


def body_of(body: str, marker: str, link: str | None = None) -> str:
    """The body within GitHub's limit, the chat message's link, the hidden marker last."""
    if len(body) > BODY_LIMIT:
        body = body[: BODY_LIMIT - 1] + "…"
    if link and link not in body:
        body = f"{body}\n\n[Chat message]({link})" if body else f"[Chat message]({link})"
    return f"{body}\n\n{hidden(marker)}" if body else hidden(marker)


def refused_assignees(body: dict[str, Any], asked: Sequence[str]) -> list[str]:
    """The logins a 422 refuses: the ``assignees`` errors' values, else the logins the
    message names, else all of them; empty if the 422 is about something else."""
    errors = [e for e in body.get("errors") or [] if isinstance(e, dict)]
    about = [e for e in errors if e.get("field") == "assignees"]
    words = " ".join([str(body.get("message", ""))] + [str(e.get("message", "")) for e in errors])
    if not about and "cannot be assigned" not in words:
        return []
    named: list[str] = []
    for error in about:
        value = error.get("value")
        named += [str(v) for v in value] if isinstance(value, list) else [str(value or "")]
    lowered = {login.casefold(): login for login in asked}
    found = [lowered[n.casefold()] for n in named if n.casefold() in lowered]
    if not found:
        found = [login for login in asked if re.search(rf"\b{re.escape(login)}\b", words)]
    return _unique(found) or list(asked)


def _throttle_wait(answer: HttpAnswer) -> float | None:
    """Seconds GitHub wants us to wait, if this 403/429 is a rate limit: ``retry-after``;
    else the primary limit's reset; else at least a minute for a secondary limit."""
    retry_after = parse_retry_after(answer.headers.get("retry-after"))
    if retry_after is not None:
        return retry_after
    if answer.headers.get("x-ratelimit-remaining") == "0":
        try:
            reset = float(answer.headers.get("x-ratelimit-reset", ""))
        except ValueError:
            return SECONDARY_WAIT
        return max(1.0, reset - time.time())
    if answer.status == 429 or "rate limit" in _message(answer).casefold():
        return SECONDARY_WAIT
    return None


def _fail(
    answer: HttpAnswer, action: str, *, ambiguous: bool, repo: str, secrets: Iterable[str]
) -> NoReturn:
    status = answer.status
    detail = _redact(_message(answer), secrets) or "no reason given"
    shown = _redact(excerpt(response_text(answer)), secrets)
    if status in (403, 429):
        wait = _throttle_wait(answer)
        if wait is not None:
            raise TargetThrottled(
                f"GitHub rate limited {action} (HTTP {status}: {detail}); waiting {wait:g}s",
                retry_after=wait,
                status=status,
                excerpt=shown,
            )
    if status >= 500 or status in (408, 425):
        error = AmbiguousOutcome if ambiguous else RetryableDeliveryError
        raise error(
            f"GitHub answered HTTP {status} to {action}",
            retry_after=parse_retry_after(answer.headers.get("retry-after")),
            status=status,
            excerpt=shown,
        )
    if status == 401:
        message = f"GitHub refused the token (HTTP 401): {detail}"
    elif status == 404:
        message = f"repository {repo} not found or the token cannot see it ({action}: {detail})"
    elif status == 410:
        message = f"issues are disabled in {repo} ({detail})"
    else:
        message = f"GitHub refused {action} (HTTP {status}): {detail}"
    raise PermanentDeliveryError(message, status=status, excerpt=shown)


def _message(answer: HttpAnswer) -> str:
    """GitHub's ``message`` with each error's ``message`` (or field and code)."""
    body = _json(answer)
    if not body:
        return " ".join(answer.decode(300).split())
    words = [str(body.get("message") or "")]
    for error in body.get("errors") or []:
        if isinstance(error, dict):
            words.append(
                str(error.get("message") or f"{error.get('field')} {error.get('code')}".strip())
            )
        elif isinstance(error, str):
            words.append(error)
    return "; ".join(w for w in words if w)[:500]


def _redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def _json(answer: HttpAnswer) -> dict[str, Any]:
    try:
        data = answer.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _unique(items: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for item in items:
        if item:
            seen.setdefault(item, None)
    return list(seen)


class GitHubIssuesTarget(PmTarget):
    """Issues in one repository: created from group messages, closed by replies."""

    kind: ClassVar[str] = "github_issues"
    Options: ClassVar[type[PmOptions]] = GitHubIssuesOptions
    options: GitHubIssuesOptions
    assign_reports_each: ClassVar[bool] = True  # an `assigned` webhook per assignee
    # GitHub's secondary limits on content creation: 80 a minute, 500 an hour.
    default_rate_limits: ClassVar[tuple[str, ...]] = ("80/min", "500/h")
    title_limit: ClassVar[int] = TITLE_LIMIT
    account_platform: ClassVar[str] = "github"  # people map: GitHub logins
    key_pattern: ClassVar[str] = r"#\d+"

    def __init__(self, config: TargetConfig) -> None:
        super().__init__(config)
        options = self.options
        self.tokens: InstallationTokens | None = None
        if options.token is None:
            assert options.app_id and options.installation_id and options.private_key
            self.tokens = InstallationTokens(
                options.api_base,
                options.app_id,
                options.installation_id,
                options.private_key,
                config.allow_private,
            )

    def client(self, context: DeliveryContext) -> GitHubClient:
        return GitHubClient(
            self.options,
            timeout=self.config.timeout or context.timeout,
            allow_private=self.config.allow_private,
            state=context.state,
            tokens=self.tokens,
        )
