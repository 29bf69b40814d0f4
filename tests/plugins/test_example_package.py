"""The example plugin's own promises: its test suite passes (the root ``pytest`` collects
only ``tests/``, so it is run here, as its README says to run it) and the config in its
README passes ``relay check`` with the package installed."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT
from tests.plugins.support import EXAMPLE, plugin_env, relay_cli

YAML_BLOCK = re.compile(r"^```yaml\n(.*?)^```", re.MULTILINE | re.DOTALL)


def test_the_example_passes_its_own_tests() -> None:
    env = plugin_env(PYTHONDONTWRITEBYTECODE="1")  # leave no __pycache__ in the example
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "examples/group-relay-acme-source/tests"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert re.search(r"^\d+ passed", result.stdout.splitlines()[-1]), result.stdout[-500:]


def test_the_readme_config_passes_relay_check(acme_site: Path, tmp_path: Path) -> None:
    readme = (EXAMPLE / "README.md").read_text()
    (block,) = YAML_BLOCK.findall(readme)
    path = tmp_path / "relay.yaml"
    path.write_text(block)
    env = plugin_env(acme_site, ACME_SIGNING_SECRET="acme-readme-secret")
    result = relay_cli("check", str(path), env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{path}: ok (1 sources, 0 targets, 0 routes)")
