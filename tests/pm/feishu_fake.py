"""A loopback fake of Feishu's tenant-token endpoint and the Task v2 API, on a
pytest-httpserver, faithful to the documented answers: ``{"code", "msg", "data"}``
bodies, 99991663 for an invalid or expired tenant token, 99991400 with
``x-ogw-ratelimit-reset`` for the frequency limit, 1470400/1470404/1470500 for bad
parameters, missing tasks and server errors, and ``client_token`` honoured (a create
repeated with the same token answers the task the first one made).

Other fakes (Drive, IM resources) can reuse ``FeishuAuth`` on the same server.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
import uuid
from typing import Any

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

APP_ID = "cli_a1b2c3d4e5f60718"
APP_SECRET = "feishu-secret-Qw8rT3yU6iO9pA2sD5fG"
TOKEN_PATH = "/open-apis/auth/v3/tenant_access_token/internal"
TASKS = "/open-apis/task/v2/tasks"


def answer(status: int, code: int, msg: str = "", data: Any = None, **headers: str) -> Response:
    body: dict[str, Any] = {"code": code, "msg": msg or ("success" if code == 0 else "error")}
    if data is not None:
        body["data"] = data
    return Response(
        json.dumps(body, ensure_ascii=False), status, headers=headers, mimetype="application/json"
    )


class FeishuAuth:
    """Issues tenant tokens that expire, counts the fetches, checks ``Authorization``."""

    def __init__(
        self, server: HTTPServer, *, app_id: str = APP_ID, app_secret: str = APP_SECRET
    ) -> None:
        self.app_id, self.app_secret = app_id, app_secret
        self.expire = 7200  # seconds Feishu says a new token lives
        self.delay = 0.0  # seconds a fetch takes
        self.fetches = 0
        self.tokens: dict[str, float] = {}  # token -> expiry (epoch s)
        self.fetch_answers: list[Response] = []  # answers the next fetches give instead
        self.lock = threading.Lock()
        self.base = server.url_for("").rstrip("/")
        server.expect_request(TOKEN_PATH, method="POST").respond_with_handler(self.fetch)

    def fetch(self, request: Request) -> Response:
        time.sleep(self.delay)
        with self.lock:
            self.fetches += 1
            if self.fetch_answers:
                return self.fetch_answers.pop(0)
        body = request.get_json(silent=True) or {}
        if body.get("app_id") != self.app_id or body.get("app_secret") != self.app_secret:
            return answer(400, 10014, "app secret invalid")
        token = f"t-{secrets.token_hex(20)}"
        with self.lock:
            self.tokens[token] = time.time() + self.expire
        data = {"code": 0, "msg": "ok", "tenant_access_token": token, "expire": self.expire}
        return Response(json.dumps(data), 200, mimetype="application/json")

    def expire_all(self) -> None:
        """Feishu forgets every token it issued (expired, or the secret was reset)."""
        with self.lock:
            self.tokens.clear()

    def refusal(self, request: Request) -> Response | None:
        """The 99991663 answer for a missing, unknown or expired token, else None."""
        header = request.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ")
        with self.lock:
            expiry = self.tokens.get(token) if header.startswith("Bearer ") else None
        if expiry is None or expiry < time.time():
            return answer(400, 99991663, "Invalid access token for authorization.")
        return None


class FakeFeishuTasks:
    """Task v2: create, get, patch, add_members, comments. ``users`` are the open_ids
    the tenant knows; any other member id is refused as Feishu refuses it."""

    def __init__(self, server: HTTPServer, users: set[str] | None = None) -> None:
        self.auth = FeishuAuth(server)
        self.base = self.auth.base
        self.users = users if users is not None else {"ou_ada", "ou_bob", "ou_follower"}
        self.tasks: dict[str, dict[str, Any]] = {}
        self.by_client_token: dict[str, str] = {}
        self.comments: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str, dict[str, Any], dict[str, str]]] = []
        self.forced: list[Response] = []  # answers the next API calls give before acting
        self.throttle_next = 0  # API calls answered with 429/99991400 before acting
        self.hang_after_create = 0.0  # seconds a create sleeps after it made the task
        self.lock = threading.Lock()
        expect = server.expect_request
        expect(TASKS, method="POST").respond_with_handler(self.create)
        task = re.compile(r"^/open-apis/task/v2/tasks/([^/]+)$")
        expect(task, method="GET").respond_with_handler(self.get)
        expect(task, method="PATCH").respond_with_handler(self.patch)
        members = re.compile(r"^/open-apis/task/v2/tasks/([^/]+)/add_members$")
        expect(members, method="POST").respond_with_handler(self.add_members)
        comments = "/open-apis/task/v2/comments"
        expect(comments, method="POST").respond_with_handler(self.comment)
        expect(comments, method="GET").respond_with_handler(self.list_comments)

    # -- plumbing ----------------------------------------------------------------------

    def _enter(self, request: Request) -> tuple[dict[str, Any], Response | None]:
        """Record the call; the answer that ends it early (auth, throttling, forced)."""
        body = request.get_json(silent=True) if request.data else {}
        with self.lock:
            self.requests.append((request.method, request.path, body or {}, dict(request.args)))
        refused = self.auth.refusal(request)
        if refused is not None:
            return {}, refused
        with self.lock:
            if self.forced:
                return {}, self.forced.pop(0)
            if self.throttle_next > 0:
                self.throttle_next -= 1
                return {}, answer(
                    429,
                    99991400,
                    "request trigger frequency limit",
                    **{"x-ogw-ratelimit-reset": "7"},
                )
        if request.method in ("POST", "PATCH"):
            if not request.content_type.startswith("application/json"):
                return {}, answer(400, 1470400, "Invalid Content-Type")
            if not isinstance(body, dict):
                return {}, answer(400, 1470400, "Invalid request body")
        return body or {}, None

    def _bad_members(self, members: Any) -> Response | None:
        if not isinstance(members, list):
            return answer(400, 1470400, "Invalid Param 'members', must be a list.")
        for member in members:
            if not isinstance(member, dict) or member.get("role") not in ("assignee", "follower"):
                return answer(
                    400,
                    1470400,
                    "Invalid Param 'members', role is invalid. "
                    "Only 'assignee', 'follower' are supported.",
                )
            if member.get("type", "user") == "user" and member.get("id") not in self.users:
                return answer(400, 99992352, f"invalid open_id: {member.get('id')}")
        return None

    def _task(self, request: Request) -> dict[str, Any] | None:
        guid = request.path.split("/")[5]
        return self.tasks.get(guid)

    # -- endpoints ---------------------------------------------------------------------

    def create(self, request: Request) -> Response:
        body, early = self._enter(request)
        if early is not None:
            return early
        summary, description = body.get("summary"), body.get("description", "")
        if not isinstance(summary, str) or not summary.strip():
            return answer(400, 1470400, "Invalid Param 'summary', must not be empty.")
        if len(summary) > 3000 or len(str(description)) > 3000:
            return answer(400, 1470400, "Invalid Param 'summary', too long.")
        due = body.get("due")
        if due is not None:
            stamp = due.get("timestamp") if isinstance(due, dict) else None
            if not isinstance(stamp, str) or not stamp.isdigit() or len(stamp) != 13:
                return answer(400, 1470400, "Invalid Param 'due.timestamp'.")
        token = body.get("client_token")
        if token is not None and not (isinstance(token, str) and 10 <= len(token) <= 100):
            return answer(400, 1470400, "Invalid Param 'client_token'.")
        bad = self._bad_members(body.get("members", []))
        if bad is not None:
            return bad
        with self.lock:
            existing = self.by_client_token.get(token) if token else None
            if existing is None:
                guid = str(uuid.uuid4())
                number = len(self.tasks) + 1
                self.tasks[guid] = {
                    "guid": guid,
                    "task_id": f"t{100000 + number}",
                    "summary": summary,
                    "description": description,
                    "due": due,
                    "members": list(body.get("members", [])),
                    "extra": body.get("extra", ""),
                    "origin": body.get("origin"),
                    "tasklists": body.get("tasklists", []),
                    "completed_at": "0",
                    "status": "todo",
                    "url": f"https://applink.feishu.cn/client/todo/detail?guid={guid}",
                }
                if token:
                    self.by_client_token[token] = guid
                existing = guid
            task = dict(self.tasks[existing])
        if self.hang_after_create:
            time.sleep(self.hang_after_create)
        return answer(200, 0, data={"task": task})

    def get(self, request: Request) -> Response:
        _, early = self._enter(request)
        if early is not None:
            return early
        task = self._task(request)
        if task is None:
            return answer(404, 1470404, "task not found")
        return answer(200, 0, data={"task": task})

    def patch(self, request: Request) -> Response:
        body, early = self._enter(request)
        if early is not None:
            return early
        task = self._task(request)
        if task is None:
            return answer(404, 1470404, "task not found")
        fields, changes = body.get("update_fields"), body.get("task")
        if not isinstance(fields, list) or not fields or not isinstance(changes, dict):
            return answer(400, 1470400, "Invalid Param 'update_fields'.")
        if "completed_at" in fields:
            value = str(changes.get("completed_at", "0"))
            if not value.isdigit():
                return answer(400, 1470400, "Invalid Param 'completed_at'.")
            with self.lock:
                task["completed_at"] = value
                task["status"] = "todo" if value == "0" else "done"
        return answer(200, 0, data={"task": task})

    def add_members(self, request: Request) -> Response:
        body, early = self._enter(request)
        if early is not None:
            return early
        task = self._task(request)
        if task is None:
            return answer(404, 1470404, "task not found")
        members = body.get("members")
        bad = self._bad_members(members)
        if bad is not None or not isinstance(members, list):
            return bad or answer(400, 1470400, "Invalid Param 'members'.")
        with self.lock:
            known = {(m["id"], m["role"]) for m in task["members"]}
            task["members"] += [m for m in members if (m["id"], m["role"]) not in known]
        return answer(200, 0, data={"task": task})

    def comment(self, request: Request) -> Response:
        body, early = self._enter(request)
        if early is not None:
            return early
        content = body.get("content")
        if not isinstance(content, str) or not content or len(content) > 3000:
            return answer(400, 1470400, "Invalid Param 'content'.")
        if body.get("resource_type", "task") != "task" or body.get("resource_id") not in self.tasks:
            return answer(404, 1470404, "resource not found")
        with self.lock:
            comment = {
                "id": str(7197020628442939411 + len(self.comments)),
                "content": content,
                "resource_type": "task",
                "resource_id": body["resource_id"],
            }
            self.comments.append(comment)
        return answer(200, 0, data={"comment": comment})

    def list_comments(self, request: Request) -> Response:
        _, early = self._enter(request)
        if early is not None:
            return early
        resource = request.args.get("resource_id")
        if resource not in self.tasks:
            return answer(404, 1470404, "resource not found")
        items = [c for c in self.comments if c["resource_id"] == resource]
        if request.args.get("direction") == "desc":
            items.reverse()
        size = int(request.args.get("page_size", "50"))
        return answer(200, 0, data={"items": items[:size], "has_more": len(items) > size})

    # -- what tests read ---------------------------------------------------------------

    def calls(self, method: str, path_start: str) -> list[dict[str, Any]]:
        """The bodies of the calls made with ``method`` to paths starting so."""
        return [b for m, p, b, _ in self.requests if m == method and p.startswith(path_start)]

    def queries(self) -> list[dict[str, str]]:
        """The query parameters of every API call, in order."""
        return [q for _, _, _, q in self.requests]

    def set_completed(self, guid: str, completed: bool) -> None:
        """A person completes (or un-completes) the task in Feishu."""
        with self.lock:
            task = self.tasks[guid]
            task["completed_at"] = str(int(time.time() * 1000)) if completed else "0"
            task["status"] = "done" if completed else "todo"


class FakeIm:
    """``POST /im/v1/messages`` and ``…/{id}/reply``; a uuid seen before sends nothing."""

    def __init__(self, server: HTTPServer, auth: FeishuAuth) -> None:
        self.auth = auth
        self.sent: list[dict[str, Any]] = []
        self.by_uuid: dict[str, str] = {}
        self.lock = threading.Lock()
        server.expect_request(
            re.compile(r"^/open-apis/im/v1/messages(/[^/]+/reply)?$"), method="POST"
        ).respond_with_handler(self.handle)

    def handle(self, request: Request) -> Response:
        refused = self.auth.refusal(request)
        if refused is not None:
            return refused
        body = json.loads(request.get_data())
        if request.path.endswith("/reply") and "om_gone" in request.path:
            return answer(400, 230011, "The message was withdrawn.")
        with self.lock:
            known = self.by_uuid.get(body.get("uuid", ""))
            if known is None:
                known = f"om_sent{len(self.sent)}"
                self.by_uuid[body.get("uuid", "")] = known
                self.sent.append({"path": request.path, "args": dict(request.args), **body})
        return answer(200, 0, "success", data={"message_id": known})
