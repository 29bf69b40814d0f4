"""A loopback fake of GitHub's REST API, as far as the ``github_issues`` target uses it.

In memory, answering as GitHub documents and does:

* ``Authorization: Bearer`` with a PAT or an app installation token (401 "Bad
  credentials" otherwise); the API version header is recorded.
* One repository; another is 404 "Not Found", and with ``issues_enabled = False``
  every issues call is 410 "Issues are disabled for this repo".
* ``POST /issues``: an assignee not in ``assignable`` fails the whole create with 422
  (``{"field": "assignees", "code": "invalid", "value": …}``) and nothing is made;
  unknown labels are created.
* The list API with ``labels``/``state``/``sort``/``direction``/paging, newest first,
  pull requests included (as GitHub's issues list does).
* ``PATCH`` state and state_reason, comments, and ``POST …/assignees``, which silently
  leaves out logins that cannot be assigned.
* GitHub App: ``POST /app/installations/{id}/access_tokens`` checks the RS256 JWT
  against the app's public key and hands out hour-long tokens.

Modes: ``secondary_limit(after, retry_after)`` answers creates after the first
``after`` with 403 and the secondary-limit message (with ``retry-after`` if given);
``exhaust(reset_in)`` answers the next request as an exhausted primary limit
(``x-ratelimit-remaining: 0``); ``after_create = "timeout"`` creates the issue and
answers only after ``delay`` seconds, ``"502"`` creates it and answers 502;
``fail_next(status)`` answers the next request with ``status``.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

REPO = "acme/ops"
TOKEN = "github_pat_11AAAAAAA0Zk8vQ2mN5xR7_tY1wB4cD9eHjKs3Lq6Vp0Wn2Xr5Zt8"
APP_ID = "123456"
INSTALLATION_ID = 7654321
DOCS = "https://docs.github.com/rest"
SECONDARY = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try "
    "again. If you reach out to GitHub Support for help, please include the request ID "
    "C0DE:1234:5678."
)
ROUTE = re.compile(
    r"^/repos/(?P<repo>[^/]+/[^/]+)/issues"
    r"(?:/(?P<number>[^/]+)(?:/(?P<sub>comments|assignees))?)?$"
)
APP_ROUTE = re.compile(r"^/app/installations/(?P<id>\d+)/access_tokens$")


def reply(status: int, body: Any, **headers: str) -> Response:
    return Response(json.dumps(body), status, headers=headers, mimetype="application/json")


def problem(status: int, message: str, **extra: Any) -> Response:
    return reply(
        status, {"message": message, "documentation_url": DOCS, "status": str(status), **extra}
    )


def app_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class FakeGitHub:
    """One repository's issues, and the installation tokens of one GitHub App."""

    def __init__(self, server: HTTPServer, *, app: rsa.RSAPrivateKey | None = None) -> None:
        self.base = server.url_for("").rstrip("/")
        self.web = "https://github.example"
        self.issues: dict[int, dict[str, Any]] = {}
        self.comments: dict[int, list[dict[str, Any]]] = {}
        self.requests: list[dict[str, Any]] = []
        self.assignable = {"ada", "bob", "relay-bot"}
        self.labels = {"group-relay", "bug"}
        self.issues_enabled = True
        self.app_public = app.public_key() if app else None
        self.app_tokens: dict[str, float] = {}  # token -> expiry (epoch s)
        self.token_calls = 0
        self.creates = 0
        self.secondary_after: int | None = None
        self.secondary_retry_after: str | None = None
        self.exhausted: float | None = None
        self.after_create: str | None = None
        self.delay = 2.0
        self.forced: list[int] = []
        self.lock = threading.Lock()
        server.expect_request(re.compile(r"^/(repos|app)/.*")).respond_with_handler(self.handle)

    # -- modes and views ---------------------------------------------------------------

    def secondary_limit(self, after: int, retry_after: str | None = "60") -> None:
        self.secondary_after, self.secondary_retry_after = after, retry_after

    def exhaust(self, reset_in: float) -> None:
        self.exhausted = time.time() + reset_in

    def fail_next(self, status: int) -> None:
        self.forced.append(status)

    def revoke_app_tokens(self) -> None:
        with self.lock:
            self.app_tokens.clear()

    def calls(self, method: str, path_end: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["method"] == method and r["path"].endswith(path_end)]

    def add_issue(
        self,
        title: str,
        body: str = "",
        labels: tuple[str, ...] = ("group-relay",),
        pull_request: bool = False,
    ) -> dict[str, Any]:
        with self.lock:
            issue = self._new_issue({"title": title, "body": body, "labels": list(labels)})
            if pull_request:
                issue["pull_request"] = {"url": f"{self.base}/repos/{REPO}/pulls/{issue['number']}"}
            return issue

    # -- the API -----------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        body = request.get_json(silent=True) if request.data else None
        with self.lock:
            self.requests.append(
                {
                    "method": request.method,
                    "path": request.path,
                    "args": request.args.to_dict(),
                    "headers": dict(request.headers),
                    "json": body,
                }
            )
            app = APP_ROUTE.match(request.path)
            if app is not None and request.method == "POST":
                return self.installation_token(request, int(app["id"]))
            if self.forced:
                status = self.forced.pop(0)
                return Response(f"<html>{status}</html>", status, mimetype="text/html")
            if self.exhausted is not None:
                reset, self.exhausted = self.exhausted, None
                return reply(
                    403,
                    {
                        "message": "API rate limit exceeded for user ID 4242.",
                        "documentation_url": DOCS,
                    },
                    **{
                        "x-ratelimit-remaining": "0",
                        "x-ratelimit-limit": "5000",
                        "x-ratelimit-reset": str(int(reset)),
                    },
                )
            if not self._authorised(request):
                return problem(401, "Bad credentials")
            route = ROUTE.match(request.path)
            if route is None or route["repo"] != REPO:
                return problem(404, "Not Found")
            if not self.issues_enabled:
                return problem(410, "Issues are disabled for this repo")
            number, sub = route["number"], route["sub"]
            if number is None:
                if request.method == "GET":
                    return self.list_issues(request)
                if request.method == "POST":
                    return self.create(body or {})
                return problem(404, "Not Found")
            if not number.isdigit() or int(number) not in self.issues:
                return problem(404, "Not Found")
            issue = self.issues[int(number)]
            if sub is None and request.method == "GET":
                return reply(200, issue)
            if sub is None and request.method == "PATCH":
                return self.update(issue, body or {})
            if sub == "assignees" and request.method == "POST":
                return self.add_assignees(issue, body or {})
            if sub == "comments" and request.method == "POST":
                return self.comment(issue, body or {})
            return problem(404, "Not Found")

    def _authorised(self, request: Request) -> bool:
        header = request.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ").removeprefix("token ")
        if token == TOKEN:
            return True
        return self.app_tokens.get(token, 0) > time.time()

    def installation_token(self, request: Request, installation: int) -> Response:
        self.token_calls += 1
        jwt = request.headers.get("Authorization", "").removeprefix("Bearer ")
        claims = self._verified(jwt)
        if claims is None:
            return problem(401, "A JSON web token could not be decoded")
        if str(claims.get("iss")) != APP_ID:
            return problem(401, "Integration not found")
        if installation != INSTALLATION_ID:
            return problem(404, "Not Found")
        token = "ghs_" + secrets.token_hex(18)
        expires = datetime.now(UTC) + timedelta(hours=1)
        self.app_tokens[token] = expires.timestamp()
        return reply(
            201,
            {
                "token": token,
                "expires_at": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "permissions": {"issues": "write", "metadata": "read"},
                "repository_selection": "selected",
            },
        )

    def _verified(self, jwt: str) -> dict[str, Any] | None:
        if self.app_public is None or jwt.count(".") != 2:
            return None
        header, payload, signature = jwt.split(".")
        try:
            self.app_public.verify(
                _unb64(signature),
                f"{header}.{payload}".encode(),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
            head, claims = json.loads(_unb64(header)), json.loads(_unb64(payload))
        except (InvalidSignature, ValueError):
            return None
        now = time.time()
        if head.get("alg") != "RS256" or not (claims["iat"] <= now < claims["exp"]):
            return None
        if claims["exp"] - claims["iat"] > 600:
            return None  # GitHub: "no more than 10 minutes into the future"
        return dict(claims)

    def create(self, body: dict[str, Any]) -> Response:
        if self.secondary_after is not None and self.creates >= self.secondary_after:
            headers = (
                {"retry-after": self.secondary_retry_after} if self.secondary_retry_after else {}
            )
            return reply(403, {"message": SECONDARY, "documentation_url": DOCS}, **headers)
        title = body.get("title")
        if not isinstance(title, str) or not title:
            return problem(
                422,
                "Validation Failed",
                errors=[{"resource": "Issue", "field": "title", "code": "missing_field"}],
            )
        refused = [a for a in body.get("assignees") or [] if self._login(a) is None]
        if refused:
            return problem(
                422,
                "Validation Failed",
                errors=[
                    {"value": login, "resource": "Issue", "field": "assignees", "code": "invalid"}
                    for login in refused
                ],
            )
        if len(body.get("body") or "") > 65536:
            return problem(
                422,
                "Validation Failed",
                errors=[
                    {
                        "resource": "Issue",
                        "code": "custom",
                        "field": "body",
                        "message": "body is too long (maximum is 65536 characters)",
                    }
                ],
            )
        self.creates += 1
        issue = self._new_issue(body)
        if self.after_create == "timeout":
            self.lock.release()
            try:
                time.sleep(self.delay)
            finally:
                self.lock.acquire()
        elif self.after_create == "502":
            return Response("<html>502 Bad Gateway</html>", 502, mimetype="text/html")
        return reply(201, issue)

    def _new_issue(self, body: dict[str, Any]) -> dict[str, Any]:
        number = len(self.issues) + 1
        for name in body.get("labels") or []:
            self.labels.add(name)
        issue = {
            "id": 2_000_000 + number,
            "node_id": f"I_kwDOAAAA{number:04d}",
            "number": number,
            "url": f"{self.base}/repos/{REPO}/issues/{number}",
            "html_url": f"{self.web}/{REPO}/issues/{number}",
            "title": body["title"],
            "body": body.get("body"),
            "state": "open",
            "state_reason": None,
            "labels": [{"name": n, "color": "ededed"} for n in body.get("labels") or []],
            "assignees": [{"login": self._login(a)} for a in body.get("assignees") or []],
            "user": {"login": "relay-bot"},
            "created_at": f"2026-12-06T10:{number // 60:02d}:{number % 60:02d}Z",
        }
        self.issues[number] = issue
        self.comments[number] = []
        return issue

    def _login(self, login: Any) -> str | None:
        wanted = str(login).casefold()
        return next((known for known in self.assignable if known.casefold() == wanted), None)

    def list_issues(self, request: Request) -> Response:
        wanted = [n for n in request.args.get("labels", "").split(",") if n]
        state = request.args.get("state", "open")
        found = [
            i
            for i in self.issues.values()
            if all(n in [label["name"] for label in i["labels"]] for n in wanted)
            and state in ("all", i["state"])
        ]
        found.sort(
            key=lambda i: i["created_at"], reverse=request.args.get("direction", "desc") == "desc"
        )
        per_page = min(100, int(request.args.get("per_page", "30")))
        page = int(request.args.get("page", "1"))
        return reply(200, found[(page - 1) * per_page : page * per_page])

    def update(self, issue: dict[str, Any], body: dict[str, Any]) -> Response:
        state = body.get("state")
        if state not in (None, "open", "closed"):
            return problem(
                422,
                "Validation Failed",
                errors=[{"resource": "Issue", "field": "state", "code": "invalid"}],
            )
        if state is not None:
            issue["state"] = state
            issue["state_reason"] = body.get("state_reason")
        return reply(200, issue)

    def add_assignees(self, issue: dict[str, Any], body: dict[str, Any]) -> Response:
        current = [a["login"] for a in issue["assignees"]]
        for login in body.get("assignees") or []:
            known = self._login(login)  # logins are case-insensitive; GitHub answers its own
            if known is not None and known not in current:  # others silently left out
                current.append(known)
        issue["assignees"] = [{"login": a} for a in current]
        return reply(201, issue)

    def comment(self, issue: dict[str, Any], body: dict[str, Any]) -> Response:
        text = body.get("body")
        if not isinstance(text, str) or not text:
            return problem(
                422,
                "Validation Failed",
                errors=[{"resource": "IssueComment", "field": "body", "code": "missing_field"}],
            )
        comment = {"id": 3_000_000 + sum(map(len, self.comments.values())), "body": text}
        self.comments[issue["number"]].append(comment)
        return reply(201, comment)
