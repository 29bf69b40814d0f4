"""Property tests of intake: whatever arrives, the answer is never a 5xx and always JSON.

Arbitrary bytes, arbitrary JSON and arbitrary header values are posted to a
``standard_webhooks`` and an ``hmac`` source, both unsigned and correctly signed (so
the parser and the ``GroupEvent`` validation are reached too). The app is built once
per module on the suite's Redis, so Hypothesis examples do not rebuild it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay import create_app
from relay.config import parse_config
from relay.embedded import EmbeddedRedis
from relay.events import EVENT_TYPES
from relay.settings import Settings
from tests.conftest import TEST_SECRET

CONFIG = {
    "sources": [
        {"id": "sw", "kind": "standard_webhooks", "secrets": [TEST_SECRET]},
        {"id": "gh", "kind": "hmac", "preset": "github", "secrets": ["fuzz-secret"]},
        {
            "id": "stamped",
            "kind": "hmac",
            "header": "X-Signature",
            "encoding": "base64",
            "algorithm": "sha512",
            "prefix": "v1=",
            "timestamp_header": "X-Timestamp",
            "signed_payload": "{timestamp}.{body}",
            "secrets": ["fuzz-secret"],
        },
    ]
}
SOURCE_IDS = ["sw", "gh", "stamped"]
HEADER_NAMES = {
    "sw": ["webhook-id", "webhook-timestamp", "webhook-signature"],
    "gh": ["X-Hub-Signature-256", "X-GitHub-Delivery"],
    "stamped": ["X-Signature", "X-Timestamp"],
}
FUZZ = settings(
    max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)

# Header values as a WSGI server hands them over: latin-1 text without line breaks
# (including '²³¹', which str.isdigit() accepts but int() does not).
_LATIN1 = st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f")
header_values = st.one_of(
    st.text(_LATIN1, max_size=120),
    st.from_regex(r"\A(v1,|sha256=|v1=)[A-Za-z0-9+/=]{0,100}\Z"),
    st.integers(min_value=-(10**15), max_value=10**15).map(str),
)
content_types = st.sampled_from(
    [
        "application/json",
        "application/json; charset=utf-8",
        "text/plain",
        "",
        "application/x+json",
    ]
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
party = st.fixed_dictionaries(
    {"id": st.text(max_size=300)}, optional={"name": st.one_of(st.none(), st.text(max_size=10))}
)
event_like = st.fixed_dictionaries(
    {"type": st.sampled_from([*EVENT_TYPES, "other"])},
    optional={
        "timestamp": st.one_of(st.text(max_size=30), st.integers(), st.none()),
        "data": st.fixed_dictionaries(
            {},
            optional={
                "group": st.one_of(party, json_values),
                "sender": party,
                "text": json_values,
                "mentions": st.lists(party, max_size=2),
                "occurred_at": json_values,
                "files": st.lists(
                    st.dictionaries(
                        st.sampled_from(["name", "url", "ref", "size", "mime"]), json_values
                    ),
                    max_size=2,
                ),
            },
        ),
    },
)


@pytest.fixture(scope="module")
def app(redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory) -> Flask:
    state = tmp_path_factory.mktemp("fuzz")
    relay_settings = Settings(
        redis_url=redis_server.url,
        config=state / "relay.yaml",
        state_dir=state / "state",
        visibility_timeout=20,
        task_time_limit=12,
        http_timeout=5,
        log_format="json",
        max_body=16384,
    )
    app = create_app(relay_settings, parse_config(CONFIG))
    app.testing = True
    return app


@pytest.fixture(scope="module")
def client(app: Flask) -> Iterator[FlaskClient]:
    yield app.test_client()
    cleaner = redis.Redis.from_url(app.extensions["relay"].settings.redis_url)
    cleaner.flushall()
    cleaner.close()


def check(response: Any) -> dict[str, Any]:
    """The property: below 500, JSON, and either an error or an event id."""
    assert response.status_code < 500, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = json.loads(response.get_data())
    assert isinstance(body, dict)
    if response.status_code < 300:
        assert isinstance(body.get("event_id"), str)
    else:
        assert isinstance(body.get("error"), str) and isinstance(body.get("detail"), str)
    return body


def signed(app: Flask, source_id: str, body: bytes) -> dict[str, str]:
    """Signed as configured; ``sample`` draws a fresh webhook-id / delivery id each time."""
    return dict(app.extensions["relay"].sources[source_id].sample(body).headers)


@FUZZ
@given(
    source_id=st.sampled_from(SOURCE_IDS),
    body=st.binary(max_size=2000),
    content_type=content_types,
    data=st.data(),
)
def test_unsigned_garbage(
    client: FlaskClient, source_id: str, body: bytes, content_type: str, data: st.DataObject
) -> None:
    headers = {"Content-Type": content_type}
    for name in HEADER_NAMES[source_id]:
        value = data.draw(st.none() | header_values, label=name)
        if value is not None:
            headers[name] = value
    response = client.post(f"/hooks/{source_id}", data=body, headers=headers)
    check(response)
    assert response.status_code >= 400


@FUZZ
@given(
    source_id=st.sampled_from(SOURCE_IDS), body=st.binary(max_size=2000), content_type=content_types
)
def test_signed_bytes(
    app: Flask, client: FlaskClient, source_id: str, body: bytes, content_type: str
) -> None:
    headers = signed(app, source_id, body)
    headers["content-type"] = content_type
    check(client.post(f"/hooks/{source_id}", data=body, headers=headers))


@FUZZ
@given(source_id=st.sampled_from(SOURCE_IDS), value=st.one_of(json_values, event_like))
def test_signed_json(app: Flask, client: FlaskClient, source_id: str, value: Any) -> None:
    body = json.dumps(value).encode()
    response = client.post(f"/hooks/{source_id}", data=body, headers=signed(app, source_id, body))
    result = check(response)
    assert response.status_code in (202, 422), result
    if response.status_code == 422:
        assert result["error"] == "invalid_event"


@FUZZ
@given(
    source_id=st.sampled_from(SOURCE_IDS),
    name=st.sampled_from(
        [
            "webhook-id",
            "webhook-timestamp",
            "webhook-signature",
            "X-Hub-Signature-256",
            "X-GitHub-Delivery",
            "X-Signature",
            "X-Timestamp",
            "Content-Type",
        ]
    ),
    value=header_values,
)
def test_one_header_replaced(
    app: Flask, client: FlaskClient, source_id: str, name: str, value: str
) -> None:
    """A valid request with one header swapped for anything: still never a 5xx."""
    body = json.dumps({"type": "message.created", "data": {"text": "hi"}}).encode()
    headers = signed(app, source_id, body)
    headers = {k: v for k, v in headers.items() if k.lower() != name.lower()}
    headers[name] = value
    check(client.post(f"/hooks/{source_id}", data=body, headers=headers))
