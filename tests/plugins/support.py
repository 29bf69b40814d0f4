"""Helpers for the plugin tests: install the example plugin beside the relay (offline),
write package metadata by hand, and run ``relay`` in a process that sees both.

The example is installed with ``pip install --target``: a folder of modules and a
``.dist-info`` that a process finds through ``PYTHONPATH``, as it would find a package in
site-packages. Each process started with ``plugin_env`` therefore loads the plugin's
entry points exactly as an installed plugin's, while this test process never does.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.conftest import ROOT

EXAMPLE = ROOT / "examples" / "group-relay-acme-source"
_PROJECT = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
EXAMPLE_VERSION: str = _PROJECT["version"]


def install_example(into: Path) -> Path:
    """Build and install the example into ``into/site``; return that folder.

    Built from a copy, since a build writes ``build/`` and ``*.egg-info`` next to the
    sources; ``--no-build-isolation --no-index`` uses this environment's setuptools (the
    dev extra pins it), so no network is needed; ``--no-deps`` as the relay is here."""
    copy = into / "src"
    shutil.copytree(
        EXAMPLE,
        copy,
        ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info", ".*cache"),
    )
    site = into / "site"
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index"]
        + ["--no-build-isolation", "--target", str(site), str(copy)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]
    return site


def fake_dist(
    site: Path, name: str, version: str, entry_points: str, modules: dict[str, str] | None = None
) -> Path:
    """A package as installed (a ``.dist-info`` with ``METADATA`` and ``entry_points.txt``,
    and its modules) without building one: enough for the entry-point machinery."""
    site.mkdir(parents=True, exist_ok=True)
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(entry_points)
    for module, text in (modules or {}).items():
        (site / f"{module}.py").write_text(text)
    return site


def plugin_env(*sites: Path, **extra: str) -> dict[str, str]:
    """This environment without ``RELAY_*`` settings, with ``sites`` importable first."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env["PYTHONPATH"] = os.pathsep.join([*map(str, sites), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep
    )
    return {**env, **extra}


def relay_cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """``relay ARGS`` in a fresh process, so entry points are read as a user's would be."""
    return subprocess.run(
        [sys.executable, "-m", "relay.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
