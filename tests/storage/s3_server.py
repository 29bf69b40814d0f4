"""A real S3 API for the tests: ``moto_server`` in its own process on a free loopback port.

Out of process rather than ``ThreadedMotoServer``: moto keeps every object in memory,
which would count against the test process (and the benchmark's RSS figures), and a
separate process can be started with authentication switched on
(``INITIAL_NO_AUTH_ACTION_COUNT``) without touching the settings of any other moto in
the run. Requests go over real HTTP, signed by boto3 as against AWS.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relay.cli.embedded import free_port

REGION = "us-east-1"
ACCESS_KEY = "AKIAMOTOTESTKEY00001"
SECRET_KEY = "moto-test-secret-Zq8Wv3Nx5Rt1Lp7Ks2"


@dataclass
class MotoServer:
    url: str
    process: subprocess.Popen[bytes]

    def client(self, access_key: str = ACCESS_KEY, secret_key: str = SECRET_KEY) -> Any:
        """A boto3 S3 client for the test's own set-up and checks."""
        return make_client(self.url, "s3", access_key, secret_key)


def make_client(url: str, service: str, access_key: str, secret_key: str) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(
        s3={"addressing_style": "path"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        retries={"total_max_attempts": 1},
    )
    return boto3.client(
        service,
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=config,
    )


def _wait(port: int, process: subprocess.Popen[bytes], log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto_server exited early:\n{log.read_text(errors='replace')}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"moto_server did not listen on 127.0.0.1:{port} in {timeout}s")


@contextmanager
def moto_server(log_dir: Path, **env: str) -> Iterator[MotoServer]:
    """``moto_server`` on 127.0.0.1 with ``env`` added to its environment; stopped (its
    whole process group) on exit."""
    port = free_port()
    log = log_dir / f"moto-{port}.log"
    child_env = {**os.environ, "AWS_DEFAULT_REGION": REGION, **env}
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            env=child_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        _wait(port, process, log)
        yield MotoServer(f"http://127.0.0.1:{port}", process)
    finally:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(10)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
