"""A loopback fake of GitLab's REST API v4, as far as the ``gitlab_issues`` target uses it.

In memory, answering as GitLab documents and does: ``PRIVATE-TOKEN`` checked (401
``{"message": "401 Unauthorized"}``; a revoked token gets the OAuth-style
``invalid_token`` body; a ``read_api`` token gets 403 ``insufficient_scope`` on writes);
one project, found by id or by its URL-encoded path (an unencoded ``group/name`` is
a different path and 404s, as on GitLab); issues with ``iid``, the ``labels`` filter,
``state``, newest-first paging; ``state_event``, ``add_labels``/``remove_labels``;
notes. Assignees unknown to the instance are dropped without an error, as GitLab
does, and with ``multiple_assignees=False`` (GitLab Free) only the first is kept.

Modes: ``throttle(n, retry_after)`` answers the next ``n`` requests with 429 and
GitLab's ``Retry later`` body; ``after_create = "timeout"`` creates the issue, then
answers only after ``delay`` seconds (beyond the client's timeout), ``"502"`` creates
it and answers 502; ``fail_next(status)`` answers the next request with ``status``.
"""

from __future__ import annotations

import json
import re
import threading
import time
from datetime import date
from typing import Any
from urllib.parse import unquote

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

PROJECT_ID = 42
PROJECT_PATH = "acme/ops"
TOKEN = "glpat-Zk8vQ2mN5xR7tY1wB4cD"
READ_ONLY_TOKEN = "glpat-ReadOnly9Hq3Lx6Pv2Sd"
REVOKED_TOKEN = "glpat-Revoked4Tg7Jm1Wz8Kc"
USERS = {
    7: {"id": 7, "username": "ada", "name": "Ada Lovelace", "state": "active"},
    8: {"id": 8, "username": "bob", "name": "Bob Builder", "state": "active"},
}
ROUTE = re.compile(
    r"^/api/v4/projects/(?P<project>[^/]+)/issues(?:/(?P<iid>[^/]+))?(?P<notes>/notes)?$"
)


def reply(status: int, body: Any, **headers: str) -> Response:
    return Response(json.dumps(body), status, headers=headers, mimetype="application/json")


class FakeGitLab:
    """One GitLab project's issues and notes."""

    def __init__(self, server: HTTPServer, *, multiple_assignees: bool = True) -> None:
        self.server = server
        self.base = server.url_for("").rstrip("/")
        self.multiple_assignees = multiple_assignees
        self.issues: dict[int, dict[str, Any]] = {}
        self.notes: dict[int, list[dict[str, Any]]] = {}
        self.requests: list[dict[str, Any]] = []
        self.after_create: str | None = None
        self.delay = 2.0
        self.throttled = 0
        self.retry_after: str | None = None
        self.forced: list[int] = []
        self.lock = threading.Lock()
        server.expect_request(re.compile(r"^/api/v4/.*")).respond_with_handler(self.handle)

    # -- modes -------------------------------------------------------------------------

    def throttle(self, times: int = 1, retry_after: str | None = "17") -> None:
        self.throttled, self.retry_after = times, retry_after

    def fail_next(self, status: int) -> None:
        self.forced.append(status)

    def add_issue(self, title: str, **fields: Any) -> dict[str, Any]:
        with self.lock:
            return self._new_issue({"title": title, **fields})

    def posted(self, path_end: str) -> list[dict[str, Any]]:
        """The JSON bodies of the POSTs whose path ends with ``path_end``."""
        return [
            r["json"]
            for r in self.requests
            if r["method"] == "POST" and r["path"].endswith(path_end)
        ]

    # -- the API -----------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        raw = str(request.environ.get("RAW_URI") or request.full_path).split("?", 1)[0]
        body = request.get_json(silent=True) if request.data else None
        with self.lock:
            self.requests.append(
                {
                    "method": request.method,
                    "path": raw,
                    "args": request.args.to_dict(),
                    "headers": dict(request.headers),
                    "json": body,
                }
            )
            if self.throttled:
                self.throttled -= 1
                headers = {"Retry-After": self.retry_after} if self.retry_after else {}
                return Response("Retry later\n", 429, headers=headers, mimetype="text/plain")
            if self.forced:
                status = self.forced.pop(0)
                return reply(status, {"message": f"{status} Something went wrong"})
            token = request.headers.get("PRIVATE-TOKEN")
            if token == REVOKED_TOKEN:
                return reply(
                    401,
                    {
                        "error": "invalid_token",
                        "error_description": "Token was revoked. You have to re-authorize "
                        "from the user.",
                    },
                )
            if token not in (TOKEN, READ_ONLY_TOKEN):
                return reply(401, {"message": "401 Unauthorized"})
            route = ROUTE.match(raw)
            if route is None or unquote(route["project"]) not in (str(PROJECT_ID), PROJECT_PATH):
                return reply(404, {"message": "404 Project Not Found"})
            if request.method != "GET" and token == READ_ONLY_TOKEN:
                return reply(
                    403,
                    {
                        "error": "insufficient_scope",
                        "error_description": "The request requires higher privileges than "
                        "provided by the access token.",
                        "scope": "api",
                    },
                )
            iid, notes = route["iid"], route["notes"]
            if iid is None:
                if request.method == "GET":
                    return self.list_issues(request)
                if request.method == "POST":
                    return self.create_issue(body or {})
            elif not iid.isdigit() or int(iid) not in self.issues:
                return reply(404, {"message": "404 Not found"})
            elif notes and request.method == "GET":
                return self.list_notes(int(iid), request)
            elif notes and request.method == "POST":
                return self.create_note(int(iid), body or {})
            elif not notes and request.method == "GET":
                return reply(200, self.issues[int(iid)])
            elif not notes and request.method == "PUT":
                return self.update_issue(int(iid), body or {})
            return reply(405, {"message": "405 Method Not Allowed"})

    def create_issue(self, body: dict[str, Any]) -> Response:
        title = body.get("title")
        if not title:
            return reply(400, {"error": "title is missing"})
        if len(title) > 255:
            return reply(400, {"message": {"title": ["is too long (maximum is 255 characters)"]}})
        due = body.get("due_date")
        if due is not None:
            try:
                date.fromisoformat(due)
            except (TypeError, ValueError):
                return reply(400, {"error": "due_date is invalid"})
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
        iid = len(self.issues) + 1
        labels = body.get("labels") or ""
        names = labels if isinstance(labels, list) else labels.split(",")
        issue = {
            "id": 9000 + iid,
            "iid": iid,
            "project_id": PROJECT_ID,
            "title": body["title"],
            "description": body.get("description"),
            "state": "opened",
            "labels": [n.strip() for n in names if n.strip()],
            "assignees": self._assignees(body.get("assignee_ids") or []),
            "due_date": body.get("due_date"),
            "created_at": f"2026-12-06T10:00:{iid:02d}.000Z",
            "web_url": f"{self.base}/{PROJECT_PATH}/-/issues/{iid}",
            "references": {"short": f"#{iid}", "full": f"{PROJECT_PATH}#{iid}"},
        }
        self.issues[iid] = issue
        self.notes[iid] = []
        return issue

    def _assignees(self, ids: list[Any]) -> list[dict[str, Any]]:
        known = [USERS[i] for i in ids if isinstance(i, int) and i in USERS]
        return known if self.multiple_assignees else known[:1]

    def list_issues(self, request: Request) -> Response:
        wanted = [n for n in request.args.get("labels", "").split(",") if n]
        state = request.args.get("state", "all")
        found = [
            i
            for i in self.issues.values()
            if all(n in i["labels"] for n in wanted) and state in ("all", i["state"])
        ]
        found.sort(key=lambda i: i["created_at"], reverse=request.args.get("sort") != "asc")
        per_page = int(request.args.get("per_page", "20"))
        page = int(request.args.get("page", "1"))
        return reply(200, found[(page - 1) * per_page : page * per_page])

    def update_issue(self, iid: int, body: dict[str, Any]) -> Response:
        issue = self.issues[iid]
        event = body.get("state_event")
        if event == "close":
            issue["state"] = "closed"
        elif event == "reopen":
            issue["state"] = "opened"
        elif event is not None:
            return reply(400, {"error": "state_event does not have a valid value"})
        if "assignee_ids" in body:
            issue["assignees"] = self._assignees(body["assignee_ids"] or [])
        for name in str(body.get("add_labels") or "").split(","):
            if name.strip() and name.strip() not in issue["labels"]:
                issue["labels"].append(name.strip())
        removed = {n.strip() for n in str(body.get("remove_labels") or "").split(",")}
        issue["labels"] = [n for n in issue["labels"] if n not in removed]
        return reply(200, issue)

    def list_notes(self, iid: int, request: Request) -> Response:
        notes = sorted(self.notes[iid], key=lambda n: n["id"], reverse=True)
        return reply(200, notes[: int(request.args.get("per_page", "20"))])

    def create_note(self, iid: int, body: dict[str, Any]) -> Response:
        if not body.get("body"):
            return reply(400, {"error": "body is missing"})
        note = {"id": 500 + sum(map(len, self.notes.values())), "body": body["body"]}
        self.notes[iid].append(note)
        return reply(201, note)
