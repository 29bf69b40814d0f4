"""Receiver behaviour that does not depend on the signature scheme.

Size cap, unknown source, parse errors, method, the JSON error shape, Redis outages
(503 + ``Retry-After``, never 2xx, no stray dedupe key, the sender's retry accepted)
and the health endpoints. Requests that must get past verification are signed as a
``standard_webhooks`` sender would sign them.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.serving import BaseWSGIServer, make_server

from relay.cli.embedded import EmbeddedRedis, free_port
from relay.state import keys
from tests.conftest import TEST_SECRET
from tests.intake.sources.support import sign_standard_webhook as sign
from tests.intake.sources.support import stored_event

CONFIG = {"sources": [{"id": "ops", "kind": "standard_webhooks", "secrets": [TEST_SECRET]}]}
MAX_BODY = 4096
EVENT = {"type": "message.created", "data": {"group": {"id": "g1"}, "text": "hi"}}


@pytest.fixture
def config_path(write_config: Callable[..., Path]) -> Path:
    return write_config(CONFIG)


@pytest.fixture
def app(config_path: Path, make_app: Callable[..., Flask]) -> Flask:
    return make_app(config_path, max_body=MAX_BODY)


def error_of(response: Any, status: int) -> dict[str, Any]:
    """The JSON error body, after checking the status and the ``{error, detail}`` shape."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = json.loads(response.get_data())
    assert set(body) == {"error", "detail"}
    assert isinstance(body["error"], str) and isinstance(body["detail"], str) and body["detail"]
    return body


# -- size cap ---------------------------------------------------------------------------------


def test_oversized_with_content_length(client: FlaskClient, redis_client: redis.Redis) -> None:
    body = b"x" * (MAX_BODY + 1)
    response = client.post("/hooks/ops", data=body, headers=sign(body))
    assert error_of(response, 413)["error"] == "payload_too_large"
    assert redis_client.llen(keys.FANOUT_QUEUE) == 0


def test_oversized_before_source_lookup(client: FlaskClient) -> None:
    response = client.post("/hooks/nope", data=b"x" * (MAX_BODY + 1))
    assert error_of(response, 413)["error"] == "payload_too_large"


def _exactly(size: int) -> bytes:
    """A valid JSON body of exactly ``size`` bytes."""
    empty = len(json.dumps({"type": "custom", "pad": ""}))
    body = json.dumps({"type": "custom", "pad": "x" * (size - empty)}).encode()
    assert len(body) == size
    return body


def test_body_at_the_limit_is_accepted(client: FlaskClient) -> None:
    body = _exactly(MAX_BODY)
    assert client.post("/hooks/ops", data=body, headers=sign(body)).status_code == 202


def test_chunked_body_at_the_limit_is_accepted(served: str) -> None:
    body = _exactly(MAX_BODY)
    host, port = served.split(":")
    head = "POST /hooks/ops HTTP/1.1\r\nHost: relay\r\nTransfer-Encoding: chunked\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in sign(body).items()) + "\r\n"
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head.encode() + f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n")
        status = int(sock.makefile("rb").readline().split(b" ", 2)[1])
    assert status == 202


@pytest.fixture
def served(app: Flask) -> Iterator[str]:
    """The app on a real loopback socket, so chunked bodies go through a real server."""
    server: BaseWSGIServer = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
    thread.join(5)


def _raw_chunked(address: str, chunks: list[bytes]) -> tuple[int, dict[str, Any]]:
    """POST ``chunks`` with ``Transfer-Encoding: chunked`` (no Content-Length) by hand."""
    host, port = address.split(":")
    head = (
        b"POST /hooks/ops HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head)
        try:
            for chunk in chunks:
                sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server may answer and stop reading before the whole body is sent
        reader = sock.makefile("rb")
        status = int(reader.readline().split(b" ", 2)[1])
        length = 0
        while line := reader.readline().strip():
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        body = json.loads(reader.read(length))  # the server may keep the socket open
        reader.close()
    return status, body


def test_oversized_chunked_raw_socket(served: str, redis_client: redis.Redis) -> None:
    status, body = _raw_chunked(served, [b"x" * 1024] * 8)
    assert status == 413 and body["error"] == "payload_too_large"
    assert set(body) == {"error", "detail"}
    assert redis_client.llen(keys.FANOUT_QUEUE) == 0


def test_oversized_chunked_is_never_accepted(served: str, redis_client: redis.Redis) -> None:
    """Signed, but over the limit: refused by size (checked first), never cut and verified."""
    body = json.dumps({"type": "custom", "pad": "z" * (2 * MAX_BODY)}).encode()
    host, port = served.split(":")
    headers = sign(body)
    head = "POST /hooks/ops HTTP/1.1\r\nHost: relay\r\nTransfer-Encoding: chunked\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head.encode() + f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n")
        status = int(sock.makefile("rb").readline().split(b" ", 2)[1])
    assert status == 413
    assert redis_client.llen(keys.FANOUT_QUEUE) == 0


def test_small_chunked_body_is_read(served: str) -> None:
    status, body = _raw_chunked(served, [b'{"type": ', b'"custom"}'])
    assert status == 401  # read in full and got as far as verification
    assert body["error"] == "missing_signature"


def test_oversized_chunked_requests_generator(served: str, redis_client: redis.Redis) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(8):
            yield b"y" * 1024

    try:
        response = requests.post(
            f"http://{served}/hooks/ops",
            data=chunks(),
            timeout=10,
            headers={"Content-Type": "application/json"},
        )
    except requests.ConnectionError:
        pytest.skip("the server closed the socket before requests read the answer")
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"
    assert redis_client.llen(keys.FANOUT_QUEUE) == 0


# -- routing, method, parse errors ---------------------------------------------------------------


def test_unknown_source(client: FlaskClient) -> None:
    response = client.post("/hooks/nope", data=b"{}", headers=sign(b"{}"))
    body = error_of(response, 404)
    assert body["error"] == "unknown_source" and "nope" in body["detail"]


def test_get_on_hook_is_405(client: FlaskClient) -> None:
    response = client.get("/hooks/ops")
    assert error_of(response, 405)["error"] == "method_not_allowed"
    assert response.headers["Allow"] == "POST"


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])
def test_other_methods_are_405_json(client: FlaskClient, method: str) -> None:
    response = client.open("/hooks/ops", method=method, data=b"{}")
    assert response.status_code == 405 and response.headers["Allow"] == "POST"
    if method != "HEAD":  # a HEAD answer has no body
        error_of(response, 405)


@pytest.mark.parametrize("path", ["/hooks/", "/hooks/ops/extra", "/hooks//ops", "/hooksops"])
def test_paths_beside_the_hook_route_are_json_404(client: FlaskClient, path: str) -> None:
    body = b"{}"
    error_of(client.post(path, data=body, headers=sign(body)), 404)


def test_an_unexpected_failure_is_a_json_500_and_queues_nothing(
    app: Flask, client: FlaskClient, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in a source (here: parse raising) answers 500 JSON, never 2xx, and the
    sender's retry is not taken for a duplicate."""
    source = app.extensions["relay"].sources["ops"]

    def broken(request: Any) -> Any:
        raise RuntimeError("bug")

    monkeypatch.setattr(source, "parse", broken)
    body = json.dumps(EVENT).encode()
    assert error_of(client.post("/hooks/ops", data=body, headers=sign(body)), 500) == {
        "error": "internal_error",
        "detail": "the relay failed; see its log",
    }
    assert redis_client.llen(keys.FANOUT_QUEUE) == 0
    monkeypatch.undo()
    assert client.post("/hooks/ops", data=body, headers=sign(body)).status_code == 202


def test_unknown_path_is_json_404(client: FlaskClient) -> None:
    error_of(client.post("/nothing-here"), 404)


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("not json", b"{type: message.created"),
        ("empty", b""),
        ("trailing garbage", b'{"type": "custom"} x'),
        ("bad utf-8", b'{"text": "\xff\xfe"}'),
        ("lone surrogate bytes", b'{"text": "\xed\xa0\x80"}'),
        ("NaN", b'{"value": NaN}'),
        ("Infinity", b'{"value": Infinity}'),
        ("-Infinity", b"[-Infinity]"),
        ("deeply nested arrays", b"[" * 100_000 + b"]" * 100_000),
        ("deeply nested objects", b'{"a":' * 50_000 + b"1" + b"}" * 50_000),
        ("nested just past the stack", b"[" * 3000 + b"]" * 3000),
    ],
)
def test_bad_json_is_400(
    config_path: Path,
    make_app: Callable[..., Flask],
    redis_client: redis.Redis,
    name: str,
    body: bytes,
) -> None:
    client = make_app(config_path).test_client()  # the default 1 MiB limit
    response = client.post("/hooks/ops", data=body, headers=sign(body))
    assert error_of(response, 400)["error"] == "invalid_json"
    assert redis_client.llen(keys.FANOUT_QUEUE) == 0


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", ""],
)
def test_wrong_content_type_is_415(client: FlaskClient, content_type: str) -> None:
    body = json.dumps(EVENT).encode()
    headers = sign(body, content_type=content_type)
    if not content_type:
        del headers["Content-Type"]
    assert error_of(client.post("/hooks/ops", data=body, headers=headers), 415)


@pytest.mark.parametrize(
    "content_type",
    ["application/json; charset=utf-8", "Application/JSON", "application/cloudevents+json"],
)
def test_json_content_types_are_accepted(client: FlaskClient, content_type: str) -> None:
    body = json.dumps(EVENT).encode()
    response = client.post("/hooks/ops", data=body, headers=sign(body, content_type=content_type))
    assert response.status_code == 202


@pytest.mark.parametrize(
    ("event", "field"),
    [
        ({"type": "message.created", "data": {"group": {"name": "no id"}}}, "group.id"),
        ({"type": "message.created", "data": {"sender": {"id": ""}}}, "sender.id"),
        ({"type": "file.shared", "data": {"files": [{"name": "a.txt"}]}}, "files[0]"),
        ({"type": "message.created", "data": {"text": 5}}, "text"),
        ({"type": "message.created", "timestamp": "not a time", "data": {}}, "occurred_at"),
    ],
)
def test_invalid_group_event_is_422(
    client: FlaskClient, redis_client: redis.Redis, event: dict[str, Any], field: str
) -> None:
    body = json.dumps(event).encode()
    response = client.post("/hooks/ops", data=body, headers=sign(body))
    error = error_of(response, 422)
    assert error["error"] == "invalid_event"
    assert error["detail"].startswith(field), error["detail"]
    assert redis_client.llen(keys.FANOUT_QUEUE) == 0


@pytest.mark.parametrize("body", [b"[1, 2]", b'"text"', b"null", b'{"type": "unknown.kind"}'])
def test_other_json_becomes_custom_event(
    client: FlaskClient, redis_client: redis.Redis, body: bytes
) -> None:
    response = client.post("/hooks/ops", data=body, headers=sign(body))
    assert response.status_code == 202
    event_id = response.get_json()["event_id"]
    record = stored_event(redis_client, event_id)
    assert record["type"] == "custom" and record["raw"] == json.loads(body)


# -- Redis outages ----------------------------------------------------------------------------


def test_redis_unreachable_is_503(config_path: Path, make_app: Callable[..., Flask]) -> None:
    app = make_app(config_path, redis_url=f"redis://127.0.0.1:{free_port()}/0", redis_timeout=1)
    client = app.test_client()
    body = json.dumps(EVENT).encode()
    started = time.monotonic()
    response = client.post("/hooks/ops", data=body, headers=sign(body))
    assert time.monotonic() - started < 10
    assert error_of(response, 503)["error"] == "unavailable"
    assert int(response.headers["Retry-After"]) > 0
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.get_json()["checks"]["redis"].startswith("unreach")
    assert client.get("/healthz").status_code == 200


def test_redis_down_then_restarted(
    config_path: Path, make_app: Callable[..., Flask], tmp_path: Path
) -> None:
    """Scenario 6: 503 while down, no dedupe key left, the sender's retry accepted once."""
    server = EmbeddedRedis(tmp_path / "own-redis", port=free_port()).start()
    try:
        app = make_app(config_path, redis_url=server.url, redis_timeout=1)
        client = app.test_client()
        body = json.dumps(EVENT).encode()
        warm = client.post("/hooks/ops", data=body, headers=sign(body, msg_id="msg_before"))
        assert warm.status_code == 202

        server.kill()
        headers = sign(body, msg_id="msg_outage")
        for _ in range(3):  # the sender retries while Redis is away
            response = client.post("/hooks/ops", data=body, headers=headers)
            assert error_of(response, 503)["error"] == "unavailable"
            assert "Retry-After" in response.headers
        assert client.get("/readyz").status_code == 503

        server.start()
        check = redis.Redis.from_url(server.url)
        try:
            assert not check.exists(keys.dedupe("ops", "msg_outage"))
            assert client.get("/readyz").status_code == 200
            retry = client.post("/hooks/ops", data=body, headers=headers)
            assert retry.status_code == 202, retry.get_data(as_text=True)
            assert "duplicate" not in retry.get_json()
            again = client.post("/hooks/ops", data=body, headers=headers)
            assert again.status_code == 200
            assert again.get_json() == {"event_id": retry.get_json()["event_id"], "duplicate": True}
            assert check.exists(keys.dedupe("ops", "msg_outage"))
            # AOF kept the event accepted before the crash (appendfsync everysec + restart).
            queued = check.llen(keys.FANOUT_QUEUE)
            assert queued in (1, 2)
        finally:
            check.close()
    finally:
        server.stop()


# -- health ------------------------------------------------------------------------------------


def test_health_endpoints(client: FlaskClient) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["checks"]["redis"] == "ok"


def test_duplicate_json_keys_are_refused(client: FlaskClient, redis_client: redis.Redis) -> None:
    body = b'{"type": "message.created", "type": "custom"}'
    response = client.post("/hooks/ops", data=body, headers=sign(body))
    assert response.status_code == 400
    assert "appears twice" in response.get_json()["detail"]
    assert redis_client.llen("relay.fanout") == 0


@pytest.mark.parametrize(
    "body, status, error",
    [
        # a lone surrogate: valid JSON, not storable
        (b'{"type": "custom", "note": "\\ud800"}', 422, "invalid_event"),
        # parses, but too deep to serialise
        (b'{"deep": ' + b"[" * 300 + b"]" * 300 + b"}", 422, "invalid_event"),
    ],
)
def test_a_signed_body_that_cannot_be_stored_is_422_not_500(
    client: FlaskClient, redis_client: redis.Redis, body: bytes, status: int, error: str
) -> None:
    response = client.post("/hooks/ops", data=body, headers=sign(body))
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.json and response.json["error"] == error
    assert redis_client.llen(keys.FANOUT_QUEUE) == 0
    assert not redis_client.keys(keys.dedupe("ops", "*"))


def test_a_405_names_the_allowed_methods(client: FlaskClient) -> None:
    response = client.delete("/healthz")
    assert response.status_code == 405
    assert "GET" in response.headers["Allow"]
    assert response.get_json()["error"] == "method_not_allowed"
