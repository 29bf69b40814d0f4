"""API keys on every request, the access log, and the API's error answers.

``Authorization: Bearer rk_<id>_<secret>``. A request with no key, a malformed one,
an unknown, wrong or revoked one gets 401; a key whose scope is too small gets 403.
Both are written to the audit log (``auth.failed`` / ``auth.denied``) with the remote
address and the key id if one was given, never the token. The 401s, from nobody known,
are aggregated per address and minute (``AuditLog.record_failure``) so a flood of them
cannot rotate the log; a 403 names a valid key, and each is written. Every request under
``/api/v1`` is access-logged: method, path, status, key id, remote address and
milliseconds (never the Authorization header or the query string).
"""

from __future__ import annotations

import re
import time

import redis
import structlog
from flask import Response, current_app, g, request
from werkzeug.exceptions import MethodNotAllowed

from relay.api.core import ENDPOINTS, PREFIX, ApiError, api, error_response
from relay.context import WebContext
from relay.redact import SECRETS_ENVIRON, redact
from relay.state.apikeys import ApiKeys, allows
from relay.state.audit import AuditLog
from relay.state.connection import RedisStalled
from relay.state.replicas import NotReplicated

log = structlog.get_logger("relay.api")
_CLAIMED_ID = re.compile(r"^rk_([0-9a-f]{12})_")


def _ours() -> bool:
    return request.path == PREFIX or request.path.startswith(PREFIX + "/")


def _path() -> str:
    """The request path with configured secrets masked (a caller may paste one in)."""
    runtime: WebContext = current_app.extensions["relay"]
    return redact(request.path, runtime.config.secrets) or ""


@api.before_app_request
def _start_clock() -> None:
    # gunicorn's access log has no config: it redacts with the secrets left here
    runtime: WebContext = current_app.extensions["relay"]
    request.environ[SECRETS_ENVIRON] = runtime.config.secrets
    if _ours():
        g.api_started = time.perf_counter()


def _refuse(status: int, code: str, detail: str, *, actor: str, why: str) -> Response:
    runtime: WebContext = current_app.extensions["relay"]
    action = "auth.failed" if status == 401 else "auth.denied"
    audit_log = AuditLog(runtime.redis)
    # nobody known (401): aggregated per address and minute; a valid key (403): each
    write = audit_log.record_failure if status == 401 else audit_log.record
    try:
        write(
            action,
            actor=actor,
            target=f"{request.method} {_path()}",
            outcome="denied",
            remote_addr=request.remote_addr,
            detail=why,
        )
    except redis.RedisError:
        log.warning("api.audit_unavailable", action=action)
    response = error_response(status, code, detail)
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="relay"'
    return response


@api.before_request
def _authenticate() -> Response | None:
    found = ENDPOINTS.get((request.endpoint or "").partition(".")[2])
    if found is None or found.scope is None:
        return None
    runtime: WebContext = current_app.extensions["relay"]
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        why = "no bearer token" if not scheme else "not a bearer token"
        return _refuse(401, "unauthorized", "an API key is required", actor="-", why=why)
    key = ApiKeys(runtime.redis).verify(token)
    if key is None:
        claimed = _CLAIMED_ID.match(token)
        return _refuse(
            401,
            "unauthorized",
            "the API key is unknown, revoked or wrong",
            actor=claimed.group(1) if claimed else "-",
            why="unknown, revoked or wrong key" if claimed else "not an API key",
        )
    g.api_key_id, g.api_key_scope = key.id, key.scope
    if not allows(key.scope, found.scope):
        return _refuse(
            403,
            "forbidden",
            f"this needs a key with the {found.scope} scope; this key has {key.scope}",
            actor=key.id,
            why=f"needs {found.scope}, has {key.scope}",
        )
    return None


def reveals_replies() -> bool:
    """Whether this request's key may see reply URLs (they let one post as the bot)."""
    scope = g.get("api_key_scope")
    return isinstance(scope, str) and allows(scope, "admin")


@api.after_app_request
def _access_log(response: Response) -> Response:
    if _ours():
        refused = request.routing_exception
        if isinstance(refused, MethodNotAllowed) and refused.valid_methods:
            response.headers.setdefault("Allow", ", ".join(sorted(refused.valid_methods)))
        started = g.get("api_started")
        log.info(
            "api.request",
            method=request.method,
            path=_path(),
            status=response.status_code,
            key_id=g.get("api_key_id"),
            remote_addr=request.remote_addr,
            ms=round((time.perf_counter() - started) * 1000, 2) if started else None,
        )
    return response


@api.errorhandler(ApiError)
def _api_error(error: ApiError) -> Response:
    runtime: WebContext = current_app.extensions["relay"]
    detail = redact(error.detail, runtime.config.secrets) or ""  # it may quote the request
    return error_response(error.status, error.code, detail)


@api.errorhandler(redis.RedisError)
def _redis_down(error: redis.RedisError) -> Response:
    """Any Redis failure is a 503 the caller may retry (the client fails fast while
    Redis stalls: ``relay.state.connection``), never a 500 or a hang."""
    log.warning("api.redis_error", error=type(error).__name__)
    runtime: WebContext = current_app.extensions["relay"]
    if isinstance(error, redis.ConnectionError | redis.TimeoutError):
        within = f"did not answer within {runtime.settings.redis_timeout:g}s"
        what = within if isinstance(error, redis.TimeoutError | RedisStalled) else "is unreachable"
    elif isinstance(error, NotReplicated):
        what = f"kept the write but {error}"  # names how many replicas confirmed it
    else:
        what = f"refused the command ({type(error).__name__})"
    response = error_response(503, "unavailable", f"Redis {what}; try again shortly")
    response.headers["Retry-After"] = "5"
    return response
