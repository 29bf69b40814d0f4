"""Redaction: what README promises ("every value pulled in with ``${...}``, URL passwords,
token-like query parameters are redacted from attempt records and logs"), and no more."""

from __future__ import annotations

import json

import pytest

from relay.config.loader import parse_config
from relay.redact import MASK, redact

TOKEN = "xoxb-17-s3cr3t-t0ken"


# -- configured secrets --------------------------------------------------------------------


def test_every_occurrence_of_a_configured_secret_is_masked() -> None:
    text = f"POST failed: token {TOKEN} refused; retry with {TOKEN}"
    assert redact(text, [TOKEN]) == f"POST failed: token {MASK} refused; retry with {MASK}"


def test_the_longer_of_two_overlapping_secrets_is_masked_whole() -> None:
    """Were the short one replaced first, the rest of the long one would show."""
    assert redact("key=abc-def-ghi;", ["abc", "abc-def-ghi"]) == f"key={MASK};"
    assert redact("key=abc-def-ghi;", ["abc-def-ghi", "abc"]) == f"key={MASK};"


def test_the_secrets_of_a_config_are_its_env_values() -> None:
    """Only what came in through ``${NAME}`` is a secret; the rest of the config is not."""
    config = parse_config(
        {
            "sources": [
                {"id": "ops", "kind": "standard_webhooks", "secrets": ["${OPS_SECRET}"]},
            ]
        },
        env={"OPS_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "UNUSED": "nothing"},
    )
    assert config.secrets == frozenset({"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"})
    text = "signature check with whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw for source ops"
    assert redact(text, config.secrets) == f"signature check with {MASK} for source ops"


@pytest.mark.parametrize("text", [None, ""])
def test_nothing_in_nothing_out(text: str | None) -> None:
    assert redact(text, [TOKEN]) == text


def test_an_empty_secret_masks_nothing() -> None:
    """An unset variable substitutes "": it must not put a mask between every character."""
    assert redact("plain text", ["", TOKEN]) == "plain text"


# -- URL passwords -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url, shown",
    [
        ("https://ann:hunter2@example.com/x", f"https://ann:{MASK}@example.com/x"),
        ("redis://:hunter2@10.0.0.5:6379/0", f"redis://:{MASK}@10.0.0.5:6379/0"),
        ("smtp://mail:pa:ss@smtp.example.com:587", f"smtp://mail:{MASK}@smtp.example.com:587"),
    ],
)
def test_a_url_password_is_masked_and_the_rest_kept(url: str, shown: str) -> None:
    assert redact(f"connect to {url} failed", []) == f"connect to {shown} failed"


# -- token-like query parameters -----------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "access_token",
        "token",
        "key",
        "sign",
        "secret",
        "signature",
        "password",
        "api_key",
        "apikey",
        "ACCESS_TOKEN",
        "Key",
    ],
)
def test_a_token_like_query_value_is_masked(name: str) -> None:
    url = f"https://oapi.example.com/robot/send?{name}=abc123&timestamp=1700000000#top"
    assert redact(url, []) == (
        f"https://oapi.example.com/robot/send?{name}={MASK}&timestamp=1700000000#top"
    )
    later = f"https://oapi.example.com/send?timestamp=1&{name}=abc123"
    assert redact(later, []) == f"https://oapi.example.com/send?timestamp=1&{name}={MASK}"


# -- inside JSON ---------------------------------------------------------------------------


def test_a_secret_echoed_in_a_json_answer_is_masked() -> None:
    answer = json.dumps({"errcode": 310000, "errmsg": f"token {TOKEN} is invalid"})
    assert json.loads(redact(answer, [TOKEN]) or "") == {
        "errcode": 310000,
        "errmsg": f"token {MASK} is invalid",
    }


@pytest.mark.parametrize("secret", ['pa"ss\\word', "pässwörd", "tab\there"])
@pytest.mark.parametrize("ensure_ascii", [True, False])
def test_a_secret_json_escapes_is_masked_in_its_escaped_form(
    secret: str, ensure_ascii: bool
) -> None:
    """A JSON answer spells ``"`` as ``\\"`` and may spell ``ä`` as ``\\u00e4``."""
    answer = json.dumps({"echo": secret}, ensure_ascii=ensure_ascii)
    assert json.loads(redact(answer, [secret]) or "") == {"echo": MASK}


@pytest.mark.parametrize("compact", [True, False])
def test_a_url_in_json_is_masked_without_eating_the_json_around_it(compact: bool) -> None:
    value = {
        "callback": "https://h.example.com/x?token=abc123",
        "proxy": "http://ann:hunter2@proxy.example.com",
        "n": 1,
    }
    separators = (",", ":") if compact else (", ", ": ")
    shown = redact(json.dumps(value, separators=separators), [])
    assert json.loads(shown or "") == {
        "callback": f"https://h.example.com/x?token={MASK}",
        "proxy": f"http://ann:{MASK}@proxy.example.com",
        "n": 1,
    }


def test_a_url_in_json_inside_json_is_masked_and_still_parses() -> None:
    """A target's answer quoted in an error message: the URL sits behind ``\\"``."""
    inner = json.dumps({"url": "https://ann:hunter2@h.example.com/?key=abc"})
    shown = redact(json.dumps({"error": inner}), []) or ""
    assert json.loads(json.loads(shown)["error"]) == {
        "url": f"https://ann:{MASK}@h.example.com/?key={MASK}"
    }


# -- nothing over-redacted -----------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "http://127.0.0.1:8080/in",
        "https://example.com/a/b?page=2&limit=50",
        "https://example.com/?tokens=5&keyword=cats&token_type=bearer&mykey=1",
        "mail ops@example.com about http://host:8080 later",
        '{"a":"http://host:8080","b":"ops@example.com"}',
        "the token is in the header; see key rotation",
        "ready: redis://127.0.0.1:6379/0",
    ],
)
def test_text_without_a_secret_is_left_exactly_as_it_was(text: str) -> None:
    assert redact(text, [TOKEN]) == text
