"""``POST /hooks/<source-id>``: verify, parse, dedupe and durably enqueue one event.

Checks run in this order, cheapest and least trusting first: size cap (413) → known
source (404) → platform handshake → signature on the raw bytes (401) → parse (400,
415, 422) → dedupe + enqueue in one Redis script (503 if Redis is away) → 202, or
200 with ``"duplicate": true`` for a resend. A 2xx always means the event is queued.
Each refusal is counted by source and code once its answer has gone out (best effort,
see ``_count_after``); accepted events and resends are counted by the intake script.

The route is served by ``IntakeRoute``, plain WSGI on werkzeug in front of the Flask
app, which serves everything else: Flask's per-request machinery (contexts, URL map,
app-wide hooks, sessions) costs more CPU than verifying and parsing an event, and
intake is the path every event takes.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import redis
import structlog
from werkzeug.datastructures import EnvironHeaders, Headers
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge
from werkzeug.wrappers import Request, Response

from relay.errors import (
    BadRequest,
    IntakeError,
    PayloadTooLarge,
    RequestTimeout,
    TooManyRequests,
    Unavailable,
    UnknownSource,
)
from relay.intake.accept import Intake
from relay.intake.deadline import DEADLINES
from relay.intake.sources.base import InboundRequest, Reply
from relay.state import stats

log = structlog.get_logger("relay.receiver")
PREFIX = "/hooks/"
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
_METHOD_NOT_ALLOWED = b'{"error": "method_not_allowed", "detail": "use POST"}'
_INTERNAL = b'{"error": "internal_error", "detail": "the relay failed; see its log"}'
# Seconds a request's body may take to arrive. Platforms send a few KiB from a data
# centre in milliseconds, and Feishu gives up on an answer after 3 s anyway.
BODY_DEADLINE = 5.0


class IntakeRoute:
    """WSGI middleware: ``/hooks/<source-id>`` is answered here, any other path by
    ``app`` (the Flask app)."""

    def __init__(self, app: WSGIApp, intake: Intake) -> None:
        self.app = app
        self.intake = intake

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path: str = environ.get("PATH_INFO") or ""
        source_id = path[len(PREFIX) :] if path.startswith(PREFIX) else ""
        if not source_id or "/" in source_id:
            return self.app(environ, start_response)
        return self.respond(Request(environ), source_id)(environ, start_response)

    def respond(self, request: Request, source_id: str) -> Response:
        """The answer to one request; never raises, never a bare 500."""
        intake = self.intake
        try:
            if request.method not in ("GET", "POST"):
                return _method_not_allowed(intake, source_id)
            return receive(intake, request, source_id)
        except IntakeError as error:
            log.info("intake.refused", path=request.path, status=error.status, error=error.code)
            refused = error_response(error)
            source = intake.sources.get(source_id)
            if source is not None:
                refused.headers.update(source.refusal_headers(error))
            return _count_after(refused, intake, source_id, error.code)
        except Exception:
            log.exception("intake.unexpected_error", path=request.path)
            return Response(_INTERNAL, 500, content_type="application/json")


class _HeaderView(Mapping[str, Sequence[str]]):
    """The request's headers as ``InboundRequest`` reads them (lower-case name → values),
    looked up in the WSGI environ on demand: a source reads three or four of them, and
    copying (or scanning) them all costs more than the rest of the parsing.

    WSGI servers join a repeated header into one comma-separated value, so each name
    has exactly one value here.
    """

    def __init__(self, environ: dict[str, Any]) -> None:
        self._environ = environ

    @staticmethod
    def _key(name: str) -> str:
        key = name.upper().replace("-", "_")
        return key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key

    def __getitem__(self, name: str) -> Sequence[str]:
        value = self._environ.get(self._key(name))
        if value is None or value == "":
            raise KeyError(name)
        return (value,)

    def __iter__(self) -> Iterator[str]:
        return iter(Headers(EnvironHeaders(self._environ)).keys(lower=True))

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _inbound(request: Request, max_body: int, deadline: float = BODY_DEADLINE) -> InboundRequest:
    length = request.content_length
    if length is not None and length > max_body:
        _stop_reading(request.environ)
        raise PayloadTooLarge(f"body is {length} bytes; the limit is {max_body}")
    # Read one byte past the limit: a chunked body has no length to check up front, and
    # werkzeug's limited stream would otherwise just stop at the limit (a silent cut).
    request.max_content_length = max_body + 1
    body = _read_body(request, max_body, deadline)
    if len(body) > max_body:
        _stop_reading(request.environ)
        raise PayloadTooLarge(f"body is larger than the limit of {max_body} bytes")
    environ = request.environ
    return InboundRequest(
        method=request.method,
        headers=_HeaderView(environ),
        body=body,
        args={k: request.args.getlist(k) for k in request.args}
        if environ.get("QUERY_STRING")
        else {},
        remote_addr=request.remote_addr,
    )


def _read_body(request: Request, max_body: int, deadline: float) -> bytes:
    """The whole body within ``deadline`` seconds, else ``RequestTimeout``.

    Gunicorn's threads read a body in blocking mode with no time limit (its ``timeout``
    is the worker's heartbeat, not a read limit), so a client trickling its body would
    hold a request thread for as long as it likes. Where the server exposes the
    connection's socket, ``DEADLINES`` shuts it for reading when the time is up, which
    ends the read; a deployment behind a buffering proxy (deploy/nginx.conf) never
    gets here with a slow body.
    """
    environ = request.environ
    sock = _client_socket(environ)
    ticket = DEADLINES.watch(sock, deadline) if sock is not None else None
    ends = time.monotonic() + deadline
    try:
        body = request.get_data(cache=False)
    except RequestEntityTooLarge:
        body = b"\0" * (max_body + 1)
    except (ClientDisconnected, OSError):
        body = None
    in_time = DEADLINES.cancel(ticket) if ticket is not None else time.monotonic() < ends
    if not in_time:  # a shut socket reads as the end of the body: never trust that body
        raise RequestTimeout(f"the body did not arrive within {deadline:g}s")
    length = request.content_length
    if body is None or (length is not None and len(body) < length):
        _stop_reading(environ)
        raise BadRequest("the connection ended before the body was complete")
    return body


def _client_socket(environ: Mapping[str, Any]) -> socket.socket | None:
    """The connection's socket, where the server puts it in the environ."""
    sock = environ.get("gunicorn.socket") or environ.get("werkzeug.socket")
    return sock if isinstance(sock, socket.socket) else None


def _stop_reading(environ: Mapping[str, Any]) -> None:
    """Stop reading a body the relay has refused: the server would otherwise drain the
    rest before the next request on the connection, at the client's pace, holding its
    thread all the while. The answer still goes out; the connection then ends."""
    sock = _client_socket(environ)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RD)


def _respond(reply: Reply) -> Response:
    response = Response(reply.body, status=reply.status, content_type=reply.content_type)
    for name, value in reply.headers.items():
        response.headers[name] = value
    return response


def _method_not_allowed(intake: Intake, source_id: str) -> Response:
    refused = Response(_METHOD_NOT_ALLOWED, 405, {"Allow": "POST"})
    refused.content_type = "application/json"
    return _count_after(refused, intake, source_id, "method_not_allowed")


def receive(intake: Intake, request: Request, source_id: str) -> Response:
    """Handshake, or verify → parse → enqueue; refusals are raised as ``IntakeError``."""
    started = time.perf_counter()
    inbound = _inbound(request, intake.settings.max_body)
    source = intake.sources.get(source_id)
    if source is None:
        raise UnknownSource(f"no source with id {source_id!r} is configured")
    handshake = source.handshake(inbound)
    if handshake is not None:
        return _respond(handshake)
    if inbound.method != "POST":
        return _method_not_allowed(intake, source_id)
    source.verify(inbound)
    intake.inbound_limit(source_id)
    parsed = source.parse(inbound)
    accepted = intake.enqueue(source_id, parsed)
    log.info(
        "intake.accepted",
        source=source_id,
        event_id=accepted.event_id,
        type=parsed.event.type,
        duplicate=accepted.duplicate,
        ms=round((time.perf_counter() - started) * 1000, 2),
    )
    return _respond(source.reply(inbound, accepted.event_id, duplicate=accepted.duplicate))


_COUNT_PAUSE = 5.0  # after Redis failed a refusal count, stop trying for this long
_count_paused_until = 0.0


def _count_after(response: Response, intake: Intake, source_id: str, code: str) -> Response:
    """Count the refusal once the answer has gone out, best effort: a Redis failure is
    logged, never turns the 4xx into a 5xx, and pauses counting for a few seconds so an
    outage does not keep request threads waiting on it. An id that is not configured is
    counted as ``(unknown)``: callers cannot create keys or fields at will."""
    counted = source_id if source_id in intake.sources else stats.UNKNOWN_SOURCE

    def count() -> None:
        global _count_paused_until
        if time.monotonic() < _count_paused_until:
            return
        try:
            stats.count_refusal(intake.redis, counted, code)
        except redis.RedisError as exc:
            _count_paused_until = time.monotonic() + _COUNT_PAUSE
            log.warning("intake.refusal_not_counted", source=counted, error=type(exc).__name__)

    response.call_on_close(count)
    return response


def error_response(error: IntakeError) -> Response:
    response = Response(
        json.dumps({"error": error.code, "detail": error.detail}),
        status=error.status,
        content_type="application/json",
    )
    if isinstance(error, Unavailable | TooManyRequests):
        response.headers["Retry-After"] = str(error.retry_after)
    return response
