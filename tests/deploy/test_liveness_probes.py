"""The liveness probes of the Kubernetes manifests, run for real (``relay.liveness``).

Each process is started with its manifest's own command and environment; the manifest's
own probe command must pass while it runs, fail while it is frozen (SIGSTOP: its loop
cannot turn, as when wedged), and pass again once it resumes. The scheduler's probe
also passes while Redis is away: it is waiting as it should, and a restart would only
add a crash loop to the outage.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from relay.cli import main
from relay.cli.embedded import EmbeddedRedis
from relay.liveness import LivenessFile
from tests.conftest import RelayProcesses, wait_for
from tests.deploy.conftest import K8S
from tests.deploy.kustomize import Obj, identity, render

BIN = str(Path(sys.executable).parent)  # celery and relay, as on the image's PATH
MAX_AGE = "8"  # seconds; the manifests' default is 60


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """This test's own server, so that it can be stopped."""
    server = EmbeddedRedis(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> str:
    return redis_server.url


def deployment(name: str) -> dict[str, Obj]:
    """The container of Deployment ``name`` in the small overlay, the env it gets from
    the relay-env ConfigMap, and the shipped relay.yaml."""
    objects = {identity(o): o for o in render(K8S / "overlays" / "small")}
    (container,) = objects["Deployment", name]["spec"]["template"]["spec"]["containers"]
    return {
        "container": container,
        "env": objects["ConfigMap", "relay-env"]["data"],
        "config": objects["ConfigMap", "relay-config"]["data"]["relay.yaml"],
    }


def expand(args: list[str], env: dict[str, str]) -> list[str]:
    """Kubernetes' $(VAR) expansion of a container's command."""
    return [re.sub(r"\$\(([A-Z0-9_]+)\)", lambda m: env[m.group(1)], arg) for arg in args]


def probe(command: list[str], env: dict[str, str]) -> int:
    return subprocess.run(command, env=env, capture_output=True, timeout=60, check=False).returncode


def start(
    name: str, relay_processes: Callable[..., RelayProcesses], tmp_path: Path
) -> tuple[RelayProcesses, subprocess.Popen[bytes], list[str]]:
    """Deployment ``name``'s process as its pod runs it; its probe command."""
    spec = deployment(name)
    container = spec["container"]
    config = tmp_path / "relay.yaml"
    config.write_text(spec["config"])
    secrets = {n: "whsec_" + "A" * 32 for n in re.findall(r"\$\{(\w+)\}", spec["config"])}
    pod_env = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
    # The relay's own limits, as in a pod (the suite's short test limits refuse the
    # shipped config's 10 s target timeout, as they should).
    pod_env |= {"RELAY_TASK_TIME_LIMIT": "300", "RELAY_VISIBILITY_TIMEOUT": "3600"}
    assert spec["env"]["RELAY_LIVENESS_FILE"].startswith("/tmp/")  # on the pod's emptyDir
    pod_env |= {
        "RELAY_LIVENESS_FILE": str(tmp_path / "alive"),
        "RELAY_LIVENESS_MAX_AGE": MAX_AGE,
    }
    path = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    host = socket.gethostname()  # what celery's %h and a pod's $HOSTNAME both are
    procs = relay_processes(
        config, worker=False, scheduler=False, PATH=path, HOSTNAME=host, **secrets, **pod_env
    )
    # The manifest's command as is, rather than the fixture's own commands.
    proc = procs._start(name, expand(container["command"], procs.env))
    return procs, proc, container["livenessProbe"]["exec"]["command"]


def frozen_fails_and_thawed_passes(
    proc: subprocess.Popen[bytes], check: list[str], env: dict[str, str]
) -> None:
    wait_for(lambda: probe(check, env) == 0, timeout=60, interval=0.5)
    os.killpg(proc.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: probe(check, env) != 0, timeout=30, interval=0.5)
    finally:
        os.killpg(proc.pid, signal.SIGCONT)
    wait_for(lambda: probe(check, env) == 0, timeout=60, interval=0.5)


def test_the_worker_probe_tells_a_frozen_worker(
    relay_processes: Callable[..., RelayProcesses], tmp_path: Path
) -> None:
    procs, worker, check = start("worker-notify", relay_processes, tmp_path)
    frozen_fails_and_thawed_passes(worker, check, procs.env)
    log = procs.log("worker-notify")
    assert "notify@" in log and "relay.deliver.notify" in log and "worker.liveness_file" in log


def test_the_scheduler_probe_tells_a_frozen_scheduler_but_not_a_redis_outage(
    relay_processes: Callable[..., RelayProcesses],
    redis_server: EmbeddedRedis,
    tmp_path: Path,
) -> None:
    procs, scheduler, check = start("scheduler", relay_processes, tmp_path)
    frozen_fails_and_thawed_passes(scheduler, check, procs.env)

    redis_server.stop()  # Redis away for longer than the probe's age
    wait_for(lambda: "scheduler.redis_error" in procs.log("scheduler"), timeout=30)
    time.sleep(int(MAX_AGE) + 2)
    assert probe(check, procs.env) == 0 and scheduler.poll() is None


def test_an_idle_poller_is_alive(
    relay_processes: Callable[..., RelayProcesses], tmp_path: Path
) -> None:
    procs, poller, check = start("poller", relay_processes, tmp_path)  # no RELAY_POLL_SOURCE
    wait_for(lambda: probe(check, procs.env) == 0, timeout=60, interval=0.5)
    assert poller.poll() is None and "poller.idle" in procs.log("poller")


def test_relay_alive_says_why_a_process_counts_as_wedged(tmp_path: Path) -> None:
    path = tmp_path / "alive"
    runner = CliRunner()
    missing = runner.invoke(main, ["alive", "--file", str(path)])
    assert missing.exit_code == 1 and "has not started its loop" in missing.output
    LivenessFile(path).touch()
    assert runner.invoke(main, ["alive", "--file", str(path)]).exit_code == 0
    old = time.time() - 90
    os.utime(path, (old, old))
    stale = runner.invoke(main, ["alive"], env={"RELAY_LIVENESS_FILE": str(path)})
    assert stale.exit_code == 1 and "last touched 90s ago (over 60s)" in stale.output
    fresh_enough = runner.invoke(main, ["alive", "--file", str(path), "--max-age", "120"])
    assert fresh_enough.exit_code == 0
    assert runner.invoke(main, ["alive"], env={"RELAY_LIVENESS_FILE": None}).exit_code == 2


def test_an_unwritable_file_is_reported_once_and_never_raised(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    alive = LivenessFile(blocker / "alive", every=0)
    alive.touch()
    alive.touch()
    assert alive.error is not None and str(blocker) in alive.error
