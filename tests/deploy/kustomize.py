"""Render a kustomization the way ``kubectl kustomize`` does, for the subset deploy/k8s uses.

No kustomize binary is packaged for these machines (Debian has none; PyPI's bindings
need a newer Python), so the tests render the overlays themselves: ``resources`` (files
and nested kustomizations), ``namespace``, ``labels`` (metadata only), ``patches``
(strategic merge files, matched by kind and name), ``images`` and ``replicas``. Any other
field is refused rather than ignored, so a manifest that starts using one fails here
until this helper learns it. Where ``kubectl`` is installed, a test compares the two
renderings object by object.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

Obj = dict[str, Any]

SUPPORTED = {
    "apiVersion",
    "kind",
    "resources",
    "namespace",
    "labels",
    "patches",
    "images",
    "replicas",
}
CLUSTER_SCOPED = {
    "Namespace",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
    "PersistentVolume",
    "StorageClass",
    "PriorityClass",
    "IngressClass",
}
SCALABLE = {"Deployment", "StatefulSet", "ReplicaSet", "ReplicationController"}
# Strategic merge: lists of these fields are merged item by item on the key named.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "volumes": "name",
    "env": "name",
    "envFrom": None,  # replaced whole, as kustomize does for lists without a merge key
    "volumeMounts": "mountPath",
    "ports": "containerPort",
    "imagePullSecrets": "name",
}


class KustomizeError(Exception):
    """The kustomization uses something this helper does not render, or is wrong."""


def identity(obj: Obj) -> tuple[str, str]:
    return obj["kind"], obj["metadata"]["name"]


def render(directory: Path) -> list[Obj]:
    """The objects ``kubectl kustomize directory`` would print, in resource order."""
    path = directory / "kustomization.yaml"
    spec = yaml.safe_load(path.read_text())
    unknown = set(spec) - SUPPORTED
    if unknown:
        raise KustomizeError(f"{path}: fields this renderer does not support: {sorted(unknown)}")
    objects: list[Obj] = []
    for entry in spec.get("resources", []):
        target = directory / entry
        objects += render(target) if target.is_dir() else load_documents(target)
    seen: set[tuple[str, str]] = set()
    for obj in objects:
        if identity(obj) in seen:
            raise KustomizeError(f"{path}: {identity(obj)} is defined twice")
        seen.add(identity(obj))
    for patch in spec.get("patches", []):
        if set(patch) != {"path"}:
            raise KustomizeError(f"{path}: only file patches are supported, got {patch}")
        for doc in load_documents(directory / patch["path"]):
            apply_patch(objects, doc, path)
    if "namespace" in spec:
        for obj in objects:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj["metadata"]["namespace"] = spec["namespace"]
    for entry in spec.get("labels", []):
        if entry.get("includeSelectors") or entry.get("includeTemplates"):
            raise KustomizeError(f"{path}: labels on selectors or templates are not supported")
        for obj in objects:
            obj["metadata"].setdefault("labels", {}).update(entry["pairs"])
    for image in spec.get("images", []):
        set_image(objects, image)
    for entry in spec.get("replicas", []):
        matched = [
            o for o in objects if o["kind"] in SCALABLE and o["metadata"]["name"] == entry["name"]
        ]
        if not matched:
            raise KustomizeError(f"{path}: replicas for {entry['name']!r}, which is not defined")
        for obj in matched:
            obj["spec"]["replicas"] = entry["count"]
    return objects


def load_documents(path: Path) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def apply_patch(objects: list[Obj], patch: Obj, where: Path) -> None:
    matched = [o for o in objects if identity(o) == identity(patch)]
    if len(matched) != 1:
        raise KustomizeError(f"{where}: patch for {identity(patch)} matches {len(matched)} objects")
    merge(matched[0], patch)


def merge(base: Obj, patch: Obj) -> None:
    """Strategic merge of ``patch`` into ``base``: maps recursively, keyed lists by item."""
    for key, value in patch.items():
        if value is None:
            base.pop(key, None)
        elif isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        elif isinstance(value, list) and MERGE_KEYS.get(key) and isinstance(base.get(key), list):
            merge_list(base[key], value, MERGE_KEYS[key] or "")
        else:
            base[key] = copy.deepcopy(value)


def merge_list(base: list[Obj], patch: list[Obj], key: str) -> None:
    for item in patch:
        same = [b for b in base if b.get(key) == item.get(key)]
        if same:
            merge(same[0], item)
        else:
            base.append(copy.deepcopy(item))


def pod_specs(obj: Obj) -> Iterator[Obj]:
    """The pod spec of a workload (Deployment, StatefulSet, Job, ...), if it has one."""
    template = obj.get("spec", {}).get("template")
    if isinstance(template, dict) and "spec" in template:
        yield template["spec"]


def containers(obj: Obj) -> Iterator[Obj]:
    for spec in pod_specs(obj):
        yield from spec.get("initContainers", [])
        yield from spec.get("containers", [])


def set_image(objects: list[Obj], image: Obj) -> None:
    name = image["name"]
    for obj in objects:
        for container in containers(obj):
            current = container["image"]
            if current == name or current.startswith((f"{name}:", f"{name}@")):
                new = str(image.get("newName") or name)
                if "newTag" in image:
                    new += f":{image['newTag']}"
                container["image"] = new
