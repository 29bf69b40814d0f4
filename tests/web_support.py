"""Helpers for tests that run the web process as production does: gunicorn with the
packaged settings (``relay/gunicorn_conf.py``), optionally behind nginx with
``deploy/nginx.conf``, and clients that speak raw HTTP over sockets.

Shared by ``tests/intake/test_body_deadline.py`` and ``tests/chaos/test_slow_clients.py``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from relay import signing
from relay.cli.embedded import free_port
from tests.conftest import ROOT, TEST_ENV, TEST_SECRET, wait_for

NGINX_APT = "apt-get install -y nginx-light"


def signed_request(host: str, port: int, text: str = "hi") -> bytes:
    """A complete signed Standard Webhooks POST to ``/hooks/ops``, as raw bytes."""
    body = json.dumps({"type": "message.created", "data": {"text": text}}).encode()
    msg_id = f"msg_{time.monotonic_ns()}"
    stamp = str(int(time.time()))
    sig = signing.sign_header([signing.decode_secret(TEST_SECRET)], msg_id, stamp, body)
    head = (
        f"POST /hooks/ops HTTP/1.1\r\nHost: {host}:{port}\r\n"
        "Content-Type: application/json\r\nConnection: close\r\n"
        f"webhook-id: {msg_id}\r\nwebhook-timestamp: {stamp}\r\n"
        f"webhook-signature: {sig}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def slow_head(host: str, port: int, length: int = 4096) -> bytes:
    """The head of a POST whose body will come a byte at a time (or never)."""
    return (
        f"POST /hooks/ops HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n{{"
    ).encode()


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and body of one HTTP/1.1 answer."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed after {len(data)} bytes of head")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "-1"))
    while length >= 0 and len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, headers, body


def post(host: str, port: int, text: str = "hi", timeout: float = 30.0) -> tuple[int, bytes]:
    """One signed event on a fresh connection: (status, body)."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(signed_request(host, port, text))
        status, _, body = read_response(sock)
    return status, body


def ops_config_file(directory: Path) -> Path:
    """The ``ops`` source alone: intake needs no target to accept an event."""
    path = directory / "relay.yaml"
    path.write_text(
        json.dumps(
            {"sources": [{"id": "ops", "kind": "standard_webhooks", "secrets": [TEST_SECRET]}]}
        )
    )
    return path


class Gunicorn:
    """``gunicorn -c python:relay.gunicorn_conf relay.wsgi:app`` on a free loopback port."""

    def __init__(
        self, directory: Path, redis_url: str, *args: str, name: str = "gunicorn", **env: str
    ) -> None:
        self.port = free_port()
        self.log_path = directory / f"{name}.log"
        full_env = {
            **os.environ,
            **TEST_ENV,
            "RELAY_REDIS_URL": redis_url,
            "RELAY_CONFIG": str(ops_config_file(directory)),
            "RELAY_BIND": f"127.0.0.1:{self.port}",
            "RELAY_LOG_LEVEL": "WARNING",
            **env,
        }
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", "python:relay.gunicorn_conf", *args]
                + ["relay.wsgi:app"],
                env=full_env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for(self._ready, timeout=30)

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited: {self.log()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                return read_response(sock)[0] == 200
        except OSError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        stop_group(self.proc)


class Nginx:
    """nginx in the foreground with ``deploy/nginx.conf`` (ports and paths rewritten for
    a temporary prefix), proxying to ``upstream_port`` on loopback."""

    def __init__(self, directory: Path, upstream_port: int, max_body: str = "1m") -> None:
        binary = nginx_binary()
        if binary is None:
            raise RuntimeError(f"nginx is not installed ({NGINX_APT})")
        self.port = free_port()
        prefix = directory / "nginx"
        (prefix / "logs").mkdir(parents=True, exist_ok=True)
        self.conf = prefix / "nginx.conf"
        self.conf.write_text(nginx_conf(prefix, self.port, upstream_port, max_body))
        with open(prefix / "logs" / "stderr.log", "ab") as log:  # the child keeps its own fd
            self.proc = subprocess.Popen(
                [binary, "-p", str(prefix), "-c", str(self.conf)]
                + ["-e", str(prefix / "logs" / "error.log")],
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
            )
        wait_for(self._ready, timeout=15)

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError("nginx exited; see its logs/stderr.log")
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def stop(self) -> None:
        stop_group(self.proc)


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )


def nginx_conf(prefix: Path, port: int, upstream_port: int, max_body: str) -> str:
    """``deploy/nginx.conf`` for a test: foreground, a temp prefix, loopback ports.

    Only the lines marked for it in the shipped file are rewritten, so the test runs
    the production settings (buffering, timeouts, limits) as they are.
    """
    text = (ROOT / "deploy" / "nginx.conf").read_text()
    replacements: dict[str, str] = {
        r"^user .*;$": "",
        r"^pid .*;$": f"pid {prefix}/nginx.pid;\ndaemon off;",
        r"^error_log .*;$": f"error_log {prefix}/logs/error.log warn;",
        r"access_log [^;]+;": "access_log off;",
        r"server web:8000;": f"server 127.0.0.1:{upstream_port};",
        r"listen 80;": f"listen 127.0.0.1:{port};",
        r"client_max_body_size [^;]+;": f"client_max_body_size {max_body};",
        r"^include /etc/nginx/mime.types;$": "",
    }
    for pattern, value in replacements.items():
        text, count = re.subn(pattern, value, text, flags=re.MULTILINE)
        if count == 0 and "mime" not in pattern and "user" not in pattern:
            raise AssertionError(f"deploy/nginx.conf no longer has a line matching {pattern}")
    for directive in ("client_body_temp_path", "proxy_temp_path"):
        text = text.replace("http {", f"http {{\n    {directive} {prefix}/{directive};", 1)
    return text


def stop_group(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
