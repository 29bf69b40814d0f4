"""The README's first hour (init, up, send, queues, events, dlq, keys create, an API call
with that key, targets pause, stop) gives the right answer at every step, with no
Redis on the default port and with one there that is not the relay's.

The journey (``tests/cli/journey.py``) runs as its own process. Where the machine runs
a Redis on 6379 already, it runs in a private network namespace (``unshare -rn``), so
both cases are real without touching that Redis; without ``unshare`` those cases skip.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="relay up's tree, /proc"),
    pytest.mark.timeout(240),
]


def _port_6379_busy() -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", 6379)) == 0


def _namespace() -> list[str] | None:
    """A command prefix for a private network namespace with loopback up, if allowed."""
    if not (shutil.which("unshare") and shutil.which("ip")):
        return None
    prefix = ["unshare", "--user", "--map-root-user", "--net", "sh", "-c"]
    probe = subprocess.run([*prefix, "ip link set lo up"], capture_output=True, timeout=10)
    if probe.returncode != 0:
        return None
    return [*prefix, 'ip link set lo up && exec "$0" "$@"']


def _journey(tmp_path: Path, *flags: str) -> None:
    prefix: list[str] = []
    if _port_6379_busy():
        found = _namespace()
        if found is None:
            pytest.skip(
                "this machine runs a Redis on 6379 and cannot make a private network "
                "namespace (unshare -rn) to run the journey away from it"
            )
        prefix = found
    elif flags and shutil.which("redis-server") is None:
        pytest.skip("no redis-server on PATH to put on port 6379")
    result = subprocess.run(
        [*prefix, sys.executable, "-m", "tests.cli.journey", str(tmp_path), *flags],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=220,
    )
    assert result.returncode == 0, result.stdout[-12000:] + result.stderr[-6000:]


def test_first_hour_with_no_redis_on_the_default_port(tmp_path: Path) -> None:
    _journey(tmp_path)


def test_first_hour_with_another_redis_on_the_default_port(tmp_path: Path) -> None:
    """The case of the report: commands used to show that Redis's emptiness as zeros."""
    _journey(tmp_path, "--redis-on-6379")
