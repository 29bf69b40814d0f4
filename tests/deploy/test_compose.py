"""deploy/docker-compose.yml has the shape of the Kubernetes manifests.

Parsed, not run (no Docker engine in CI): a worker per queue family covering every
queue once, two schedulers, the proxy as the only published port, and a `sentinel`
profile with a replica and three sentinels that the default `up` leaves out.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from relay.liveness import PROBE_COMMAND
from relay.state import keys
from tests.deploy.conftest import ROOT

COMPOSE = ROOT / "deploy" / "docker-compose.yml"
SENTINEL_URL = "redis+sentinel://sentinel-1:26379,sentinel-2:26379,sentinel-3:26379/mymaster/0"


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())["services"]
    return loaded


def option(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def test_one_worker_per_family_covers_every_queue(services: dict[str, Any]) -> None:
    workers = {name: s for name, s in services.items() if name.startswith("worker-")}
    consumed: list[str] = []
    for name, service in workers.items():
        command = service["command"]
        family = name.removeprefix("worker-")
        assert command[:6] == ["celery", "-A", "workers.celery_app", "worker", "-P", "gevent"]
        assert option(command, "-n") == f"{family}@%h"
        # The broker pool is sized from the setting: it must say what -c says.
        assert service["environment"]["RELAY_WORKER_CONCURRENCY"] == option(command, "-c")
        assert service["environment"]["RELAY_REDIS_URL"].startswith("${RELAY_REDIS_URL:-")
        consumed += option(command, "-Q").split(",")
    assert sorted(consumed) == sorted(keys.ALL_QUEUES)
    assert services["worker-storage"]["environment"]["RELAY_TASK_TIME_LIMIT"] == "1800"


def test_two_schedulers_and_the_proxy_in_front(services: dict[str, Any]) -> None:
    schedulers = [n for n, s in services.items() if s.get("command") == ["relay", "scheduler"]]
    assert len(schedulers) == 2
    published = {name for name, s in services.items() if s.get("ports")}
    assert published == {"proxy"}
    assert "web" in services["proxy"]["depends_on"]
    assert services["web"]["environment"]["FORWARDED_ALLOW_IPS"] == "*"


def test_the_sentinel_profile(services: dict[str, Any]) -> None:
    profiled = {name for name, s in services.items() if s.get("profiles")}
    assert profiled == {"redis-replica", "sentinel-1", "sentinel-2", "sentinel-3"}
    assert all(services[name]["profiles"] == ["sentinel"] for name in profiled)
    replica = services["redis-replica"]["command"]
    assert replica[-3:] == ["--replicaof", "redis", "6379"]
    for name in ("sentinel-1", "sentinel-2", "sentinel-3"):
        script = services[name]["command"][-1]
        assert "sentinel monitor mymaster redis 6379 2" in script
        assert "exec redis-sentinel" in script
    # The header shows the URL that points every relay process at the sentinels.
    assert SENTINEL_URL in COMPOSE.read_text()


def test_workers_and_schedulers_report_a_wedged_loop(services: dict[str, Any]) -> None:
    """Their health check is the Kubernetes probe's shell line on the file their loops
    touch (tested for real in test_liveness_probes.py)."""
    looping = [n for n in services if n.startswith(("worker-", "scheduler-"))]
    assert len(looping) == 7
    for name in looping:
        service = services[name]
        assert service["healthcheck"]["test"] == ["CMD-SHELL", PROBE_COMMAND]
        assert service["environment"]["RELAY_LIVENESS_FILE"] == "/tmp/relay-alive"
