"""The rendered Kubernetes overlays, once per session (rendering reads a few dozen files)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.deploy.kustomize import Obj, render

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("small", "production")


@pytest.fixture(scope="session", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[str, list[Obj]]:
    """``(name, objects)`` of each overlay, rendered like ``kubectl kustomize``."""
    name: str = request.param
    return name, render(K8S / "overlays" / name)


@pytest.fixture(scope="session")
def production() -> list[Obj]:
    return render(K8S / "overlays" / "production")
