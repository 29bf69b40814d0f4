"""The OpenAPI 3.1 document of the management API, built from the code that serves it.

Paths, parameters, scopes and errors come from the ``@endpoint`` declarations
(``relay.api.core``); schemas from the pydantic models (``relay.api.models``). The
document is served at ``/api/v1/openapi.json`` without a key: it holds no data.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from relay import __version__
from relay.api.core import ENDPOINTS, PREFIX, Endpoint, endpoint
from relay.api.models import Error, schema_models

REF = "#/components/schemas/{model}"
ERRORS = {
    400: "A parameter is unknown, repeated or malformed (`invalid_parameter`, "
    "`unknown_parameter`, `missing_parameter`).",
    401: "No API key, or an unknown, revoked or wrong one (`unauthorized`); recorded in the "
    "audit log as `auth.failed`.",
    403: "The key's scope does not allow this (`forbidden`); recorded as `auth.denied`.",
    404: "No such record, or not in the state the operation needs (`not_found`).",
    422: "The request must confirm a destructive action (`confirmation_required`).",
    503: "Redis is unreachable (`unavailable`); retry after `Retry-After` seconds.",
}
SCOPES = {
    "read": "look at everything except the audit log",
    "replay": "also replay dead letters",
    "admin": "also purge, pause, resume and reset targets, and read the audit log",
}
DESCRIPTION = (
    "Operate a group-relay: events, deliveries, attempts and dead letters (list, filter, "
    "replay, purge), queues, targets (state, rates, latency; pause and resume), sources "
    "and the audit log.\n\nAuthenticate with `Authorization: Bearer rk_...` (create keys "
    "with `relay keys create NAME --scope read|replay|admin`). Scopes nest: "
    + "; ".join(f"`{k}`: {v}" for k, v in SCOPES.items())
    + '.\n\nList operations answer `{"items": [...], "next_cursor": ...}`; pass '
    "`next_cursor` as `cursor` for the next page (null: no more). Times are Unix seconds "
    "in answers; filters take Unix seconds or ISO 8601. Every error is JSON "
    '`{"error": code, "detail": text}`. Secrets from the config are redacted everywhere.'
)


def _ref(model: type[BaseModel]) -> dict[str, Any]:
    return {"$ref": REF.format(model=model.__name__)}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _operation(found: Endpoint) -> dict[str, Any]:
    if found.response is None:
        body: dict[str, Any] = {"type": "object"}
    elif isinstance(found.response, tuple):
        body = {"anyOf": [_ref(m) for m in found.response]}
    else:
        body = _ref(found.response)
    codes = set(found.errors) | {503}
    if found.params:
        codes.add(400)
    if found.scope is not None:
        codes |= {401, 403}
    responses = {"200": _json(body, "OK")}
    error = _ref(Error)
    responses.update({str(code): _json(error, ERRORS[code]) for code in sorted(codes)})
    operation: dict[str, Any] = {
        "operationId": found.name,
        "summary": found.summary,
        "description": found.description
        + (f"\n\nNeeds a key with the `{found.scope}` scope." if found.scope else ""),
        "tags": [found.tag],
        "parameters": [p.openapi() for p in found.params],
        "responses": responses,
        "security": [{"bearer": []}] if found.scope else [],
    }
    if found.scope:
        operation["x-scope"] = found.scope
    return operation


@cache
def document() -> dict[str, Any]:
    _, top = models_json_schema(
        [(model, "serialization") for model in schema_models()], ref_template=REF
    )
    paths: dict[str, dict[str, Any]] = {}
    for found in ENDPOINTS.values():
        path = PREFIX + re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", found.rule)
        paths.setdefault(path, {})[found.method.lower()] = _operation(found)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "group-relay management API",
            "version": __version__,
            "description": DESCRIPTION,
        },  # fmt: skip
        "tags": [{"name": name} for name in sorted({e.tag for e in ENDPOINTS.values()})],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": top.get("$defs", {}),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key, `rk_<id>_<secret>`.",
                }
            },
        },
    }


@endpoint("GET", "/openapi.json", summary="This document", tag="meta", scope=None,
          response=None)  # fmt: skip
def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 description of every operation; no key needed."""
    return document()
