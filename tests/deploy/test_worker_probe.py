"""The worker Deployment's command and liveness probe, run for real against a worker.

The manifest's own worker command (queues, node name, concurrency from the environment)
starts a gevent worker with the ConfigMap's relay.yaml; the manifest's own probe command
must pass while the worker runs, fail while it is frozen (SIGSTOP: its loop cannot
answer, as when wedged), and pass again once it resumes.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.conftest import RelayProcesses, wait_for
from tests.deploy.conftest import K8S
from tests.deploy.kustomize import Obj, identity, render

BIN = str(Path(sys.executable).parent)  # celery and relay, as on the image's PATH


def notify_worker() -> Obj:
    objects = {identity(o): o for o in render(K8S / "overlays" / "small")}
    (container,) = objects["Deployment", "worker-notify"]["spec"]["template"]["spec"]["containers"]
    config = objects["ConfigMap", "relay-config"]["data"]["relay.yaml"]
    return {"container": container, "config": config}


def expand(args: list[str], env: dict[str, str]) -> list[str]:
    """Kubernetes' $(VAR) expansion of a container's command."""
    return [re.sub(r"\$\(([A-Z0-9_]+)\)", lambda m: env[m.group(1)], arg) for arg in args]


def probe(command: list[str], env: dict[str, str]) -> int:
    return subprocess.run(command, env=env, capture_output=True, timeout=60, check=False).returncode


def test_the_liveness_probe_tells_a_frozen_worker(
    relay_processes: Callable[..., RelayProcesses], tmp_path: Path
) -> None:
    spec = notify_worker()
    container = spec["container"]
    config = tmp_path / "relay.yaml"
    config.write_text(spec["config"])
    secrets = {name: "whsec_" + "A" * 32 for name in re.findall(r"\$\{(\w+)\}", spec["config"])}
    pod_env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    # The relay's own limits, as in a pod (the suite's short test limits refuse the
    # shipped config's 10 s target timeout, as they should).
    pod_env |= {"RELAY_TASK_TIME_LIMIT": "300", "RELAY_VISIBILITY_TIMEOUT": "3600"}
    path = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    host = socket.gethostname()  # what celery's %h and a pod's $HOSTNAME both are
    procs = relay_processes(
        config, worker=False, scheduler=False, PATH=path, HOSTNAME=host, **secrets, **pod_env
    )
    env = procs.env
    # The manifest's command as is, rather than the fixture's own worker command.
    worker = procs._start("worker", expand(container["command"], env))
    check = container["livenessProbe"]["exec"]["command"]

    wait_for(lambda: probe(check, env) == 0, timeout=60, interval=0.5)
    os.killpg(worker.pid, signal.SIGSTOP)
    try:
        assert probe(check, env) != 0
    finally:
        os.killpg(worker.pid, signal.SIGCONT)
    wait_for(lambda: probe(check, env) == 0, timeout=60, interval=0.5)
    assert "notify@" in procs.log("worker") and "relay.deliver.notify" in procs.log("worker")
