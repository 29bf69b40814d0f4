"""Property tests of intake: whatever arrives, the answer is never a 5xx and always JSON.

Arbitrary bytes, arbitrary JSON and arbitrary header values are posted to a
``standard_webhooks`` and an ``hmac`` source, both unsigned and correctly signed (so
the parser and the ``GroupEvent`` validation are reached too). The app is built once
per module on the suite's Redis, so Hypothesis examples do not rebuild it.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.events import EVENT_TYPES
from tests.conftest import TEST_SECRET
from tests.intake.sources.support import (
    FUZZ,
    LATIN1,
    any_json,
    drawn,
    fuzz_json,
    signed_sample,
    with_header,
)

SOURCES: list[dict[str, Any]] = [
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
SOURCE_IDS = ["sw", "gh", "stamped"]
HEADER_NAMES = {
    "sw": ["webhook-id", "webhook-timestamp", "webhook-signature"],
    "gh": ["X-Hub-Signature-256", "X-GitHub-Delivery"],
    "stamped": ["X-Signature", "X-Timestamp"],
}
FUZZ_MORE = settings(FUZZ, max_examples=200)
header_values = st.one_of(
    st.text(LATIN1, max_size=120),
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
json_values = any_json(text=30)
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


def check(response: Any) -> dict[str, Any]:
    """The property: below 500, JSON, and either an error or an event id."""
    return fuzz_json(response, "event_id")


def signed(app: Flask, source_id: str, body: bytes) -> dict[str, str]:
    """Signed as configured; ``sample`` draws a fresh webhook-id / delivery id each time."""
    return signed_sample(app, source_id, body)[0]


@FUZZ_MORE
@given(
    source_id=st.sampled_from(SOURCE_IDS),
    body=st.binary(max_size=2000),
    content_type=content_types,
    data=st.data(),
)
def test_unsigned_garbage(
    fuzz_client: FlaskClient,
    source_id: str,
    body: bytes,
    content_type: str,
    data: st.DataObject,
) -> None:
    headers = drawn(data, HEADER_NAMES[source_id], header_values, {"Content-Type": content_type})
    response = fuzz_client.post(f"/hooks/{source_id}", data=body, headers=headers)
    check(response)
    assert response.status_code >= 400


@FUZZ_MORE
@given(
    source_id=st.sampled_from(SOURCE_IDS), body=st.binary(max_size=2000), content_type=content_types
)
def test_signed_bytes(
    fuzz_app: Flask, fuzz_client: FlaskClient, source_id: str, body: bytes, content_type: str
) -> None:
    headers = signed(fuzz_app, source_id, body)
    headers["content-type"] = content_type
    check(fuzz_client.post(f"/hooks/{source_id}", data=body, headers=headers))


@FUZZ_MORE
@given(source_id=st.sampled_from(SOURCE_IDS), value=st.one_of(json_values, event_like))
def test_signed_json(fuzz_app: Flask, fuzz_client: FlaskClient, source_id: str, value: Any) -> None:
    body = json.dumps(value).encode()
    response = fuzz_client.post(
        f"/hooks/{source_id}", data=body, headers=signed(fuzz_app, source_id, body)
    )
    result = check(response)
    assert response.status_code in (202, 422), result
    if response.status_code == 422:
        assert result["error"] == "invalid_event"


@FUZZ_MORE
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
    fuzz_app: Flask, fuzz_client: FlaskClient, source_id: str, name: str, value: str
) -> None:
    """A valid request with one header swapped for anything: still never a 5xx."""
    body = json.dumps({"type": "message.created", "data": {"text": "hi"}}).encode()
    headers = with_header(signed(fuzz_app, source_id, body), name, value)
    check(fuzz_client.post(f"/hooks/{source_id}", data=body, headers=headers))
