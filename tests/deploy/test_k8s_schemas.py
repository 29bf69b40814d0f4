"""Every rendered object is valid for the API server, offline.

Built-in kinds are checked by ``kubernetes-validate`` against the OpenAPI schemas of the
Kubernetes versions the docs state, in strict mode (an unknown field is an error, as
``kubectl apply``'s server-side field validation makes it). KEDA's kinds are checked
against the CRD schemas kept in ``deploy/k8s/schemas``, closed the same way.
"""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.deploy.conftest import K8S
from tests.deploy.kustomize import Obj, identity

# The oldest Kubernetes the manifests support, and a current one (docs/kubernetes.md).
KUBERNETES_VERSIONS = ("1.31.0", "1.35.0")
CRDS = {
    "ScaledObject": K8S / "schemas" / "keda-2.16.1-scaledobjects.yaml",
    "TriggerAuthentication": K8S / "schemas" / "keda-triggerauthentications.yaml",
}
METADATA_FIELDS = {"name", "namespace", "labels", "annotations"}


def closed(schema: Any) -> Any:
    """The CRD schema with every object that lists its properties closed to others, as
    the API server's strict field validation treats a structural schema."""
    if isinstance(schema, list):
        return [closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: closed(value) for key, value in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@cache
def crd_validator(kind: str) -> jsonschema.Draft7Validator:
    crd = yaml.safe_load(Path(CRDS[kind]).read_text())
    assert crd["spec"]["names"]["kind"] == kind
    (version,) = [v for v in crd["spec"]["versions"] if v["storage"]]
    schema = closed(version["schema"]["openAPIV3Schema"])
    return jsonschema.Draft7Validator(schema)


def crd_errors(obj: Obj) -> list[str]:
    errors = [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
        for e in crd_validator(obj["kind"]).iter_errors(obj)
    ]
    extra = set(obj["metadata"]) - METADATA_FIELDS
    if extra:
        errors.append(f"metadata: unexpected {sorted(extra)}")
    if obj["apiVersion"] != "keda.sh/v1alpha1":
        errors.append(f"apiVersion: {obj['apiVersion']}")
    return errors


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_builtin_kinds_are_valid_for_kubernetes(
    overlay: tuple[str, list[Obj]], version: str
) -> None:
    _, objects = overlay
    checked = 0
    for obj in objects:
        if obj["kind"] in CRDS:
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(map(str, exc.path))
            pytest.fail(f"{identity(obj)} invalid for Kubernetes {version}: {path}: {exc.message}")
        checked += 1
    assert checked >= 20


def test_keda_kinds_are_valid_for_their_crd(overlay: tuple[str, list[Obj]]) -> None:
    name, objects = overlay
    keda = [o for o in objects if o["kind"] in CRDS]
    for obj in keda:
        assert crd_errors(obj) == [], identity(obj)
    assert len(keda) == (7 if name == "production" else 0)


def production_object(kind: str, name: str) -> Obj:
    from tests.deploy.kustomize import render

    objects = {identity(o): o for o in render(K8S / "overlays" / "production")}
    return copy.deepcopy(objects[kind, name])


def test_the_schema_checks_can_fail() -> None:
    """A misspelt field, a number where KEDA wants a string, a missing required field:
    each is caught, so a clean run above means something."""
    scaled = production_object("ScaledObject", "worker-notify")
    scaled["spec"]["minReplicas"] = 1  # KEDA spells it minReplicaCount
    assert any("minReplicas" in e for e in crd_errors(scaled))

    scaled = production_object("ScaledObject", "worker-notify")
    scaled["spec"]["triggers"][0]["metadata"]["listLength"] = 500  # metadata values are strings
    assert any("listLength" in e for e in crd_errors(scaled))

    auth = production_object("TriggerAuthentication", "relay-redis")
    del auth["spec"]["secretTargetRef"][0]["key"]
    assert any("'key' is a required property" in e for e in crd_errors(auth))

    web = production_object("Deployment", "web")
    web["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(web, KUBERNETES_VERSIONS[0], strict=True)
