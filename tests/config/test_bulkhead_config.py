"""``targets[].max_in_flight`` and ``targets[].circuit.slow_call``: defaults, ``off``, and
problems named by key, value and what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.config.loader import load_config
from relay.config.models import DEFAULT_MAX_IN_FLIGHT, RelayConfig
from relay.errors import ConfigError
from tests.conftest import TEST_SECRET

CONFIG = """
sources:
  - {id: ops, kind: standard_webhooks, secrets: ["%(secret)s"]}
targets:
  - {id: sink, kind: webhook, url: "http://127.0.0.1:9000/in", allow_private: true,
     timeout: 10s%(extra)s}
routes:
  - {source: ops, targets: [sink]}
"""


def load(tmp_path: Path, extra: str = "", env: dict[str, str] | None = None) -> RelayConfig:
    path = tmp_path / "relay.yaml"
    path.write_text(CONFIG % {"secret": TEST_SECRET, "extra": extra})
    return load_config(path, env=env or {})


def problems(tmp_path: Path, extra: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, extra)
    return caught.value.problems


def test_defaults_cap_attempts_in_flight_and_take_the_timeout_as_slow(tmp_path: Path) -> None:
    target = load(tmp_path).targets["sink"]
    assert target.max_in_flight == DEFAULT_MAX_IN_FLIGHT == 32
    assert target.circuit.slow_call is None
    assert target.circuit.slow_after(10.0) == 10.0


@pytest.mark.parametrize(("written", "cap"), [("4", 4), ("off", None), ("'16'", 16)])
def test_max_in_flight_takes_a_number_or_off(tmp_path: Path, written: str, cap: int | None) -> None:
    target = load(tmp_path, f", max_in_flight: {written}").targets["sink"]
    assert target.max_in_flight == cap


def test_max_in_flight_from_the_environment(tmp_path: Path) -> None:
    config = load(tmp_path, ', max_in_flight: "${CAP}"', env={"CAP": "8"})
    assert config.targets["sink"].max_in_flight == 8


@pytest.mark.parametrize("written", ["0", "-3", "many", "2.5", "true", "null"])
def test_a_bad_max_in_flight_names_key_and_value(tmp_path: Path, written: str) -> None:
    [problem] = problems(tmp_path, f", max_in_flight: {written}")
    assert problem.startswith("targets[0].max_in_flight: ")
    assert "is not a cap on attempts in flight: a whole number ≥ 1, or off" in problem


def test_slow_call_sets_the_threshold(tmp_path: Path) -> None:
    target = load(tmp_path, ", circuit: {slow_call: 2s}").targets["sink"]
    assert target.circuit.slow_after(10.0) == 2.0
    off = load(tmp_path, ", circuit: {slow_call: 2s, enabled: false}").targets["sink"]
    assert off.circuit.slow_after(10.0) is None  # no breaker, nothing to tell


@pytest.mark.parametrize(
    ("written", "says"),
    [
        ("0s", "slow_call 0s is not a threshold: it must be above 0"),
        ("soon", "'soon' is not a duration"),
    ],
)
def test_a_bad_slow_call_names_key_and_value(tmp_path: Path, written: str, says: str) -> None:
    [problem] = problems(tmp_path, f", circuit: {{slow_call: {written}}}")
    assert problem.startswith("targets[0].circuit.slow_call: ") and says in problem
