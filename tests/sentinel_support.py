"""A real Redis Sentinel deployment for tests: a primary, its replicas and the Sentinels
that guard them, each a ``redis-server`` process on a free loopback port.

Shared by ``tests/state/test_sentinel*.py`` and ``tests/chaos/test_failover.py``. The
data servers are ``EmbeddedRedis`` (AOF on, ``noeviction``: the production settings);
a Sentinel is ``redis-server <file> --sentinel`` with a config file it may rewrite.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import redis

from relay.cli.embedded import EmbeddedRedis, find_redis_server, free_port
from relay.cli.supervisor import die_with_parent

MASTER = "relay"  # the name the Sentinels know the primary by


def _wait(what: str, check: Callable[[], object], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except redis.RedisError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not within {timeout:g}s")
        time.sleep(0.05)


class SentinelSet:
    """``SentinelSet(dir).start()``: one primary, ``replicas`` replicas, ``sentinels``
    Sentinels (quorum: a majority), the primary judged down after ``down_after`` ms."""

    def __init__(
        self,
        base: Path,
        *,
        replicas: int = 1,
        sentinels: int = 3,
        down_after: int = 1000,
        sentinel_password: str | None = None,
    ) -> None:
        self.base = base
        self.nodes = [EmbeddedRedis(base / f"node{i}") for i in range(1 + replicas)]
        self.sentinel_ports = [free_port() for _ in range(sentinels)]
        self.down_after = down_after
        self.sentinel_password = sentinel_password
        self.sentinel_procs: list[subprocess.Popen[bytes]] = []
        self._peers = True

    @property
    def url(self) -> str:
        """``RELAY_REDIS_URL`` for the relay's processes."""
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{MASTER}/0"

    def start(self, *, peers: bool = True) -> SentinelSet:
        """Start everything; wait until each Sentinel knows the replicas and, with
        ``peers``, the other Sentinels (a failover on a dead primary needs a quorum; an
        operator's ``failover`` does not, and they find each other within seconds)."""
        self._peers = peers
        primary, *replicas = self.nodes
        for node in self.nodes:
            node.start()
            with self.client(node) as c:  # any may become the primary: sync at once
                c.config_set("repl-diskless-sync-delay", 0)
        for node in replicas:
            with self.client(node) as c:
                c.replicaof("127.0.0.1", primary.port)
        for node in replicas:
            self.wait_until_replicated(node, timeout=20)
        for port in self.sentinel_ports:
            self._start_sentinel(port, primary.port)
        _wait("the Sentinels to know each other and the replicas", self._ready, 30)
        return self

    def _start_sentinel(self, port: int, primary_port: int) -> None:
        folder = self.base / f"sentinel{port}"
        folder.mkdir(parents=True, exist_ok=True)
        lines = [
            f"port {port}",
            "bind 127.0.0.1",
            f"dir {folder}",
            f"logfile {folder / 'sentinel.log'}",
            f"sentinel monitor {MASTER} 127.0.0.1 {primary_port} "
            f"{len(self.sentinel_ports) // 2 + 1}",
            f"sentinel down-after-milliseconds {MASTER} {self.down_after}",
            f"sentinel failover-timeout {MASTER} 10000",
            f"sentinel parallel-syncs {MASTER} 1",
        ]
        if self.sentinel_password:
            lines += [
                f"requirepass {self.sentinel_password}",
                f"sentinel sentinel-pass {self.sentinel_password}",
            ]
        config = folder / "sentinel.conf"
        config.write_text("\n".join(lines) + "\n")
        config.chmod(0o600)
        proc = subprocess.Popen(
            [find_redis_server(), str(config), "--sentinel"],
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent(),  # noqa: PLW1509 - resolved before the fork
        )
        self.sentinel_procs.append(proc)

    def sentinel(self, port: int) -> redis.Redis:
        return redis.Redis(
            port=port, password=self.sentinel_password, socket_timeout=1, decode_responses=True
        )

    def _ready(self) -> bool:
        want_replicas = len(self.nodes) - 1
        want_others = len(self.sentinel_ports) - 1 if self._peers else 0
        for port in self.sentinel_ports:
            with self.sentinel(port) as s:
                if s.sentinel_master(MASTER)["num-other-sentinels"] < want_others:
                    return False
                known = s.sentinel_slaves(MASTER)  # and in touch: one it may promote
                if sum(r["flags"] == "slave" for r in known) != want_replicas:
                    return False
        return True

    @staticmethod
    def client(node: EmbeddedRedis) -> redis.Redis:
        return redis.Redis(port=node.port, socket_timeout=2)

    def _linked(self, node: EmbeddedRedis) -> bool:
        with self.client(node) as c:
            return bool(c.info("replication").get("master_link_status") == "up")

    def master_port(self) -> int:
        """The port of the primary, as the first Sentinel that answers says."""
        for port in self.sentinel_ports:
            try:
                with self.sentinel(port) as s:
                    _, master_port = s.sentinel_get_master_addr_by_name(MASTER)
                    return int(master_port)
            except redis.RedisError:
                continue
        raise RuntimeError("no Sentinel answered")

    def node(self, port: int) -> EmbeddedRedis:
        return next(n for n in self.nodes if n.port == port)

    def primary(self) -> EmbeddedRedis:
        return self.node(self.master_port())

    def wait_for_promotion(self, old_port: int, timeout: float = 30) -> int:
        """The new primary's port, once every Sentinel names one other than ``old_port``
        and it answers as a master."""

        def promoted() -> bool:
            ports = set()
            for port in self.sentinel_ports:
                with self.sentinel(port) as s:
                    ports.add(int(s.sentinel_get_master_addr_by_name(MASTER)[1]))
            if len(ports) != 1 or old_port in ports:
                return False
            with self.client(self.node(ports.pop())) as c:
                return bool(c.info("replication")["role"] == "master")

        _wait("a promotion", promoted, timeout)
        return self.master_port()

    def wait_until_replicated(self, node: EmbeddedRedis, timeout: float = 60) -> None:
        """Until ``node`` (say, a former primary started again) replicates the primary."""
        _wait("the node to replicate", lambda: self._linked(node), timeout)

    def failover(self) -> None:
        """A coordinated failover, as an operator asks for one (``SENTINEL FAILOVER``)."""
        with self.sentinel(self.sentinel_ports[0]) as s:
            s.execute_command("SENTINEL", "FAILOVER", MASTER)

    def stop(self) -> None:
        for proc in self.sentinel_procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.sentinel_procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for node in self.nodes:
            node.stop()
