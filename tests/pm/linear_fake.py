"""A loopback fake of Linear's GraphQL API, as far as the ``linear`` target uses it.

Real GraphQL: every request is parsed and validated (with graphql-core) against a
subset of Linear's schema, with Linear's names and types, then executed on an
in-memory workspace: teams with workflow states, users, issues, comments. So a
query the client sends with a field or argument Linear does not have fails here as
it would there (400, ``GRAPHQL_VALIDATION_FAILED``).

Linear's behaviour it keeps: ``Authorization`` is a personal API key as it is, or an
OAuth token after ``Bearer ``; a key sent as ``Bearer <key>``, a token sent bare, or
a revoked key get HTTP 401 with ``AUTHENTICATION_ERROR``. ``issue(id:)`` takes the
UUID or the identifier (``ENG-12``) and answers a miss with ``Entity not found:
Issue`` (HTTP 200). ``IssueCreateInput.id`` / ``CommentCreateInput.id`` must be UUID
v4s and are unique: a second create with the same id is refused. Unknown users in
``assigneeId``/``subscriberIds`` are refused with ``Entity not found: User``.

Modes: ``ratelimit(n)`` answers the next ``n`` requests with ``RATELIMITED`` (HTTP 400)
and ``X-RateLimit-Requests-Reset`` (epoch ms); ``after_create = "timeout"`` creates the
issue and answers after ``delay`` seconds, ``"502"`` creates it and answers 502.
"""

from __future__ import annotations

import json
import re
import threading
import time
from typing import Any

from graphql import GraphQLError, build_schema, execute_sync, parse, validate
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

API_KEY = "lin_api_Qm7Rx2Vt9Lp4Hs8Kd3Nw6Bz1Cf5Gj0"
OAUTH_TOKEN = "lin_oauth_8d1f4b7e2a9c6f3e0b5d8a1c4f7e2b9d"
REVOKED_KEY = "lin_api_Revoked0Xy3Zq6Wv9Tu2Sr5Po8Nm"
ENG_ID = "3f1d6a4e-8b2c-4d7e-9f0a-1b2c3d4e5f60"
OPS_ID = "7a9c2e4f-1b3d-4f6a-8c0e-2d4f6a8c0e1f"
USERS = {
    "u-ada": {"id": "u-ada", "name": "Ada Lovelace"},
    "u-bob": {"id": "u-bob", "name": "Bob Builder"},
    "u-cyd": {"id": "u-cyd", "name": "Cyd Charisse"},
}
UUID_V4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")

SCHEMA = build_schema(
    """
    scalar DateTime
    scalar TimelessDate

    type Query {
      issue(id: String!): Issue!
      team(id: String!): Team!
      teams(filter: TeamFilter, first: Int, includeArchived: Boolean): TeamConnection!
      comment(id: String, issueId: String, hash: String): Comment!
    }

    type Mutation {
      issueCreate(input: IssueCreateInput!): IssuePayload!
      issueUpdate(id: String!, input: IssueUpdateInput!): IssuePayload!
      commentCreate(input: CommentCreateInput!): CommentPayload!
    }

    input StringComparator { eq: String, neq: String, in: [String!], nin: [String!] }
    input TeamFilter { key: StringComparator, name: StringComparator, and: [TeamFilter!] }

    type User { id: ID!, name: String! }
    type UserConnection { nodes: [User!]! }
    type WorkflowState { id: ID!, name: String!, type: String!, position: Float!, team: Team! }
    type WorkflowStateConnection { nodes: [WorkflowState!]! }
    type Team {
      id: ID!
      key: String!
      name: String!
      states(first: Int, includeArchived: Boolean): WorkflowStateConnection!
    }
    type TeamConnection { nodes: [Team!]! }

    type Issue {
      id: ID!
      identifier: String!
      title: String!
      description: String
      url: String!
      priority: Float!
      dueDate: TimelessDate
      assignee: User
      subscribers(first: Int, includeArchived: Boolean): UserConnection!
      state: WorkflowState!
      team: Team!
    }
    type IssuePayload { lastSyncId: Float!, success: Boolean!, issue: Issue }

    input IssueCreateInput {
      id: String
      teamId: String!
      title: String
      description: String
      assigneeId: String
      subscriberIds: [String!]
      dueDate: TimelessDate
      priority: Int
      stateId: String
      labelIds: [String!]
    }
    input IssueUpdateInput {
      title: String
      description: String
      assigneeId: String
      subscriberIds: [String!]
      dueDate: TimelessDate
      priority: Int
      stateId: String
      labelIds: [String!]
    }

    type Comment { id: ID!, body: String!, issue: Issue, url: String! }
    type CommentPayload { lastSyncId: Float!, success: Boolean!, comment: Comment! }
    input CommentCreateInput { id: String, issueId: String, body: String, parentId: String }
    """
)


def input_error(message: str, shown: str) -> GraphQLError:
    return GraphQLError(
        message,
        extensions={
            "type": "invalid input",
            "code": "INPUT_ERROR",
            "userPresentableMessage": shown,
        },
    )


def not_found(entity: str) -> GraphQLError:
    return input_error(f"Entity not found: {entity}", f"Could not find referenced {entity}.")


def team(team_id: str, key: str) -> dict[str, Any]:
    states = [
        ("Backlog", "backlog"),
        ("Todo", "unstarted"),
        ("In Progress", "started"),
        ("In Review", "started"),
        ("Done", "completed"),
        ("Canceled", "canceled"),
    ]
    nodes = [
        {"id": f"{key.lower()}-state-{n}", "name": name, "type": kind, "position": float(n)}
        for n, (name, kind) in enumerate(states)
    ]
    return {"id": team_id, "key": key, "name": key.title(), "states": {"nodes": nodes}}


class Workspace:
    """The fake's data and its resolvers: the root value of every operation."""

    def __init__(self) -> None:
        self.all_teams = {ENG_ID: team(ENG_ID, "ENG"), OPS_ID: team(OPS_ID, "OPS")}
        self.issues: dict[str, dict[str, Any]] = {}
        self.comments: dict[str, dict[str, Any]] = {}
        self.sync = 1000.0
        self.after_create: str | None = None  # set per request: "timeout" / "502"

    # -- queries -----------------------------------------------------------------------

    def issue(self, _info: Any, id: str) -> dict[str, Any]:  # noqa: A002 - GraphQL's name
        return self.find_issue(id)

    def team(self, _info: Any, id: str) -> dict[str, Any]:  # noqa: A002
        if id not in self.all_teams:
            raise not_found("Team")
        return self.all_teams[id]

    def teams(self, _info: Any, filter: dict[str, Any] | None = None, **_: Any) -> Any:  # noqa: A002
        wanted = ((filter or {}).get("key") or {}).get("eq")
        return {"nodes": [t for t in self.all_teams.values() if wanted in (None, t["key"])]}

    def comment(self, _info: Any, id: str | None = None, **_: Any) -> dict[str, Any]:  # noqa: A002
        if id not in self.comments:
            raise not_found("Comment")
        return self.comments[id]

    # -- mutations ---------------------------------------------------------------------

    def issueCreate(self, info: Any, input: dict[str, Any]) -> dict[str, Any]:  # noqa: A002, N802
        info.context["status"] = 400  # a refusal below is a 400; success resets it
        issue_id = input.get("id") or f"{len(self.issues):08d}-0000-4000-8000-000000000000"
        if not UUID_V4.match(issue_id):
            raise input_error("Argument Validation Error", "id must be a UUID v4.")
        if issue_id in self.issues:
            raise input_error(
                "Argument Validation Error", "An issue with this identifier already exists."
            )
        if input["teamId"] not in self.all_teams:
            raise not_found("Team")
        team_ = self.all_teams[input["teamId"]]
        assignee = self.user(input.get("assigneeId"))
        subscribers = [self.user(u) for u in input.get("subscriberIds") or []]
        number = 1 + sum(1 for i in self.issues.values() if i["team"] is team_)
        identifier = f"{team_['key']}-{number}"
        todo = next(s for s in team_["states"]["nodes"] if s["type"] == "unstarted")
        issue = {
            "id": issue_id,
            "identifier": identifier,
            "title": input.get("title") or "",
            "description": input.get("description"),
            "url": f"https://linear.app/acme/issue/{identifier.lower()}",
            "priority": float(input.get("priority") or 0),
            "dueDate": input.get("dueDate"),
            "assignee": assignee,
            "subscribers": {"nodes": [s for s in subscribers if s]},
            "state": todo,
            "team": team_,
        }
        self.issues[issue_id] = issue
        info.context["status"] = 200
        info.context["after"] = self.after_create
        return self.payload(issue=issue)

    def issueUpdate(self, info: Any, id: str, input: dict[str, Any]) -> dict[str, Any]:  # noqa: A002, N802
        issue = self.find_issue(id)
        info.context["status"] = 400
        changes: dict[str, Any] = {}
        if "stateId" in input:
            states = {s["id"]: s for s in issue["team"]["states"]["nodes"]}
            if input["stateId"] not in states:
                raise not_found("WorkflowState")
            changes["state"] = states[input["stateId"]]
        if "assigneeId" in input:
            changes["assignee"] = self.user(input["assigneeId"])
        if "subscriberIds" in input:
            changes["subscribers"] = {"nodes": [self.user(u) for u in input["subscriberIds"]]}
        issue.update(changes)
        info.context["status"] = 200
        return self.payload(issue=issue)

    def commentCreate(self, info: Any, input: dict[str, Any]) -> dict[str, Any]:  # noqa: A002, N802
        info.context["status"] = 400
        comment_id = input.get("id") or f"c{len(self.comments):07d}-0000-4000-8000-000000000000"
        if not UUID_V4.match(comment_id):
            raise input_error("Argument Validation Error", "id must be a UUID v4.")
        if comment_id in self.comments:
            raise input_error(
                "Argument Validation Error", "A comment with this identifier already exists."
            )
        issue = self.find_issue(input.get("issueId") or "")
        comment = {"id": comment_id, "body": input.get("body") or "", "issue": issue, "url": ""}
        self.comments[comment_id] = comment
        info.context["status"] = 200
        return {"lastSyncId": self.next_sync(), "success": True, "comment": comment}

    # -- pieces ------------------------------------------------------------------------

    def find_issue(self, key: str) -> dict[str, Any]:
        for issue in self.issues.values():
            if key in (issue["id"], issue["identifier"]):
                return issue
        raise not_found("Issue")

    def user(self, user_id: str | None) -> dict[str, Any] | None:
        if user_id is None:
            return None
        if user_id not in USERS:
            raise not_found("User")
        return USERS[user_id]

    def payload(self, **fields: Any) -> dict[str, Any]:
        return {"lastSyncId": self.next_sync(), "success": True, **fields}

    def next_sync(self) -> float:
        self.sync += 1
        return self.sync


class FakeLinear:
    """``POST /graphql`` of one Linear workspace."""

    def __init__(self, server: HTTPServer) -> None:
        self.base = server.url_for("").rstrip("/")
        self.workspace = Workspace()
        self.requests: list[dict[str, Any]] = []
        self.limited = 0
        self.reset_in = 30.0
        self.delay = 2.0
        self.lock = threading.Lock()
        server.expect_request("/graphql", method="POST").respond_with_handler(self.handle)

    @property
    def after_create(self) -> str | None:
        return self.workspace.after_create

    @after_create.setter
    def after_create(self, mode: str | None) -> None:
        self.workspace.after_create = mode

    @property
    def issues(self) -> dict[str, dict[str, Any]]:
        return self.workspace.issues

    @property
    def comments(self) -> dict[str, dict[str, Any]]:
        return self.workspace.comments

    def ratelimit(self, times: int = 1, reset_in: float = 30.0) -> None:
        self.limited, self.reset_in = times, reset_in

    def operations(self) -> list[str]:
        return [str(r["operationName"]) for r in self.requests]

    def handle(self, request: Request) -> Response:
        body = request.get_json(silent=True) or {}
        query = str(body.get("query") or "")
        match = re.search(r"\b(query|mutation)\s+(\w+)", query)
        with self.lock:
            self.requests.append(
                {
                    "operationName": match[2] if match else None,
                    "query": query,
                    "variables": body.get("variables") or {},
                    "authorization": request.headers.get("Authorization"),
                }
            )
            if self.limited:
                self.limited -= 1
                reset = int((time.time() + self.reset_in) * 1000)
                headers = {
                    "X-RateLimit-Requests-Limit": "5000",
                    "X-RateLimit-Requests-Remaining": "0",
                    "X-RateLimit-Requests-Reset": str(reset),
                }
                error = {
                    "message": "Rate limit exceeded",
                    "extensions": {
                        "type": "ratelimited",
                        "code": "RATELIMITED",
                        "userPresentableMessage": "Too many requests. Please try again later.",
                    },
                }
                return self.reply(400, {"errors": [error]}, headers)
            if not self.authorized(request.headers.get("Authorization") or ""):
                error = {
                    "message": "Authentication required, not authenticated",
                    "extensions": {
                        "type": "authentication error",
                        "code": "AUTHENTICATION_ERROR",
                        "statusCode": 401,
                        "userPresentableMessage": "You need to authenticate to access this "
                        "operation.",
                    },
                }
                return self.reply(401, {"errors": [error]})
            status, result, after = self.execute(query, body.get("variables"))
        if after == "timeout":
            time.sleep(self.delay)
        elif after == "502":
            return Response("<html>502 Bad Gateway</html>", 502, mimetype="text/html")
        return self.reply(status, result)

    def authorized(self, header: str) -> bool:
        return header == API_KEY or header == f"Bearer {OAUTH_TOKEN}"

    def execute(self, query: str, variables: Any) -> tuple[int, dict[str, Any], str | None]:
        try:
            document = parse(query)
        except GraphQLError as error:
            return 400, {"errors": [validation_error(error)]}, None
        problems = validate(SCHEMA, document)
        if problems:
            return 400, {"errors": [validation_error(p) for p in problems]}, None
        context: dict[str, Any] = {"status": 200, "after": None}
        result = execute_sync(
            SCHEMA,
            document,
            root_value=self.workspace,
            context_value=context,
            variable_values=variables if isinstance(variables, dict) else None,
        )
        answer: dict[str, Any] = {"data": result.data}
        if result.errors:
            answer["errors"] = [e.formatted for e in result.errors]
            if result.data is None and context["status"] == 200 and not _from_resolvers(answer):
                context["status"] = 400  # variables that do not fit the schema
        return context["status"], answer, context["after"]

    @staticmethod
    def reply(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
        return Response(json.dumps(body), status, headers=headers, mimetype="application/json")


def validation_error(error: GraphQLError) -> dict[str, Any]:
    return {
        "message": error.message,
        "extensions": {"code": "GRAPHQL_VALIDATION_FAILED", "type": "graphql error"},
    }


def _from_resolvers(answer: dict[str, Any]) -> bool:
    return all("extensions" in e and "code" in e["extensions"] for e in answer["errors"])
