"""The overlays render, and the test renderer agrees with kustomize itself where it runs."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.conftest import K8S, OVERLAYS
from tests.deploy.kustomize import KustomizeError, Obj, identity, render

FIXED_COUNT = {"scheduler", "poller"}  # not autoscaled: their count is in the manifest


def by_identity(objects: list[Obj]) -> dict[tuple[str, str], Obj]:
    return {identity(obj): obj for obj in objects}


@pytest.mark.skipif(
    shutil.which("kubectl") is None, reason="kubectl (with kustomize) not installed"
)
@pytest.mark.parametrize("name", OVERLAYS)
def test_the_renderer_matches_kubectl_kustomize(name: str) -> None:
    """Every object the helper renders is the one ``kubectl kustomize`` prints, field for
    field, so the checks below judge what ``kubectl apply -k`` would send."""
    done = subprocess.run(
        ["kubectl", "kustomize", str(K8S / "overlays" / name)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    theirs = by_identity([doc for doc in yaml.safe_load_all(done.stdout) if doc])
    ours = by_identity(render(K8S / "overlays" / name))
    assert sorted(ours) == sorted(theirs)
    for key, obj in ours.items():
        assert json.dumps(obj, sort_keys=True) == json.dumps(theirs[key], sort_keys=True), key


def test_each_overlay_has_the_relay_processes(overlay: tuple[str, list[Obj]]) -> None:
    name, objects = overlay
    deployments = {o["metadata"]["name"] for o in objects if o["kind"] == "Deployment"}
    assert deployments == {
        "web",
        "worker-fanout",
        "worker-notify",
        "worker-pm",
        "worker-webhook",
        "worker-storage",
        "scheduler",
        "poller",
    }
    for obj in objects:
        assert obj["metadata"].get("namespace") == "relay", identity(obj)
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "group-relay"
    images = {
        c["image"]
        for o in objects
        if o["metadata"].get("labels", {}).get("app.kubernetes.io/name") == "group-relay"
        for c in o.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
    }
    assert images == {"registry.example.com/group-relay:0.1.0"}


def test_only_production_autoscales(overlay: tuple[str, list[Obj]]) -> None:
    name, objects = overlay
    kinds = {o["kind"] for o in objects}
    scaled = {"ScaledObject", "TriggerAuthentication", "HorizontalPodAutoscaler"}
    if name == "production":
        assert scaled <= kinds
        for obj in objects:
            if obj["kind"] == "Deployment" and obj["metadata"]["name"] not in FIXED_COUNT:
                # The autoscaler owns the count: an apply must not reset it.
                assert "replicas" not in obj["spec"], obj["metadata"]["name"]
    else:
        assert not scaled & kinds
        assert "StatefulSet" in kinds  # the small overlay brings its Redis


def test_two_schedulers_and_at_most_one_poller(overlay: tuple[str, list[Obj]]) -> None:
    _, objects = overlay
    found = by_identity(objects)
    assert found["Deployment", "scheduler"]["spec"]["replicas"] == 2
    poller = found["Deployment", "poller"]["spec"]
    assert poller["replicas"] <= 1
    assert poller["strategy"] == {"type": "Recreate"}  # never two pollers during a rollout


def test_the_renderer_refuses_what_it_does_not_render(tmp_path: Path) -> None:
    """A kustomization field the helper does not implement fails loudly, so the checks
    never pass on a rendering that silently skipped part of the manifests."""
    (tmp_path / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n")
    (tmp_path / "kustomization.yaml").write_text("resources: [cm.yaml]\nnamePrefix: x-\n")
    with pytest.raises(KustomizeError, match="namePrefix"):
        render(tmp_path)


def test_a_patch_for_a_missing_object_fails(tmp_path: Path) -> None:
    (tmp_path / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n")
    (tmp_path / "patch.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\ndata: {k: v}\n"
    )
    (tmp_path / "kustomization.yaml").write_text(
        "resources: [cm.yaml]\npatches:\n  - path: patch.yaml\n"
    )
    with pytest.raises(KustomizeError, match="matches 0 objects"):
        render(tmp_path)
