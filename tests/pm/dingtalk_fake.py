"""A loopback fake of DingTalk's app access token and to-do (待办) v1.0 API, on a
pytest-httpserver, answering as DingTalk documents: errors as HTTP status +
``{code, message, requestid}``, 401 ``InvalidAuthentication`` for a bad token, 403
``Forbidden.AccessDenied.QpsLimitForApi`` over the QPS limit, 400
``todo.taskCreate.paramError`` "task exist" for a repeated sourceId, and
``operatorId`` required on writes. Unknown executor unionIds are refused with a 400
naming the executor (DingTalk documents no dedicated code for that)."""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from typing import Any

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

APP_KEY = "dingtodoappkey001"
APP_SECRET = "todo-secret-Lk3Jh5Gf7Ds9Aa1Qw"
OPERATOR = "unionOperator0001iE"


def reply(status: int, body: dict[str, Any], **headers: str) -> Response:
    return Response(json.dumps(body), status, headers=headers, mimetype="application/json")


def refusal(status: int, code: str, message: str) -> Response:
    return reply(status, {"code": code, "message": message, "requestid": secrets.token_hex(8)})


class FakeDingTalkTodo:
    """Tokens and the to-dos of the users in ``users`` (unionIds)."""

    def __init__(self, server: HTTPServer, users: set[str] | None = None) -> None:
        self.users = users if users is not None else {OPERATOR, "unionAda", "unionBob"}
        self.token_fetches = 0
        self.tokens: dict[str, float] = {}  # token -> expiry (epoch s)
        self.tasks: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str, dict[str, Any], dict[str, str]]] = []
        self.forced: list[Response] = []  # answers the next API calls give before acting
        self.qps_limited = 0  # API calls refused with QpsLimitForApi before acting
        self.hang_after_create = 0.0  # seconds a create sleeps after it made the to-do
        self.lock = threading.Lock()
        self.base = server.url_for("").rstrip("/")
        expect = server.expect_request
        expect("/v1.0/oauth2/accessToken", method="POST").respond_with_handler(self.token)
        user = r"^/v1\.0/todo/users/([^/]+)/tasks"
        expect(re.compile(user + "$"), method="POST").respond_with_handler(self.create)
        by_source = re.compile(user + r"/sources/([^/]+)$")
        expect(by_source, method="GET").respond_with_handler(self.get_by_source)
        task = re.compile(user + r"/([^/]+)$")
        expect(task, method="GET").respond_with_handler(self.get)
        expect(task, method="PUT").respond_with_handler(self.update)

    # -- tokens ------------------------------------------------------------------------

    def token(self, request: Request) -> Response:
        body = request.get_json(silent=True) or {}
        with self.lock:
            self.token_fetches += 1
        if body.get("appKey") != APP_KEY or body.get("appSecret") != APP_SECRET:
            return refusal(400, "invalidClientIdOrSecret", "无效的clientId或者clientSecret")
        token = secrets.token_hex(16)
        with self.lock:
            self.tokens[token] = time.time() + 7200
        return reply(200, {"accessToken": token, "expireIn": 7200})

    def expire_all(self) -> None:
        with self.lock:
            self.tokens.clear()

    # -- plumbing ----------------------------------------------------------------------

    def _enter(self, request: Request) -> tuple[str, dict[str, Any], Response | None]:
        """Record the call; its user; the answer that ends it early."""
        body = request.get_json(silent=True) if request.data else {}
        with self.lock:
            self.requests.append((request.method, request.path, body or {}, dict(request.args)))
            expiry = self.tokens.get(request.headers.get("x-acs-dingtalk-access-token", ""))
        user = request.path.split("/")[4]
        if expiry is None or expiry < time.time():
            return user, {}, refusal(401, "InvalidAuthentication", "不合法的access_token")
        with self.lock:
            if self.forced:
                return user, {}, self.forced.pop(0)
            if self.qps_limited > 0:
                self.qps_limited -= 1
                return user, {}, refusal(403, "Forbidden.AccessDenied.QpsLimitForApi", "qps")
        if user not in self.users:
            return user, {}, refusal(400, "invalidParameter.unionId", "unionId not exist")
        if request.method in ("POST", "PUT"):
            if request.args.get("operatorId") != user:
                return user, {}, refusal(400, "MissingoperatorId", "operatorId is mandatory")
            if not isinstance(body, dict):
                return user, {}, refusal(400, "InvalidParameter", "body is not a JSON object")
        return user, body or {}, None

    def _bad_executors(self, executors: Any) -> Response | None:
        if executors is None:
            return None
        if not isinstance(executors, list):
            return refusal(400, "todo.taskCreate.paramError", "executorIds must be a list")
        unknown = [e for e in executors if e not in self.users]
        if unknown:
            return refusal(400, "invalidParameter.executorIds", f"executor {unknown[0]} not exist")
        return None

    # -- endpoints ---------------------------------------------------------------------

    def create(self, request: Request) -> Response:
        user, body, early = self._enter(request)
        if early is not None:
            return early
        subject = body.get("subject")
        if not isinstance(subject, str) or not subject or len(subject) > 1024:
            return refusal(400, "todo.taskCreate.paramError", "subject is oversize")
        if len(str(body.get("description", ""))) > 4096:
            return refusal(400, "todo.taskCreate.paramError", "description is oversize")
        due = body.get("dueTime")
        if due is not None and not (isinstance(due, int) and due > 10**12):
            return refusal(400, "todo.taskCreate.paramError", "dueTime is invalid")
        if body.get("priority", 20) not in (10, 20, 30, 40):
            return refusal(400, "todo.taskCreate.paramError", "priority is invalid")
        bad = self._bad_executors(body.get("executorIds"))
        if bad is not None:
            return bad
        source = body.get("sourceId")
        with self.lock:
            if source and any(
                t["sourceId"] == source and t["user"] == user for t in self.tasks.values()
            ):
                return refusal(400, "todo.taskCreate.paramError", "task exist")
            task_id = f"task{secrets.token_hex(12)}"
            task = {
                "id": task_id,
                "user": user,
                "subject": subject,
                "description": body.get("description", ""),
                "sourceId": source,
                "creatorId": body.get("creatorId"),
                "executorIds": list(body.get("executorIds") or []),
                "dueTime": due,
                "priority": body.get("priority", 20),
                "detailUrl": body.get("detailUrl"),
                "done": False,
                "createdTime": int(time.time() * 1000),
            }
            self.tasks[task_id] = task
        if self.hang_after_create:
            time.sleep(self.hang_after_create)
        return reply(200, {**task, "requestId": secrets.token_hex(8)})

    def _find(self, user: str, task_id: str) -> dict[str, Any] | None:
        task = self.tasks.get(task_id)
        return task if task and task["user"] == user else None

    def get(self, request: Request) -> Response:
        user, _, early = self._enter(request)
        if early is not None:
            return early
        task = self._find(user, request.path.rsplit("/", 1)[1])
        if task is None:
            return refusal(404, "todo.task.notExist", "task not exist")
        return reply(200, task)

    def get_by_source(self, request: Request) -> Response:
        user, _, early = self._enter(request)
        if early is not None:
            return early
        source = request.path.rsplit("/", 1)[1]
        with self.lock:
            found = [
                t for t in self.tasks.values() if t["sourceId"] == source and t["user"] == user
            ]
        if not found:
            return refusal(404, "todo.task.notExist", "task not exist")
        return reply(200, found[0])

    def update(self, request: Request) -> Response:
        user, body, early = self._enter(request)
        if early is not None:
            return early
        task = self._find(user, request.path.rsplit("/", 1)[1])
        if task is None:
            return refusal(404, "todo.task.notExist", "task not exist")
        bad = self._bad_executors(body.get("executorIds"))
        if bad is not None:
            return bad
        if "description" in body and len(str(body["description"])) > 4096:
            return refusal(400, "todo.taskUpdate.paramError", "description is oversize")
        with self.lock:
            for field in ("done", "executorIds", "description", "subject", "dueTime"):
                if field in body:
                    task[field] = body[field]
        return reply(200, {"result": True})

    # -- what tests read and do ---------------------------------------------------------

    def calls(self, method: str, path_part: str) -> list[tuple[dict[str, Any], dict[str, str]]]:
        """Body and query of each call with ``method`` whose path contains ``path_part``."""
        return [(b, q) for m, p, b, q in self.requests if m == method and path_part in p]

    def set_done(self, task_id: str, done: bool) -> None:
        """A person ticks (or unticks) the to-do in DingTalk."""
        with self.lock:
            self.tasks[task_id]["done"] = done

    def token_valid(self, token: str) -> bool:
        with self.lock:
            expiry = self.tokens.get(token)
        return expiry is not None and expiry >= time.time()


class FakeGroupRobot:
    """The same app's robot posting into groups (``POST /v1.0/robot/groupMessages/send``)
    with the tokens ``todo`` issues: one internal app holding both permissions. Only
    the ``groups`` (openConversationIds) the robot was added to are accepted."""

    def __init__(self, server: HTTPServer, todo: FakeDingTalkTodo, groups: set[str]) -> None:
        self.todo, self.groups = todo, groups
        self.sent: list[dict[str, Any]] = []  # the bodies, ``msgParam`` decoded
        self.lock = threading.Lock()
        server.expect_request("/v1.0/robot/groupMessages/send", method="POST").respond_with_handler(
            self.send
        )

    def send(self, request: Request) -> Response:
        if not self.todo.token_valid(request.headers.get("x-acs-dingtalk-access-token", "")):
            return refusal(401, "InvalidAuthentication", "不合法的access_token")
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or body.get("robotCode") != APP_KEY:
            return refusal(400, "invalidParameter.robotCode.auth", "robotCode 不匹配")
        if body.get("openConversationId") not in self.groups:
            return refusal(400, "invalid.openConversationId", "无效的openConversationId")
        try:
            param = json.loads(body.get("msgParam") or "")
        except ValueError:
            return refusal(400, "invalidParameter.msgParam.invalid", "msgParam")
        fields = {"sampleText": {"content"}, "sampleMarkdown": {"title", "text"}}
        if not isinstance(param, dict) or set(param) != fields.get(str(body.get("msgKey")), set()):
            return refusal(400, "invalidParameter.msgKey.invalid", "msgKey")
        with self.lock:
            self.sent.append({**body, "msgParam": param})
            count = len(self.sent)
        return reply(200, {"processQueryKey": f"pqk{count}"})
