"""``hmac`` source: the GitHub vector, algorithms, encodings, timestamps, dedupe, config errors.

Signatures here are computed with ``hmac``/``hashlib`` directly, not with the source's
own helpers, so a mistake in the module cannot cancel itself out in its tests.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from relay.config.loader import parse_config
from relay.errors import ConfigError, Unauthorized
from relay.intake.sources.hmac import HmacSource
from relay.state import keys
from tests.conftest import ROOT
from tests.intake.sources.support import (
    Mutation,
    assert_refused,
    build_source,
    flip,
    inbound,
    post,
    tamper,
)

GH_SECRET = "It's a Secret to Everybody"
GH_BODY = b"Hello, World!"
GH_SIG = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
EVENT = {"type": "message.created", "data": {"group": {"id": "g1"}, "text": "hi"}}
BODY = json.dumps(EVENT).encode()

SOURCES: list[dict[str, Any]] = [
    {"id": "gh", "kind": "hmac", "preset": "github", "secrets": [GH_SECRET]},
    {
        "id": "sha1",
        "kind": "hmac",
        "header": "X-Hub-Signature",
        "algorithm": "sha1",
        "prefix": "sha1=",
        "secrets": ["s1"],
        "delivery_id_header": "X-Delivery",
    },
    {
        "id": "b64",
        "kind": "hmac",
        "header": "X-Signature",
        "algorithm": "sha512",
        "encoding": "base64",
        "secrets": ["old-secret", "new-secret"],
    },
    {
        "id": "stamped",
        "kind": "hmac",
        "header": "X-Signature",
        "prefix": "v0=",
        "timestamp_header": "X-Timestamp",
        "signed_payload": "v0:{timestamp}:{body}",
        "tolerance": "1m",
        "secrets": ["s3"],
        "delivery_id_header": "X-Request-Id",
    },
]


def sign(
    source_id: str,
    body: bytes = BODY,
    *,
    secret: str | None = None,
    ts: str | None = None,
    delivery: str | None = "d-1",
) -> dict[str, str]:
    """Headers each configured sender would send, computed independently of the module."""
    headers = {"Content-Type": "application/json"}
    if source_id == "gh":
        digest = hmac.new((secret or GH_SECRET).encode(), body, hashlib.sha256).hexdigest()
        headers["X-Hub-Signature-256"] = "sha256=" + digest
        if delivery:
            headers["X-GitHub-Delivery"] = delivery
    elif source_id == "sha1":
        digest = hmac.new((secret or "s1").encode(), body, hashlib.sha1).hexdigest()
        headers["X-Hub-Signature"] = "sha1=" + digest
        if delivery:
            headers["X-Delivery"] = delivery
    elif source_id == "b64":
        raw = hmac.new((secret or "new-secret").encode(), body, hashlib.sha512).digest()
        headers["X-Signature"] = base64.b64encode(raw).decode()
    else:
        stamp = ts or str(int(time.time()))
        signed = b"v0:" + stamp.encode() + b":" + body
        headers["X-Timestamp"] = stamp
        headers["X-Signature"] = (
            "v0=" + hmac.new((secret or "s3").encode(), signed, hashlib.sha256).hexdigest()
        )
        if delivery:
            headers["X-Request-Id"] = delivery
    return headers


def source(**options: Any) -> HmacSource:
    return build_source(HmacSource, {"id": "h", "kind": "hmac", "secrets": ["k"], **options})


# -- the GitHub vector and the preset ------------------------------------------------------


def test_github_vector_independently() -> None:
    digest = hmac.new(GH_SECRET.encode(), GH_BODY, hashlib.sha256).hexdigest()
    assert "sha256=" + digest == GH_SIG


def test_github_vector_through_preset() -> None:
    gh = source(preset="github", secrets=[GH_SECRET])
    gh.verify(inbound({"X-Hub-Signature-256": GH_SIG}, GH_BODY))
    with pytest.raises(Unauthorized):
        gh.verify(inbound({"X-Hub-Signature-256": GH_SIG}, GH_BODY + b"\n"))
    assert gh.sample(GH_BODY).headers["X-Hub-Signature-256"] == GH_SIG


def test_github_vector_over_http(client: FlaskClient, redis_client: redis.Redis) -> None:
    """The body is not JSON, so a verified request stops at the parser (400), not 401."""
    headers = {
        "X-Hub-Signature-256": GH_SIG,
        "X-GitHub-Delivery": "d",
        "Content-Type": "application/json",
    }
    assert_refused(post(client, "gh", GH_BODY, headers), 400, "invalid_json", redis_client)
    headers["Content-Type"] = "text/plain"
    assert_refused(post(client, "gh", GH_BODY, headers), 415, None, redis_client)


def test_preset_fills_and_explicit_keys_win() -> None:
    opts = source(preset="github").options
    assert (opts.header, opts.algorithm, opts.encoding, opts.prefix, opts.delivery_id_header) == (
        "X-Hub-Signature-256",
        "sha256",
        "hex",
        "sha256=",
        "X-GitHub-Delivery",
    )
    legacy = source(preset="github", header="X-Hub-Signature", algorithm="sha1", prefix="sha1=")
    assert legacy.options.header == "X-Hub-Signature" and legacy.options.algorithm == "sha1"
    assert legacy.options.delivery_id_header == "X-GitHub-Delivery"
    body = b'{"zen": "x"}'
    legacy.verify(
        inbound({"X-Hub-Signature": "sha1=" + hmac.new(b"k", body, "sha1").hexdigest()}, body)
    )


# -- algorithms, encodings, prefixes, rotation -----------------------------------------------


@pytest.mark.parametrize("source_id", [s["id"] for s in SOURCES])
def test_valid_request_is_queued(
    client: FlaskClient, redis_client: redis.Redis, source_id: str
) -> None:
    response = post(client, source_id, BODY, sign(source_id))
    assert response.status_code == 202, response.get_json()
    assert response.get_json()["event_id"].startswith("evt_")
    assert redis_client.llen(keys.FANOUT_QUEUE) == 1


@pytest.mark.parametrize("source_id", [s["id"] for s in SOURCES])
def test_sample_is_accepted(app: Flask, client: FlaskClient, source_id: str) -> None:
    sample = app.extensions["relay"].sources[source_id].sample()
    assert post(client, source_id, sample.body, sample.headers).status_code == 202


@pytest.mark.parametrize("secret", ["old-secret", "new-secret"])
def test_rotation(client: FlaskClient, secret: str) -> None:
    assert post(client, "b64", BODY, sign("b64", secret=secret)).status_code == 202


@pytest.mark.parametrize(
    ("algorithm", "encoding", "prefix"),
    [
        ("sha1", "hex", ""),
        ("sha256", "base64", "sha256="),
        ("sha512", "hex", "sha512="),
        ("sha512", "base64", ""),
        ("sha256", "hex", "v1,"),
    ],
)
def test_algorithm_encoding_prefix(algorithm: str, encoding: str, prefix: str) -> None:
    src = source(header="X-Sig", algorithm=algorithm, encoding=encoding, prefix=prefix)
    raw = hmac.new(b"k", BODY, algorithm).digest()
    value = prefix + (raw.hex() if encoding == "hex" else base64.b64encode(raw).decode())
    src.verify(inbound({"X-Sig": value}, BODY))
    assert src.sample(BODY).headers["X-Sig"] == value
    if encoding == "hex":
        src.verify(inbound({"X-Sig": prefix + raw.hex().upper()}, BODY))
    other = hashlib.sha1 if algorithm != "sha1" else hashlib.sha256
    wrong = hmac.new(b"k", BODY, other).digest()
    wrong_value = prefix + (wrong.hex() if encoding == "hex" else base64.b64encode(wrong).decode())
    with pytest.raises(Unauthorized) as caught:
        src.verify(inbound({"X-Sig": wrong_value}, BODY))
    assert caught.value.code == "malformed_signature"  # a digest of the wrong length


# -- timestamps and signed_payload templates -------------------------------------------------


@pytest.mark.parametrize(
    ("template", "make"),
    [
        ("{timestamp}.{body}", lambda t, b: t + b"." + b),
        ("v0:{timestamp}:{body}", lambda t, b: b"v0:" + t + b":" + b),
        ("{body}{timestamp}", lambda t, b: b + t),
        ("{{x}}{timestamp}\n{body}", lambda t, b: b"{x}" + t + b"\n" + b),
    ],
)
def test_signed_payload_templates(template: str, make: Callable[[bytes, bytes], bytes]) -> None:
    src = source(header="X-Sig", timestamp_header="X-Ts", signed_payload=template)
    stamp = str(int(time.time()))
    value = hmac.new(b"k", make(stamp.encode(), BODY), "sha256").hexdigest()
    src.verify(inbound({"X-Sig": value, "X-Ts": stamp}, BODY))
    sample = src.sample(BODY)
    src.verify(inbound(sample.headers, sample.body))


@pytest.mark.parametrize("offset", [0, -50, 50])
def test_timestamp_within_tolerance(client: FlaskClient, offset: int) -> None:
    stamp = str(int(time.time()) + offset)
    assert post(client, "stamped", BODY, sign("stamped", ts=stamp)).status_code == 202


def test_timestamp_in_milliseconds(client: FlaskClient) -> None:
    stamp = str(int(time.time() * 1000))
    assert len(stamp) == 13
    assert post(client, "stamped", BODY, sign("stamped", ts=stamp)).status_code == 202


def test_tolerance_pinned(monkeypatch: pytest.MonkeyPatch) -> None:
    import relay.intake.sources.hmac as module

    src = source(
        header="X-Sig", timestamp_header="X-Ts", signed_payload="{timestamp}.{body}", tolerance="5m"
    )
    value = hmac.new(b"k", b"1000000000." + BODY, "sha256").hexdigest()
    request = inbound({"X-Sig": value, "X-Ts": "1000000000"}, BODY)
    for now in (1000000000 - 300, 1000000000 + 300):
        monkeypatch.setattr(module.time, "time", lambda now=now: now)
        src.verify(request)
    for now in (1000000000 - 301, 1000000000 + 301):
        monkeypatch.setattr(module.time, "time", lambda now=now: now)
        with pytest.raises(Unauthorized) as caught:
            src.verify(request)
        assert caught.value.code == "stale_timestamp"


# -- the bad-input matrix ----------------------------------------------------------------------


def _flip_hex(value: str) -> str:
    prefix, digest = value[:-64], bytearray(bytes.fromhex(value[-64:]))
    digest[7] ^= 0x10
    return prefix + digest.hex()


def _case(header: str, change: Any = None, body: Any = None) -> Mutation:
    """``header`` changed (``None`` drops it), and the body too where ``body`` maps it."""
    return tamper(**{header: change}, body=body)


SIG, TS = "X-Signature", "X-Timestamp"
NOW = int(time.time())
MATRIX: dict[str, tuple[Mutation, int, str | None]] = {
    "body bit flip": (
        _case(SIG, lambda v: v, body=lambda b: flip(b, 2)),
        401,
        "invalid_signature",
    ),
    "body truncated": (_case(SIG, lambda v: v, body=lambda b: b[:-1]), 401, "invalid_signature"),
    "signature bit flip": (_case(SIG, _flip_hex), 401, "invalid_signature"),
    "timestamp changed": (_case(TS, lambda t: str(int(t) + 1)), 401, "invalid_signature"),
    "stale timestamp": (_case(TS, str(NOW - 600)), 401, "stale_timestamp"),
    "future timestamp": (
        _case(TS, str(NOW + 3 * 3600)),
        401,
        "stale_timestamp",
    ),  # stays future in a long run
    "stale ms timestamp": (_case(TS, str((NOW - 600) * 1000)), 401, "stale_timestamp"),
    "timestamp 14 digits": (_case(TS, "1" * 14), 401, "invalid_timestamp"),
    "timestamp words": (_case(TS, "now"), 401, "invalid_timestamp"),
    "timestamp negative": (_case(TS, "-1"), 401, "invalid_timestamp"),
    "timestamp float": (_case(TS, f"{NOW}.5"), 401, "invalid_timestamp"),
    "timestamp superscript": (_case(TS, lambda t: t[:-1] + "²"), 401, "invalid_timestamp"),
    "missing timestamp": (_case(TS, None), 401, "missing_timestamp"),
    "missing signature": (_case(SIG, None), 401, "missing_signature"),
    "empty signature": (_case(SIG, ""), 401, "missing_signature"),
    "blank signature": (_case(SIG, "   "), 401, "missing_signature"),
    "prefix only": (_case(SIG, "v0="), 401, "malformed_signature"),
    "wrong prefix": (_case(SIG, lambda v: "v1=" + v[3:]), 401, "malformed_signature"),
    "no prefix": (_case(SIG, lambda v: v[3:]), 401, "malformed_signature"),
    "prefix case": (_case(SIG, lambda v: "V0=" + v[3:]), 401, "malformed_signature"),
    "not hex": (_case(SIG, lambda v: v[:-2] + "zz"), 401, "malformed_signature"),
    "odd length hex": (_case(SIG, lambda v: v[:-1]), 401, "malformed_signature"),
    "short digest": (_case(SIG, lambda v: v[:-2]), 401, "malformed_signature"),
    "long digest": (_case(SIG, lambda v: v + "00"), 401, "malformed_signature"),
    "space inside hex": (_case(SIG, lambda v: v[:10] + " " + v[10:]), 401, "malformed_signature"),
    "base64 instead of hex": (
        _case(SIG, lambda v: "v0=" + base64.b64encode(bytes.fromhex(v[3:])).decode()),
        401,
        "malformed_signature",
    ),
    "very long": (_case(SIG, "v0=" + "a" * 10000), 401, "malformed_signature"),
    "latin-1": (_case(SIG, lambda v: v[:-1] + "é"), 401, "malformed_signature"),
    "unicode": (_case(SIG, "v0=✓☃"), 401, "malformed_signature"),
    "duplicate signature": (_case(SIG, lambda v: [v, v]), 401, "malformed_signature"),
    "duplicate timestamp": (_case(TS, lambda v: [v, v]), 401, "invalid_timestamp"),
}


@pytest.mark.parametrize("name", list(MATRIX))
def test_bad_input_matrix(client: FlaskClient, redis_client: redis.Redis, name: str) -> None:
    mutate, status, code = MATRIX[name]
    headers, body = mutate(sign("stamped", delivery="d-matrix"), BODY)
    assert_refused(post(client, "stamped", body, headers), status, code, redis_client)
    assert not redis_client.exists(keys.dedupe("stamped", "d-matrix"))


@pytest.mark.parametrize(
    "value",
    [
        "",
        "sha256",
        "sha256=",
        "sha1=" + "0" * 40,
        "sha256=" + "0" * 64,
        "sha256=" + "g" * 64,
        "sha256=" + "0" * 63,
        "sha512=" + "0" * 128,
        "SHA256=" + "0" * 64,
        "sha256==",
        "🙂",
    ],
)
def test_github_malformed_signatures(
    client: FlaskClient, redis_client: redis.Redis, value: str
) -> None:
    headers = sign("gh")
    headers["X-Hub-Signature-256"] = value
    assert_refused(post(client, "gh", BODY, headers), 401, None, redis_client)


@pytest.mark.parametrize("value", ["!!!!", "abc", "=" * 88, "A" * 87, "A" * 86 + "=="])
def test_base64_malformed_signatures(
    client: FlaskClient, redis_client: redis.Redis, value: str
) -> None:
    headers = sign("b64")
    headers["X-Signature"] = value
    assert_refused(post(client, "b64", BODY, headers), 401, None, redis_client)


# -- dedupe ----------------------------------------------------------------------------------


def test_delivery_id_dedupe(client: FlaskClient, redis_client: redis.Redis) -> None:
    first = post(client, "gh", BODY, sign("gh", delivery="72d3162e"))
    assert first.status_code == 202
    original = first.get_json()["event_id"]
    for _ in range(4):
        again = post(client, "gh", BODY, sign("gh", delivery="72d3162e"))
        assert again.status_code == 200
        assert again.get_json() == {"event_id": original, "duplicate": True}
    assert redis_client.llen(keys.FANOUT_QUEUE) == 1
    assert redis_client.ttl(keys.dedupe("gh", "72d3162e")) > 3 * 86400 - 60


def test_delivery_id_dedupe_concurrently(app: Flask, redis_client: redis.Redis) -> None:
    barrier = threading.Barrier(5)

    def send(_: int) -> tuple[int, dict[str, Any]]:
        client = app.test_client()
        barrier.wait()
        response = post(client, "stamped", BODY, sign("stamped", delivery="race"))
        return response.status_code, response.get_json()

    with ThreadPoolExecutor(5) as pool:
        results = list(pool.map(send, range(5)))
    assert sorted(status for status, _ in results) == [200, 200, 200, 200, 202]
    assert len({body["event_id"] for _, body in results}) == 1
    assert redis_client.llen(keys.FANOUT_QUEUE) == 1


def test_missing_delivery_id_is_refused(client: FlaskClient, redis_client: redis.Redis) -> None:
    response = post(client, "gh", BODY, sign("gh", delivery=None))
    assert_refused(response, 400, "missing_delivery_id", redis_client)
    response = post(client, "gh", BODY, sign("gh", delivery="x" * 300))
    assert_refused(response, 400, "invalid_delivery_id", redis_client)


def test_without_delivery_id_header_every_post_is_new(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    headers = sign("b64")
    first = post(client, "b64", BODY, headers)
    second = post(client, "b64", BODY, headers)
    assert first.status_code == second.status_code == 202
    assert first.get_json()["event_id"] != second.get_json()["event_id"]
    assert redis_client.llen(keys.FANOUT_QUEUE) == 2
    assert not redis_client.keys(keys.dedupe("b64", "*"))


# -- config errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"header": "X"}, "sources[0].secrets: required key is missing"),
        ({"header": "X", "secrets": []}, "sources[0].secrets: at least one secret is required"),
        ({"header": "X", "secrets": [""]}, "sources[0].secrets: secrets[0] is empty"),
        ({"secrets": ["k"]}, "sources[0].header: required key is missing"),
        ({"header": "X", "secrets": ["k"], "algorithm": "md5"}, "sources[0].algorithm: "),
        ({"header": "X", "secrets": ["k"], "encoding": "base32"}, "sources[0].encoding: "),
        ({"preset": "gitlab", "secrets": ["k"]}, "sources[0].preset: "),
        ({"header": "X Sig", "secrets": ["k"]}, "sources[0].header: 'X Sig' is not an HTTP header"),
        ({"header": "X", "secrets": ["k"], "tolerance": "soon"}, "sources[0].tolerance: 'soon'"),
        ({"header": "X", "secrets": ["k"], "tolerance": 0}, "sources[0].tolerance: "),
        (
            {"header": "X", "secrets": ["k"], "signed_payload": "{timestamp}.{body}"},
            "sources[0].signed_payload: the template uses {timestamp}; set timestamp_header",
        ),
        (
            {"header": "X", "secrets": ["k"], "timestamp_header": "X-T"},
            "sources[0].signed_payload: timestamp_header is set but the template lacks {timestamp}",
        ),
        (
            {"header": "X", "secrets": ["k"], "signed_payload": "{id}.{body}"},
            "sources[0].signed_payload: unknown placeholder {id}",
        ),
        (
            {"header": "X", "secrets": ["k"], "signed_payload": "{timestamp}"},
            "sources[0].signed_payload: the template must contain {body}",
        ),
        (
            {"header": "X", "secrets": ["k"], "signed_payload": "{body"},
            "sources[0].signed_payload: invalid template",
        ),
        (
            {"header": "X", "secrets": ["k"], "delivery_id_header": "a:b"},
            "sources[0].delivery_id_header: 'a:b' is not an HTTP header name",
        ),
        ({"header": "X", "secrets": ["k"], "colour": "red"}, "sources[0].colour: unknown key"),
    ],
)
def test_config_errors(options: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"sources": [{"id": "h", "kind": "hmac", **options}]})
    assert any(p.startswith(problem) for p in caught.value.problems), caught.value.problems


def test_config_from_environment() -> None:
    config = parse_config(
        {
            "sources": [
                {
                    "id": "gh",
                    "kind": "hmac",
                    "preset": "github",
                    "secrets": ["${GH_SECRET}", "${GH_OLD}"],
                }
            ]
        },
        env={"GH_SECRET": GH_SECRET, "GH_OLD": "previous"},
    )
    assert config.sources["gh"].options.secrets == [GH_SECRET, "previous"]


# -- no == on signatures -------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "relay/intake/sources/hmac.py",
        "relay/intake/sources/standard_webhooks.py",
        "relay/signing.py",
    ],
)
def test_signatures_never_compared_with_eq(path: str) -> None:
    """Scenario 16: only ``hmac.compare_digest`` may compare a signature or digest."""
    suspicious = ("sig", "digest", "mac", "expected", "candidate", "received")
    for node in ast.walk(ast.parse((ROOT / path).read_text())):
        if isinstance(node, ast.Compare) and any(
            isinstance(op, ast.Eq | ast.NotEq | ast.Is | ast.In) for op in node.ops
        ):
            names = {n.id.lower() for n in ast.walk(node) if isinstance(n, ast.Name)}
            names |= {n.attr.lower() for n in ast.walk(node) if isinstance(n, ast.Attribute)}
            if "len" in names:  # comparing lengths, not contents
                continue
            hits = {n for n in names if any(s in n for s in suspicious)}
            assert not hits, f"{path}:{node.lineno} compares {hits}"
