"""The example plugin, built and installed once for the plugin tests (see ``support``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.plugins.support import install_example


@pytest.fixture(scope="session")
def acme_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the installed ``group-relay-acme-source`` (put it on PYTHONPATH)."""
    return install_example(tmp_path_factory.mktemp("acme-plugin"))
