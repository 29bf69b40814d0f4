"""The API blueprint and its one way to declare an endpoint.

``@endpoint(...)`` registers the Flask route *and* what the OpenAPI document says
about it (scope, parameters, response model, errors), so the document cannot leave an
endpoint out. Views return plain JSON data; parameters arrive parsed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, current_app, request
from pydantic import BaseModel

from relay.admin.ops import Ops
from relay.context import WebContext

PREFIX = "/api/v1"
api = Blueprint("api", __name__, url_prefix=PREFIX)
ERROR_STATUS = {"confirmation_required": 422}


class ApiError(Exception):
    """Answer with ``status`` and the JSON body ``{"error": code, "detail": detail}``."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


def not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", what)


def json_response(data: Any, status: int = 200) -> Response:
    return Response(json.dumps(data), status=status, content_type="application/json")


def error_response(status: int, code: str, detail: str) -> Response:
    return json_response({"error": code, "detail": detail}, status)


Response_ = type[BaseModel] | tuple[type[BaseModel], ...] | None


@dataclass(frozen=True)
class Endpoint:
    method: str
    rule: str  # Flask rule under PREFIX, e.g. "/events/<event_id>"
    name: str  # Flask endpoint and OpenAPI operationId
    summary: str
    description: str
    scope: str | None  # None: no key needed
    params: tuple[Any, ...]  # relay.api.params.Param
    response: Response_  # None: any JSON object (the OpenAPI document itself)
    errors: tuple[int, ...]
    tag: str


ENDPOINTS: dict[str, Endpoint] = {}


def ops() -> Ops:
    """One ``Ops`` per app, built on first use."""
    runtime: WebContext = current_app.extensions["relay"]
    found = current_app.extensions.get("relay.admin.ops")
    if found is None:
        found = current_app.extensions["relay.admin.ops"] = Ops(runtime)
    return found


def endpoint(
    method: str,
    rule: str,
    *,
    summary: str,
    tag: str,
    scope: str | None = "read",
    params: tuple[Any, ...] = (),
    response: Response_,
    errors: tuple[int, ...] = (),
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare and route one operation; the view gets its parameters as keywords."""
    from relay.api.params import ParamError, parse_params

    def wrap(func: Callable[..., Any]) -> Callable[..., Any]:
        doc = (func.__doc__ or "").strip()
        found = Endpoint(method, rule, func.__name__, summary, doc, scope, params, response,
                         errors, tag)  # fmt: skip
        ENDPOINTS[func.__name__] = found

        def view(**path: str) -> Response:
            query = {name: request.args.getlist(name) for name in request.args}
            try:
                values = parse_params(params, query, path)
            except ParamError as exc:
                raise ApiError(ERROR_STATUS.get(exc.code, 400), exc.code, exc.detail) from None
            result = func(**values)
            return result if isinstance(result, Response) else json_response(result)

        api.add_url_rule(rule, endpoint=func.__name__, view_func=view, methods=[method])
        return func

    return wrap
