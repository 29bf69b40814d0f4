"""Every test in this folder carries the ``chaos`` marker.

A hook rather than a ``pytestmark`` line per module, so a new fault scenario dropped
here is selected by ``pytest -m chaos`` without anyone remembering to mark it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.resolve().parents:
            item.add_marker(pytest.mark.chaos)
