"""What every relay pod must have, and what the manifests must agree on among themselves.

Probes, requests and limits, a non-root user, a read-only root filesystem, no privilege
escalation and no capabilities; selectors that select something; a worker for every
queue and a ScaledObject reading the queue its worker consumes; Secrets referenced by
name only, never a value in the manifests.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from relay.config.loader import load_config
from relay.liveness import PROBE_COMMAND
from relay.state import keys
from tests.deploy.conftest import K8S, ROOT
from tests.deploy.kustomize import Obj, containers, identity, pod_specs

WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}
# Containers without a liveness probe, and why (docs/kubernetes.md says the same).
NO_LIVENESS: dict[str, str] = {}
SECRETISH = re.compile(r"(secret|token|password|passwd|api_?key|credential)", re.IGNORECASE)
URL_WITH_PASSWORD = re.compile(r"\w+://[^\s/@:]*:[^\s/@]+@")


def workloads(objects: list[Obj]) -> list[Obj]:
    return [o for o in objects if o["kind"] in WORKLOADS]


def test_every_container_is_locked_down(overlay: tuple[str, list[Obj]]) -> None:
    _, objects = overlay
    for obj in workloads(objects):
        for spec in pod_specs(obj):
            pod_security = spec.get("securityContext", {})
            assert spec.get("automountServiceAccountToken") is False, identity(obj)
            for container in spec["containers"]:
                where = f"{identity(obj)} container {container['name']}"
                security = container.get("securityContext", {})
                non_root = security.get("runAsNonRoot", pod_security.get("runAsNonRoot"))
                assert non_root is True, where
                assert security.get("allowPrivilegeEscalation") is False, where
                assert security.get("readOnlyRootFilesystem") is True, where
                assert "ALL" in security.get("capabilities", {}).get("drop", []), where
                assert not security.get("privileged"), where
                resources = container.get("resources", {})
                for part in ("requests", "limits"):
                    assert {"cpu", "memory"} <= set(resources.get(part, {})), f"{where} {part}"


def test_every_container_has_its_probes(overlay: tuple[str, list[Obj]]) -> None:
    """A container that serves (has ports) has liveness and readiness probes; every other
    has a liveness probe, except the two named in NO_LIVENESS."""
    _, objects = overlay
    exempt_seen = set()
    for obj in workloads(objects):
        for container in containers(obj):
            where = f"{identity(obj)} container {container['name']}"
            if container.get("ports"):
                assert "readinessProbe" in container, where
            if container["name"] in NO_LIVENESS:
                assert "livenessProbe" not in container, f"{where}: drop it from NO_LIVENESS"
                exempt_seen.add(container["name"])
                continue
            assert "livenessProbe" in container, where
    assert exempt_seen == set(NO_LIVENESS)


def test_web_probes_use_the_health_endpoints(overlay: tuple[str, list[Obj]]) -> None:
    _, objects = overlay
    from relay.health import health

    routes = {rule.rule for rule in _rules(health)}
    (web,) = [o for o in objects if identity(o) == ("Deployment", "web")]
    (container,) = web["spec"]["template"]["spec"]["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {"/healthz", "/readyz"} <= routes


def _rules(blueprint: Any) -> list[Any]:
    """The URL rules a blueprint registers, read from a throwaway Flask app."""
    from flask import Flask

    app = Flask("probe-paths")
    app.register_blueprint(blueprint)
    return list(app.url_map.iter_rules())


def worker_queues(obj: Obj) -> tuple[str, str]:
    """``(-Q queue list, -n node prefix)`` of a worker Deployment's command."""
    (container,) = obj["spec"]["template"]["spec"]["containers"]
    command = container["command"]
    return command[command.index("-Q") + 1], command[command.index("-n") + 1].split("@")[0]


def test_every_queue_has_exactly_one_worker_family(overlay: tuple[str, list[Obj]]) -> None:
    _, objects = overlay
    workers = [
        o
        for o in objects
        if o["kind"] == "Deployment" and o["metadata"]["name"].startswith("worker-")
    ]
    consumed: list[str] = []
    for obj in workers:
        queues, node = worker_queues(obj)
        family = obj["metadata"]["labels"]["group-relay/queue-family"]
        assert obj["metadata"]["name"] == f"worker-{family}" and node == family
        (container,) = obj["spec"]["template"]["spec"]["containers"]
        probe = " ".join(container["livenessProbe"]["exec"]["command"])
        assert probe == f"sh -c {PROBE_COMMAND}"  # the age of this pod's own liveness file
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert container["command"][container["command"].index("-c") + 1] == (
            "$(RELAY_WORKER_CONCURRENCY)"
        )
        assert int(env["RELAY_WORKER_CONCURRENCY"]) >= 1
        consumed += queues.split(",")
    assert sorted(consumed) == sorted(keys.ALL_QUEUES)


def test_autoscaling_reads_the_queue_its_worker_consumes(production: list[Obj]) -> None:
    objects = production
    found = {identity(o): o for o in objects}
    auths = {n for kind, n in found if kind == "TriggerAuthentication"}
    scaled = [o for o in objects if o["kind"] == "ScaledObject"]
    assert len(scaled) == 5
    for obj in scaled:
        target = found["Deployment", obj["spec"]["scaleTargetRef"]["name"]]
        queue, _ = worker_queues(target)
        assert obj["spec"]["minReplicaCount"] >= 1  # every queue keeps a worker
        assert obj["spec"]["maxReplicaCount"] > obj["spec"]["minReplicaCount"]
        redis_triggers = [t for t in obj["spec"]["triggers"] if t["type"] == "redis"]
        assert [t["metadata"]["listName"] for t in redis_triggers] == [queue]
        for trigger in obj["spec"]["triggers"]:
            assert trigger["type"] in {"redis", "metrics-api"}
            assert trigger["authenticationRef"]["name"] in auths
            if trigger["type"] == "metrics-api":
                assert trigger["metadata"]["url"].endswith("/api/v1/queues")
                assert trigger["metadata"]["valueLocation"] == "scheduled_due"
    (hpa,) = [o for o in objects if o["kind"] == "HorizontalPodAutoscaler"]
    assert found["Deployment", hpa["spec"]["scaleTargetRef"]["name"]]
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"


def test_every_selector_selects_pods(overlay: tuple[str, list[Obj]]) -> None:
    """Services, PDBs, NetworkPolicies and workload selectors each match a pod template,
    so a renamed label cannot leave a policy or a budget guarding nothing."""
    _, objects = overlay
    pods = [
        o["spec"]["template"]["metadata"]["labels"]
        for o in workloads(objects)
        if "template" in o["spec"]
    ]

    def matches(labels: dict[str, str], selector: dict[str, Any]) -> bool:
        for key, value in selector.get("matchLabels", {}).items():
            if labels.get(key) != value:
                return False
        for expr in selector.get("matchExpressions", []):
            assert expr["operator"] == "In"
            if labels.get(expr["key"]) not in expr["values"]:
                return False
        return True

    for obj in objects:
        kind, spec = obj["kind"], obj.get("spec", {})
        if kind == "Service":
            selector = {"matchLabels": spec["selector"]}
        elif kind in {"PodDisruptionBudget", "Deployment", "StatefulSet"}:
            selector = spec["selector"]
        elif kind == "NetworkPolicy":
            selector = spec["podSelector"]
        else:
            continue
        assert any(matches(labels, selector) for labels in pods), identity(obj)
        if kind in {"Deployment", "StatefulSet"}:
            assert matches(spec["template"]["metadata"]["labels"], selector), identity(obj)


def test_only_workers_and_the_poller_reach_the_internet(overlay: tuple[str, list[Obj]]) -> None:
    _, objects = overlay
    policies = {o["metadata"]["name"]: o for o in objects if o["kind"] == "NetworkPolicy"}
    deny = policies["default-deny"]["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    internet = []
    for policy in policies.values():
        for rule in policy["spec"].get("egress", []):
            for peer in rule.get("to", []):
                cidr = peer.get("ipBlock", {}).get("cidr")
                if cidr in {"0.0.0.0/0", "::/0"}:
                    internet.append(policy)
                    assert "169.254.0.0/16" in peer["ipBlock"]["except"] or cidr == "::/0"
    components = {
        value
        for policy in internet
        for expr in policy["spec"]["podSelector"]["matchExpressions"]
        if expr["key"] == "app.kubernetes.io/component"
        for value in expr["values"]
    }
    assert components == {"worker", "poller"}


def referenced_secrets(objects: list[Obj]) -> set[tuple[str, str | None]]:
    """``(secret, key)`` pairs the pods and KEDA read; ``key`` is None for envFrom."""
    found: set[tuple[str, str | None]] = set()
    for obj in objects:
        for container in containers(obj):
            for source in container.get("envFrom", []):
                if "secretRef" in source:
                    found.add((source["secretRef"]["name"], None))
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    found.add((ref["name"], ref["key"]))
        for spec in pod_specs(obj):
            for volume in spec.get("volumes", []):
                if "secret" in volume:
                    found.add((volume["secret"]["secretName"], None))
        if obj["kind"] == "TriggerAuthentication":
            found |= {(r["name"], r["key"]) for r in obj["spec"]["secretTargetRef"]}
        if obj["kind"] == "Ingress":
            found |= {(t["secretName"], None) for t in obj["spec"].get("tls", [])}
    return found


def test_secrets_are_referenced_by_name_only(overlay: tuple[str, list[Obj]]) -> None:
    _, objects = overlay
    assert not [o for o in objects if o["kind"] == "Secret"]
    for obj in objects:
        for container in containers(obj):
            for env in container.get("env", []):
                value = env.get("value")
                if value is None:
                    continue
                assert not SECRETISH.search(env["name"]), f"{identity(obj)} sets {env['name']}"
                assert not URL_WITH_PASSWORD.search(value), f"{identity(obj)} {env['name']}"
    # Each Secret and key the manifests read is one docs/kubernetes.md tells you to create.
    docs = (ROOT / "docs" / "kubernetes.md").read_text()
    for name, key in referenced_secrets(objects):
        assert f"`{name}`" in docs, name
        if key is not None:
            assert f"`{key}`" in docs, f"{name}/{key}"


def test_no_secret_value_in_any_manifest_file() -> None:
    texts = {p: p.read_text() for p in K8S.rglob("*.yaml")}
    compose = ROOT / "deploy" / "docker-compose.yml"
    texts[compose] = compose.read_text()
    for path, text in texts.items():
        assert not re.search(r"^kind:\s*Secret\s*$", text, re.MULTILINE), path
        assert not URL_WITH_PASSWORD.search(text), path
        assert not re.search(
            r"whsec_[A-Za-z0-9+/]{8}|rk_[0-9a-f]{6,}_|BEGIN [A-Z ]*PRIVATE", text
        ), path


def test_the_shipped_relay_yaml_is_valid_and_holds_no_secret(
    overlay: tuple[str, list[Obj]], tmp_path: Path
) -> None:
    """The ConfigMap's relay.yaml passes the relay's own validation, with every secret
    option a ${NAME} that the relay-secrets Secret fills."""
    _, objects = overlay
    (config_map,) = [o for o in objects if identity(o) == ("ConfigMap", "relay-config")]
    text = config_map["data"]["relay.yaml"]
    names = set(re.findall(r"\$\{([A-Z0-9_]+)\}", text))
    assert names
    path = tmp_path / "relay.yaml"
    path.write_text(text)
    load_config(path, env={name: "whsec_" + "A" * 32 for name in names})

    def walk(node: Any, key: str = "") -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, str(k))
        elif isinstance(node, list):
            for item in node:
                walk(item, key)
        elif SECRETISH.search(key):
            assert re.fullmatch(r"\$\{[A-Z0-9_]+\}", str(node)), f"{key}: {node}"

    walk(yaml.safe_load(text))
    docs = (ROOT / "docs" / "kubernetes.md").read_text()
    for name in names:
        assert name in docs, name
