"""The ``acme`` source kind, tested the way the relay uses it: ``verify`` and ``parse`` on
an ``InboundRequest`` built from raw bytes, its options through the relay's own config
loader, and the entry point declared in ``pyproject.toml``.

No Redis is needed here; the relay's own suite installs this package and relays an event
through the real receiver and a worker (``tests/plugins`` in group-relay).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import tomllib
from importlib import import_module
from pathlib import Path
from typing import Any

import pytest
from relay.config.loader import parse_config
from relay.config.models import SourceConfig
from relay.errors import BadRequest, ConfigError, IntakeError, Unauthorized
from relay.intake.sources.base import InboundRequest, Source

from group_relay_acme.source import AcmeOptions, AcmeSource

SECRET = "acme-signing-secret-for-tests"
OLD_SECRET = "acme-signing-secret-before-rotation"
PACKAGE = Path(__file__).resolve().parent.parent
EVENT: dict[str, Any] = {
    "id": "ev_0001",
    "type": "message.posted",
    "created_at": 1767225600,
    "room": {"id": "room-ops", "name": "Ops"},
    "user": {"id": "u-ada", "name": "Ada"},
    "message": {
        "id": "m-1",
        "text": "deploy done, @relay-bot",
        "mentions": [{"id": "u-bot", "name": "relay-bot"}],
        "thread_id": "m-0",
    },
}


def make_source(*secrets: str, **options: Any) -> AcmeSource:
    opts = AcmeOptions(signing_secrets=list(secrets or (SECRET,)), **options)
    return AcmeSource(SourceConfig(id="acme-ops", kind="acme", options=opts))


def acme_sign(secret: str, timestamp: str, body: bytes) -> str:
    """Acme's documented scheme, written out here rather than taken from the module."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def request(
    body: Any = EVENT,
    *,
    secret: str = SECRET,
    stamp: str | None = None,
    headers: dict[str, str] | None = None,
    content_type: str = "application/json",
) -> InboundRequest:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    stamp = str(int(time.time())) if stamp is None else stamp
    sent = {
        "content-type": content_type,
        "acme-timestamp": stamp,
        "acme-signature": acme_sign(secret, stamp, raw),
        **(headers or {}),
    }
    return InboundRequest(
        method="POST", headers={k.lower(): (v,) for k, v in sent.items() if v}, body=raw
    )


def refused(source: AcmeSource, inbound: InboundRequest) -> IntakeError:
    with pytest.raises(IntakeError) as caught:
        source.verify(inbound)
        source.parse(inbound)
    return caught.value


# --- verification ---------------------------------------------------------------------------


def test_a_known_signature_verifies() -> None:
    """A fixed vector, so a change of the scheme on either side shows."""
    body = b'{"id":"ev_1","type":"message.posted"}'
    stamp = "1767225600"
    assert acme_sign("k", stamp, body) == (
        "sha256=" + hmac.new(b"k", b"1767225600." + body, hashlib.sha256).hexdigest()
    )
    source = make_source("k", tolerance=10 * 365 * 86400)
    source.verify(request(body, secret="k", stamp=stamp))


def test_any_configured_secret_verifies_while_rotating() -> None:
    source = make_source(SECRET, OLD_SECRET)
    source.verify(request(secret=SECRET))
    source.verify(request(secret=OLD_SECRET))
    assert refused(source, request(secret="another")).code == "invalid_signature"


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({"acme-signature": ""}, "missing_signature"),
        ({"acme-timestamp": ""}, "missing_timestamp"),
        ({"acme-timestamp": "12e3"}, "invalid_timestamp"),
        ({"acme-signature": "sha1=abcd"}, "malformed_signature"),
        ({"acme-signature": "sha256=" + "0" * 64}, "invalid_signature"),
    ],
)
def test_a_bad_signature_is_a_401_naming_why(headers: dict[str, str], code: str) -> None:
    inbound = request()
    merged = {**{k: v[0] for k, v in inbound.headers.items()}, **headers}
    tampered = InboundRequest(
        method="POST", headers={k: (v,) for k, v in merged.items() if v}, body=inbound.body
    )
    error = refused(make_source(), tampered)
    assert isinstance(error, Unauthorized) and error.status == 401
    assert error.code == code


def test_a_changed_body_does_not_verify() -> None:
    inbound = request()
    forged = InboundRequest(method="POST", headers=inbound.headers, body=inbound.body + b" ")
    assert refused(make_source(), forged).code == "invalid_signature"


def test_outside_the_window_is_refused_either_way() -> None:
    source = make_source(tolerance="60s")
    now = int(time.time())
    source.verify(request(stamp=str(now - 50)))
    assert refused(source, request(stamp=str(now - 120))).code == "stale_timestamp"
    error = refused(source, request(stamp=str(now + 120)))
    assert error.code == "stale_timestamp" and "ahead" in error.detail


def test_a_header_sent_twice_is_a_400() -> None:
    inbound = request()
    doubled = {**inbound.headers, "acme-signature": ("sha256=a", "sha256=b")}
    error = refused(make_source(), InboundRequest("POST", doubled, inbound.body))
    assert isinstance(error, BadRequest) and error.code == "duplicate_header"


# --- parsing --------------------------------------------------------------------------------


def test_a_message_becomes_a_group_event_keyed_by_acme_id() -> None:
    source = make_source(bot_user_id="u-bot")
    parsed = source.parse(request())
    event = parsed.event
    assert parsed.dedupe_key == "ev_0001"
    assert event.source == "acme-ops" and event.type == "message.created"
    assert event.group is not None and (event.group.id, event.group.name) == ("room-ops", "Ops")
    assert event.sender is not None and event.sender.id == "u-ada"
    assert event.text == "deploy done, @relay-bot"
    assert [m.id for m in event.mentions] == ["u-bot"] and event.mentions_bot
    assert (event.message_id, event.in_reply_to) == ("m-1", "m-0")
    assert event.occurred_at.timestamp() == 1767225600
    assert event.raw == EVENT


def test_without_a_bot_id_no_mention_is_the_bot() -> None:
    assert not make_source().parse(request()).event.mentions_bot


@pytest.mark.parametrize(
    ("acme_type", "relay_type"),
    [
        ("room.member_added", "member.joined"),
        ("room.member_removed", "member.left"),
        ("room.renamed", "group.updated"),
        ("reaction.added", "custom"),
    ],
)
def test_event_types_map_and_unknown_ones_stay_custom(acme_type: str, relay_type: str) -> None:
    event = make_source().parse(request({**EVENT, "type": acme_type})).event
    assert event.type == relay_type and event.raw["type"] == acme_type


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        ({**EVENT, "id": ""}, "application/json", 400, "missing_event_id"),
        ({**EVENT, "id": "x" * 257}, "application/json", 400, "invalid_event_id"),
        ([EVENT], "application/json", 400, "invalid_payload"),
        (b"{not json", "application/json", 400, "invalid_json"),
        (EVENT, "text/plain", 415, "unsupported_media_type"),
        ({**EVENT, "room": {"id": ""}}, "application/json", 422, "invalid_event"),
    ],
)
def test_a_body_that_is_not_an_acme_event_is_refused(
    body: Any, content_type: str, status: int, code: str
) -> None:
    source = make_source()
    error = refused(source, request(body, content_type=content_type))
    assert (error.status, error.code) == (status, code)
    assert source.refusal_headers(error) == {"Acme-No-Retry": "1"}


def test_a_422_names_the_field() -> None:
    error = refused(make_source(), request({**EVENT, "room": {"id": ""}}))
    assert error.detail.startswith("group.id: ")


# --- handshake, answers, samples ------------------------------------------------------------


def test_the_url_check_is_answered_once_verified() -> None:
    source = make_source()
    check = {"type": "endpoint.verification", "challenge": "c-123"}
    reply = source.handshake(request(check))
    assert reply is not None and reply.status == 200
    assert json.loads(reply.body) == {"challenge": "c-123"}
    with pytest.raises(Unauthorized):
        source.handshake(request(check, secret="forged"))
    with pytest.raises(BadRequest):
        source.handshake(request({"type": "endpoint.verification"}))
    assert source.handshake(request()) is None  # an event is not a handshake


def test_every_accepted_event_is_answered_200() -> None:
    source = make_source()
    inbound = request()
    first = source.reply(inbound, "evt_1", duplicate=False)
    again = source.reply(inbound, "evt_1", duplicate=True)
    assert (first.status, json.loads(first.body)) == (200, {"ok": True, "event_id": "evt_1"})
    assert json.loads(again.body) == {"ok": True, "event_id": "evt_1", "duplicate": True}


def test_a_refused_signature_is_left_to_acme_retries() -> None:
    assert make_source().refusal_headers(Unauthorized("no")) == {}


def test_the_sample_is_signed_as_acme_signs() -> None:
    source = make_source(SECRET, OLD_SECRET)
    signed = source.sample()
    inbound = InboundRequest(
        "POST", {k.lower(): (v,) for k, v in signed.headers.items()}, signed.body
    )
    stamp = signed.headers["Acme-Timestamp"]
    assert signed.headers["Acme-Signature"] == acme_sign(SECRET, stamp, signed.body)
    source.verify(inbound)
    assert source.parse(inbound).event.type == "message.created"


# --- options and registration ----------------------------------------------------------------


def test_options_are_checked_by_the_relay_loader_naming_the_key() -> None:
    def load(source: dict[str, Any]) -> Any:
        data = {"sources": [{"id": "acme-ops", "kind": "acme", **source}]}
        return parse_config(data, env={}, source_options={"acme": AcmeOptions})

    config = load({"signing_secrets": [SECRET], "tolerance": "2m"})
    assert config.sources["acme-ops"].options.tolerance == 120
    with pytest.raises(ConfigError) as caught:
        load({"signing_secrets": [SECRET], "tolerence": "2m"})
    assert caught.value.problems == [
        "sources[0].tolerence: unknown key (did you mean 'tolerance'?)"
    ]
    with pytest.raises(ConfigError) as caught:
        load({"signing_secrets": [SECRET, ""]})
    assert caught.value.problems[0].startswith("sources[0].signing_secrets: ")
    assert "signing_secrets[1] is empty" in caught.value.problems[0]
    with pytest.raises(ConfigError) as caught:
        load({"signing_secrets": SECRET})  # a string, not a list: the error must not echo it
    assert SECRET not in str(caught.value.problems)


def test_the_secret_is_not_in_the_options_repr() -> None:
    assert SECRET not in repr(make_source().options)


def test_the_entry_point_names_this_class() -> None:
    project = tomllib.loads((PACKAGE / "pyproject.toml").read_text())
    entry = project["project"]["entry-points"]["group_relay.sources"]["acme"]
    module, _, name = entry.partition(":")
    cls = getattr(import_module(module), name)
    assert cls is AcmeSource and cls.kind == "acme"
    source: Source = make_source()  # mypy checks the class against the Source protocol
    assert source.default_dedupe_ttl >= 86400  # at least Acme's 24 h of retries
