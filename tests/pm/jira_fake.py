"""A loopback fake of Jira's REST API (Cloud v3/v2, or Data Center v2), as far as the
``jira`` target uses it.

In memory, answering as Atlassian documents and Jira does:

* Basic auth (email + API token) or a Bearer PAT; anything else gets 401 with Jira's
  plain-text "Client must be authenticated…".
* ``POST /issue`` validates like Jira: on v3 a plain-string description is refused
  with ``{"errors": {"description": "Operation value must be an Atlassian Document
  (see the Atlassian Document Format)"}}``; labels with spaces, unknown projects, issue
  types, priorities and assignees (accountIds not in ``assignable``) are 400 with the
  field named in ``errors`` and nothing is created.
* ``POST /search/jql`` finds issues by ``labels = "…"``; the legacy ``/search`` answers
  410 Gone on Cloud (it is the only search on Data Center, which has no ``search/jql``).
* A workflow of statuses with categories, ``GET``/``POST /issue/{key}/transitions``,
  ``PUT /issue/{key}/assignee``, ``POST /issue/{key}/comment`` (ADF on v3).

Modes: ``throttle(n, retry_after, reason)`` answers the next ``n`` requests with 429,
``Retry-After`` and ``RateLimit-Reason``; ``after_create = "timeout"`` creates the issue
and answers only after ``delay`` seconds (beyond the client's timeout), ``"502"``
creates it and answers 502; ``fail_next(status, retry_after)`` answers the next
request with ``status``; ``echo_auth`` makes errors repeat the Authorization header (as
some proxies do), to check redaction.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from datetime import date
from typing import Any

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

EMAIL = "relay-bot@acme.example"
API_TOKEN = "ATATT3xFfGF0Zk8vQ2mN5xR7tY1wB4cD9eHj"
PAT = "NjE4MTQ1OTk0NTk3OnRlc3QtZGF0YS1jZW50ZXItcGF0"
PROJECT = "OPS"
ADA = "5b10a2844c20165700ede21g"
BOB = "712020:2f1c9c1e-6d0b-4b6e-9e44-0f3b8c6f4b11"
NOT_ASSIGNABLE = "5b10ac8d82e05b22cc7d4ef5"
ADF_REFUSAL = "Operation value must be an Atlassian Document (see the Atlassian Document Format)"
LEGACY_GONE = (
    "The requested API has been removed. Please migrate to the /rest/api/3/search/jql API. "
    "A full migration guideline is available at "
    "https://developer.atlassian.com/changelog/#CHANGE-2046"
)
ROUTE = re.compile(
    r"^/rest/api/(?P<version>[23])/(?:(?P<search>search(?:/jql)?)"
    r"|issue(?:/(?P<key>[^/]+)(?:/(?P<sub>transitions|assignee|comment))?)?)$"
)
STATUSES = {  # name -> (id, category key, category name)
    "To Do": ("10000", "new", "To Do"),
    "In Progress": ("3", "indeterminate", "In Progress"),
    "Done": ("10001", "done", "Done"),
}
# The simplified workflow: one transition to every status, named as the status.
SIMPLE = [("11", "To Do", "To Do"), ("21", "In Progress", "In Progress"), ("31", "Done", "Done")]


def reply(status: int, body: Any, **headers: str) -> Response:
    return Response(json.dumps(body), status, headers=headers, mimetype="application/json")


def refusal(status: int, messages: list[str] | None = None, **errors: str) -> Response:
    return reply(status, {"errorMessages": messages or [], "errors": errors})


class FakeJira:
    """One Jira site with one project."""

    def __init__(self, server: HTTPServer, *, data_center: bool = False) -> None:
        self.base = server.url_for("").rstrip("/")
        self.data_center = data_center
        self.issues: dict[str, dict[str, Any]] = {}
        self.comments: dict[str, list[dict[str, Any]]] = {}
        self.requests: list[dict[str, Any]] = []
        self.assignable = {ADA, BOB} if not data_center else {"ada", "bob"}
        self.issue_types = {"Task", "Bug"}
        self.priorities = {"Highest", "High", "Medium", "Low", "Lowest"}
        self.workflow = list(SIMPLE)  # (id, name, to status)
        self.statuses = dict(STATUSES)
        self.after_create: str | None = None
        self.delay = 2.0
        self.throttled = 0
        self.throttle_headers: dict[str, str] = {}
        self.forced: list[tuple[int, dict[str, str]]] = []
        self.echo_auth = False
        self.lock = threading.Lock()
        server.expect_request(re.compile(r"^/rest/api/.*")).respond_with_handler(self.handle)

    # -- modes and views ---------------------------------------------------------------

    def throttle(
        self, times: int = 1, retry_after: str | None = "17", reason: str = "jira-burst-based"
    ) -> None:
        self.throttled = times
        self.throttle_headers = {"RateLimit-Reason": reason}
        if retry_after is not None:
            self.throttle_headers["Retry-After"] = retry_after

    def fail_next(self, status: int, retry_after: str | None = None) -> None:
        self.forced.append((status, {"Retry-After": retry_after} if retry_after else {}))

    def calls(self, method: str, path_end: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["method"] == method and r["path"].endswith(path_end)]

    def status_of(self, key: str) -> str:
        return str(self.issues[key]["fields"]["status"]["name"])

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
            if self.throttled:
                self.throttled -= 1
                return reply(
                    429, {"errorMessages": ["Rate limit exceeded."]}, **self.throttle_headers
                )
            if self.forced:
                status, headers = self.forced.pop(0)
                return Response(
                    f"<html><body>{status} Service Unavailable</body></html>",
                    status,
                    headers=headers,
                    mimetype="text/html",
                )
            if not self._authorised(request):
                return Response(
                    "Client must be authenticated to access this resource.",
                    401,
                    headers={"WWW-Authenticate": 'Basic realm="protected-area"'},
                    mimetype="text/plain",
                )
            route = ROUTE.match(request.path)
            if route is None:
                return refusal(404, ["null for uri: " + request.path])
            version = int(route["version"])
            if self.data_center and version == 3:
                return refusal(404, ["null for uri: " + request.path])
            if route["search"]:
                return self.search(route["search"], body or {})
            key, sub = route["key"], route["sub"]
            if key is None:
                if request.method == "POST":
                    return self.create(version, body or {}, request)
                return refusal(405, ["Method not allowed"])
            issue = self.issues.get(key.upper())
            if issue is None:
                return refusal(
                    404, ["Issue does not exist or you do not have permission to see it."]
                )
            if sub is None and request.method == "GET":
                return reply(200, self._view(issue, request.args.get("fields")))
            if sub == "transitions" and request.method == "GET":
                return reply(200, {"transitions": self._transitions(issue)})
            if sub == "transitions" and request.method == "POST":
                return self.transition(issue, body or {})
            if sub == "assignee" and request.method == "PUT":
                return self.assign(issue, body or {})
            if sub == "comment" and request.method == "POST":
                return self.comment(version, issue, body or {})
            return refusal(405, ["Method not allowed"])

    def _authorised(self, request: Request) -> bool:
        header = request.headers.get("Authorization", "")
        if self.data_center:
            return header == f"Bearer {PAT}"
        expected = base64.b64encode(f"{EMAIL}:{API_TOKEN}".encode()).decode()
        return header == f"Basic {expected}"

    def _refuse(self, request: Request | None, status: int, **errors: str) -> Response:
        messages = []
        if self.echo_auth and request is not None:
            messages.append(
                f"rejected request with Authorization {request.headers.get('Authorization')}"
            )
        return refusal(status, messages, **errors)

    def create(self, version: int, body: dict[str, Any], request: Request) -> Response:
        fields = body.get("fields") or {}
        errors: dict[str, str] = {}
        if (fields.get("project") or {}).get("key") != PROJECT:
            errors["project"] = "valid project is required"
        if (fields.get("issuetype") or {}).get("name") not in self.issue_types:
            errors["issuetype"] = "Specify a valid issue type"
        summary = fields.get("summary")
        if not isinstance(summary, str) or not summary.strip():
            errors["summary"] = "You must specify a summary of the issue."
        elif len(summary) > 255:
            errors["summary"] = "Summary must be less than 255 characters."
        elif "\n" in summary:
            errors["summary"] = "The summary is invalid because it contains newline characters."
        description = fields.get("description")
        if description is not None:
            if version == 3 and not _is_adf(description):
                errors["description"] = ADF_REFUSAL
            if version == 2 and not isinstance(description, str):
                errors["description"] = "Operation value must be a string"
        for label in fields.get("labels") or []:
            if not isinstance(label, str) or re.search(r"\s", label):
                errors["labels"] = f"The label '{label}' contains spaces which is invalid."
        if "assignee" in fields:
            account = self._account(fields["assignee"])
            if account not in self.assignable:
                errors["assignee"] = f"User '{account}' cannot be assigned issues."
        if "priority" in fields and (fields["priority"] or {}).get("name") not in self.priorities:
            errors["priority"] = "Specify the Priority (id or name) in the string format"
        if "duedate" in fields:
            try:
                date.fromisoformat(str(fields["duedate"]))
            except ValueError:
                errors["duedate"] = "Error parsing date string: " + str(fields["duedate"])
        if errors:
            return self._refuse(request, 400, **errors)
        issue = self._new_issue(fields)
        if self.after_create == "timeout":
            self.lock.release()
            try:
                time.sleep(self.delay)
            finally:
                self.lock.acquire()
        elif self.after_create == "502":
            return Response("<html>502 Bad Gateway</html>", 502, mimetype="text/html")
        return reply(201, {"id": issue["id"], "key": issue["key"], "self": issue["self"]})

    def _account(self, user: Any) -> str:
        if not isinstance(user, dict):
            return str(user)
        return str(user.get("name") if self.data_center else user.get("accountId"))

    def _new_issue(self, fields: dict[str, Any]) -> dict[str, Any]:
        number = len(self.issues) + 1
        key = f"{PROJECT}-{number}"
        status = "To Do"
        issue = {
            "id": str(10000 + number),
            "key": key,
            "self": f"{self.base}/rest/api/3/issue/{10000 + number}",
            "fields": {
                **fields,
                "labels": list(fields.get("labels") or []),
                "status": self.status(status),
                "created": f"2026-12-06T10:00:{number:02d}.000+0000",
            },
        }
        self.issues[key] = issue
        self.comments[key] = []
        return issue

    def add_issue(self, summary: str, *labels: str) -> dict[str, Any]:
        with self.lock:
            fields = {"summary": summary, "labels": list(labels), "project": {"key": PROJECT}}
            return self._new_issue(fields)

    def status(self, name: str) -> dict[str, Any]:
        status_id, category, category_name = self.statuses[name]
        return {
            "id": status_id,
            "name": name,
            "statusCategory": {"key": category, "name": category_name},
        }

    def _view(self, issue: dict[str, Any], wanted: str | None) -> dict[str, Any]:
        fields = issue["fields"]
        if wanted:
            names = {n.strip() for n in wanted.split(",")}
            fields = {k: v for k, v in fields.items() if k in names}
        return {"id": issue["id"], "key": issue["key"], "self": issue["self"], "fields": fields}

    def search(self, path: str, body: dict[str, Any]) -> Response:
        if path == "search" and not self.data_center:
            return refusal(410, [LEGACY_GONE])
        if path == "search/jql" and self.data_center:
            return refusal(404, ["null for uri: /rest/api/2/search/jql"])
        jql = str(body.get("jql") or "")
        match = re.fullmatch(r'\s*labels\s*=\s*"([^"]+)"\s*', jql)
        if match is None:
            return refusal(
                400, [f"Error in the JQL Query: the query {jql!r} is not supported here."]
            )
        label = match.group(1)
        fields = body.get("fields") or []
        found = [
            {
                "id": i["id"],
                "key": i["key"],
                "self": i["self"],
                **({"fields": {f: i["fields"].get(f) for f in fields}} if fields else {}),
            }
            for i in self.issues.values()
            if label in i["fields"]["labels"]
        ]
        found = found[: int(body.get("maxResults") or 50)]
        if self.data_center:
            return reply(
                200, {"startAt": 0, "maxResults": 50, "total": len(found), "issues": found}
            )
        return reply(200, {"issues": found, "isLast": True})

    def _transitions(self, issue: dict[str, Any]) -> list[dict[str, Any]]:
        current = issue["fields"]["status"]["name"]
        return [
            {"id": tid, "name": name, "to": self.status(to), "hasScreen": False}
            for tid, name, to in self.workflow
            if to != current
        ]

    def transition(self, issue: dict[str, Any], body: dict[str, Any]) -> Response:
        wanted = str((body.get("transition") or {}).get("id"))
        for transition in self._transitions(issue):
            if transition["id"] == wanted:
                issue["fields"]["status"] = transition["to"]
                return Response(status=204)
        return refusal(400, [f"Transition id '{wanted}' is not valid for this issue."])

    def assign(self, issue: dict[str, Any], body: dict[str, Any]) -> Response:
        account = self._account(body)
        if account not in self.assignable:
            return refusal(400, [], assignee=f"User '{account}' cannot be assigned issues.")
        issue["fields"]["assignee"] = dict(body)
        return Response(status=204)

    def comment(self, version: int, issue: dict[str, Any], body: dict[str, Any]) -> Response:
        text = body.get("body")
        if version == 3 and not _is_adf(text):
            return refusal(400, [], comment=ADF_REFUSAL)
        if version == 2 and not isinstance(text, str):
            return refusal(400, [], comment="Comment body can not be empty!")
        comment = {"id": str(20000 + sum(map(len, self.comments.values()))), "body": text}
        self.comments[issue["key"]].append(comment)
        return reply(201, comment)


def _is_adf(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and value.get("type") == "doc"
        and value.get("version") == 1
        and isinstance(value.get("content"), list)
    )
