"""Durations and sizes as the config file and ``RELAY_*`` variables write them.

README: "Durations accept 500ms, 30s, 15m, 24h, 7d; sizes 512KiB, 1MiB. A bad value stops
the process with the variable's name."
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from relay.config.units import Duration, Size, parse_duration, parse_size
from relay.settings import Settings, load_settings

# -- durations -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("500ms", 0.5),
        ("30s", 30.0),
        ("15m", 900.0),
        ("24h", 86400.0),
        ("7d", 604800.0),
        ("2w", 1209600.0),
        ("90", 90.0),  # no unit: seconds
        ("0", 0.0),
        (" 5 s ", 5.0),  # spaces around and between are forgiven
        ("1.5h", 5400.0),
        ("0.25s", 0.25),
    ],
)
def test_every_duration_unit(text: str, seconds: float) -> None:
    parsed = parse_duration(text)
    assert parsed == seconds and type(parsed) is float


@pytest.mark.parametrize(
    "text, seconds",
    [("9ms", 0.009), ("300ms", 0.3), ("1.1h", 3960.0), ("0.1d", 8640.0), ("0.7m", 42.0)],
)
def test_a_round_duration_stays_round(text: str, seconds: float) -> None:
    """What a log line or listing shows is what was written, not 0.009000000000000001."""
    assert parse_duration(text) == seconds
    assert repr(parse_duration(text)) == repr(seconds)


@pytest.mark.parametrize("value, seconds", [(45, 45.0), (0.05, 0.05), (0, 0.0)])
def test_a_number_is_seconds(value: float, seconds: float) -> None:
    parsed = parse_duration(value)
    assert parsed == seconds and type(parsed) is float


@pytest.mark.parametrize(
    "value",
    ["", "s", "5x", "5 sec", "5M", "5H", "5S", "1h30m", "-5s", "5.s", ".5s", "1e3s", "5 5s", None],
)
def test_a_bad_duration_is_named_with_examples(value: Any) -> None:
    with pytest.raises(ValueError) as caught:
        parse_duration(value)
    assert str(caught.value) == f"{value!r} is not a duration such as 30s, 15m, 24h or 7d"


@pytest.mark.parametrize("value", [True, False])
def test_a_bool_is_not_a_duration(value: bool) -> None:
    """YAML turns ``yes``/``no`` into booleans; they must not become 1 or 0 seconds."""
    with pytest.raises(ValueError, match="^expected a duration such as 30s, 15m, 24h or 7d$"):
        parse_duration(value)


@pytest.mark.parametrize("value", [-1, -0.5])
def test_a_negative_duration_is_refused(value: float) -> None:
    with pytest.raises(ValueError, match="^a duration cannot be negative$"):
        parse_duration(value)


# -- sizes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, size",
    [
        ("1", 1),
        ("100b", 100),
        ("2k", 2048),
        ("2kb", 2000),
        ("512KiB", 512 * 1024),
        ("3m", 3 * 1024**2),
        ("3MB", 3_000_000),
        ("1MiB", 1024**2),
        ("2g", 2 * 1024**3),
        ("2GB", 2_000_000_000),
        ("1GiB", 1024**3),
        (" 64 kib ", 65536),  # units in any case, spaces forgiven
    ],
)
def test_every_size_unit(text: str, size: int) -> None:
    parsed = parse_size(text)
    assert parsed == size and type(parsed) is int


def test_a_number_is_bytes() -> None:
    assert parse_size(1048576) == 1048576


@pytest.mark.parametrize(
    "value", ["", "MiB", "1.5MiB", "1 TiB", "1MiBs", "-1KiB", "1e6", 1.5, None]
)
def test_a_bad_size_is_named_with_examples(value: Any) -> None:
    """Sizes are whole bytes: a fraction or a float is refused rather than rounded."""
    with pytest.raises(ValueError) as caught:
        parse_size(value)
    assert str(caught.value) == f"{value!r} is not a size such as 1048576, 512KiB or 1MiB"


@pytest.mark.parametrize("value", [True, False])
def test_a_bool_is_not_a_size(value: bool) -> None:
    with pytest.raises(ValueError, match="^expected a size such as 1048576 or 1MiB$"):
        parse_size(value)


@pytest.mark.parametrize("value", [0, -1, "0", "0MiB"])
def test_a_size_must_be_positive(value: Any) -> None:
    with pytest.raises(ValueError, match="^a size must be positive$"):
        parse_size(value)


# -- as pydantic fields --------------------------------------------------------------------


class Limits(BaseModel):
    timeout: Duration
    body: Size
    grace: Duration | None = None


def test_fields_parse_what_config_writes() -> None:
    limits = Limits.model_validate({"timeout": "1.5s", "body": "512KiB", "grace": "2m"})
    assert limits == Limits(timeout=1.5, body=524288, grace=120.0)
    assert Limits.model_validate({"timeout": 3, "body": 10}).grace is None


def test_a_field_error_names_the_field_and_the_examples() -> None:
    with pytest.raises(ValidationError) as caught:
        Limits.model_validate({"timeout": "soon", "body": "big"})
    errors = {e["loc"]: e["msg"] for e in caught.value.errors()}
    assert errors == {
        ("timeout",): "Value error, 'soon' is not a duration such as 30s, 15m, 24h or 7d",
        ("body",): "Value error, 'big' is not a size such as 1048576, 512KiB or 1MiB",
    }


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No ``RELAY_*`` from the shell running the suite."""
    for name in [n for n in os.environ if n.startswith("RELAY_")]:
        monkeypatch.delenv(name)
    return monkeypatch


def test_settings_read_units_from_the_environment(clean_env: pytest.MonkeyPatch) -> None:
    monkeypatch = clean_env
    monkeypatch.setenv("RELAY_MAX_BODY", "512KiB")
    monkeypatch.setenv("RELAY_RETENTION", "36h")
    monkeypatch.setenv("RELAY_HTTP_TIMEOUT", "2500ms")
    settings = Settings()
    assert settings.max_body == 524288
    assert settings.retention == 129600.0
    assert settings.http_timeout == 2.5


def test_a_bad_variable_stops_the_process_with_its_name(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clean_env.setenv("RELAY_MAX_BODY", "1.5MiB")
    with pytest.raises(SystemExit) as caught:
        load_settings()
    assert caught.value.code == 2
    assert capsys.readouterr().err == (
        "RELAY_MAX_BODY: '1.5MiB' is not a size such as 1048576, 512KiB or 1MiB\n"
    )
