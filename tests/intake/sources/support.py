"""Helpers the source tests share, so each test module keeps only its platform's own parts.

What is shared: building a source without an app, posting to a hook, reading back what
intake stored, the relay's refusal shape, request mutations for the bad-input matrices,
and the strategies and the "never a 5xx" property of the fuzz tests. How a platform signs,
seals and addresses its requests stays in that platform's test module.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from werkzeug.test import TestResponse

from relay import signing
from relay.config.loader import parse_config
from relay.errors import BadRequest
from relay.intake.sources.base import InboundRequest, Source
from relay.state import keys
from tests.conftest import TEST_SECRET

Headers = list[tuple[str, str]]
Mutation = Callable[[dict[str, str], bytes], tuple[Headers, bytes]]
SourceT = TypeVar("SourceT", bound=Source)


# -- requests ------------------------------------------------------------------------------------


def build_source(kind: type[SourceT], entry: dict[str, Any]) -> SourceT:
    """One source from a config entry, parsed as ``relay.yaml`` is: unit checks need no app."""
    config = parse_config({"sources": [entry]})
    return kind(config.sources[entry["id"]])


def inbound(headers: dict[str, str], body: bytes = b"{}") -> InboundRequest:
    """A POST as the receiver hands it to a source: lower-case names, one value each."""
    return InboundRequest("POST", {k.lower(): [v] for k, v in headers.items()}, body)


def assert_repeated_header_refused(
    source: Source, headers: dict[str, str], name: str, body: bytes
) -> None:
    """Where a server keeps a repeated header apart, the source refuses the request with a
    400 (``duplicate_header``) rather than pick one of the values."""
    values = {k.lower(): [v] for k, v in headers.items()}
    values[name.lower()] *= 2
    with pytest.raises(BadRequest) as caught:
        source.verify(InboundRequest("POST", values, body))
    assert caught.value.code == "duplicate_header"


def post(
    client: FlaskClient, source_id: str, body: bytes, headers: dict[str, str] | Headers
) -> TestResponse:
    """``body`` posted to a source's hook; a header list may repeat a name, as a forger's can."""
    return client.post(f"/hooks/{source_id}", data=body, headers=headers)


def sign_standard_webhook(
    body: bytes,
    *,
    secrets: tuple[str, ...] = (TEST_SECRET,),
    msg_id: str = "msg_1",
    ts: int | str | None = None,
    content_type: str = "application/json",
) -> dict[str, str]:
    """The headers a Standard Webhooks sender sends with ``body``; intake tests use it too."""
    stamp = str(int(time.time())) if ts is None else str(ts)
    keyset = [signing.decode_secret(s) for s in secrets]
    return {
        "Content-Type": content_type,
        "webhook-id": msg_id,
        "webhook-timestamp": stamp,
        "webhook-signature": signing.sign_header(keyset, msg_id, stamp, body),
    }


# -- answers -------------------------------------------------------------------------------------


def stored_event(redis_client: redis.Redis, event_id: str) -> dict[str, Any]:
    """The event as intake stored it in Redis: what the workers will fan out."""
    data = redis_client.hget(keys.event(event_id), "data")
    assert data, f"event {event_id} is not stored"
    event: dict[str, Any] = json.loads(data)
    return event


def assert_refused(
    response: TestResponse, status: int | set[int], code: str | None, redis_client: redis.Redis
) -> None:
    """Refused with ``status`` (one of a set, where the server decides) and the relay's JSON
    ``{error, detail}``, and nothing queued: a refusal must never leak into fan-out."""
    allowed = status if isinstance(status, set) else {status}
    assert response.status_code in allowed, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"error", "detail"} and body["detail"]
    if code:
        assert body["error"] == code, body
    assert redis_client.llen(keys.FANOUT_QUEUE) == 0


# -- the bad-input matrices ----------------------------------------------------------------------


def flip(data: bytes, index: int) -> bytes:
    """``data`` with the low bit of one byte flipped: the smallest tampering there is."""
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


def _header_key(name: str) -> str:
    return name.lower().replace("-", "_")


def tamper(**changes: Any) -> Mutation:
    """A change to a valid request, for one row of a bad-input matrix.

    Headers are named in any case, ``_`` for ``-`` (``webhook_id``, ``X-Signature``): a value
    replaces the header, a callable maps it, ``None`` drops it and a list repeats it. A
    ``body`` callable maps the body.
    """
    change_body: Callable[[bytes], bytes] | None = changes.pop("body", None)
    wanted = {_header_key(name): change for name, change in changes.items()}

    def mutate(headers: dict[str, str], body: bytes) -> tuple[Headers, bytes]:
        if change_body is not None:
            body = change_body(body)
        out: Headers = []
        for name, value in headers.items():
            new = wanted.get(_header_key(name), value)
            new = new(value) if callable(new) else new
            if isinstance(new, list):
                out += [(name, v) for v in new]
            elif new is not None:
                out.append((name, new))
        return out, body

    return mutate


# -- property tests: never a 5xx -----------------------------------------------------------------

FUZZ = settings(
    max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
# Header values as a WSGI server hands them over: latin-1 text without line breaks
# (including '²³¹', which str.isdigit() accepts but int() does not).
LATIN1 = st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f")


def any_json(
    *, text: int = 20, width: int = 4, key: int = 10, leaves: int = 20, infinity: bool = False
) -> st.SearchStrategy[Any]:
    """Any JSON value, nested a little; ``infinity`` adds floats that dump as ``Infinity``,
    which is not JSON, so a parser sees that too."""
    return st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False, allow_infinity=infinity)
        | st.text(max_size=text),
        lambda children: (
            st.lists(children, max_size=width)
            | st.dictionaries(st.text(max_size=key), children, max_size=width)
        ),
        max_leaves=leaves,
    )


def drawn(
    data: st.DataObject,
    names: Iterable[str],
    values: st.SearchStrategy[str],
    start: dict[str, str] | None = None,
) -> dict[str, str]:
    """``start`` plus each named header (or query parameter) drawn from ``values`` or left
    out: what a forger who knows the names but not the secret might send."""
    out = dict(start or {})
    for name in names:
        value = data.draw(st.none() | values, label=name)
        if value is not None:
            out[name] = value
    return out


def with_header(headers: dict[str, str], name: str, value: str) -> dict[str, str]:
    """``headers`` with ``name``, in whatever case it was, replaced by one ``value``."""
    out = {k: v for k, v in headers.items() if k.lower() != name.lower()}
    out[name] = value
    return out


def signed_sample(app: Flask, source_id: str, body: bytes) -> tuple[dict[str, str], bytes]:
    """``body`` signed (and sealed, where the platform encrypts) by the source's own
    ``sample``: fuzzed content then gets past verification to the parser."""
    sample = app.extensions["relay"].sources[source_id].sample(body)
    return dict(sample.headers), sample.body


def fuzz_answer(response: TestResponse) -> dict[str, Any] | None:
    """The property every source holds, whatever arrives: never a 5xx, and a refusal is the
    relay's JSON ``{error, detail}``. The JSON answer, or ``None`` for a non-JSON success."""
    assert response.status_code < 500, response.get_data(as_text=True)
    if response.mimetype != "application/json":
        assert response.status_code < 300, response.get_data(as_text=True)
        return None
    body = json.loads(response.get_data())
    assert isinstance(body, dict), body
    if response.status_code >= 300:
        assert isinstance(body.get("error"), str) and isinstance(body.get("detail"), str), body
    return body


def fuzz_json(response: TestResponse, *answers: str) -> dict[str, Any]:
    """``fuzz_answer`` for a source that always answers JSON; a success carries a string
    under one of ``answers`` (the event id, or a handshake's reply)."""
    body = fuzz_answer(response)
    assert body is not None, response.get_data(as_text=True)
    if response.status_code < 300 and answers:
        assert any(isinstance(body.get(key), str) and body[key] for key in answers), body
    return body
