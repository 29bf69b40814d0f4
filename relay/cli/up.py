"""``relay up``: web, worker and scheduler in one process tree, on an embedded Redis.

For a first run and development: one command, one terminal, merged logs, Ctrl-C to
stop. Production runs the same three processes from the Procfile instead.
"""

from __future__ import annotations

import errno
import os
import socket
import sys
import time
from pathlib import Path

import click
import redis

from relay.cli.discovery import RedisChoice, UpLock, mark_used, masked, published_url, unreachable
from relay.cli.supervisor import Child, Supervisor
from relay.config.loader import load_config
from relay.config.models import RelayConfig
from relay.errors import ConfigError, RelayError
from relay.settings import Settings, load_settings
from relay.state.connection import client_for

GRACE = 20.0  # celery's warm shutdown lets running deliveries finish


@click.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    help="The routing config (default: $RELAY_CONFIG or relay.yaml).",
)
@click.option(
    "--port",
    default=8000,
    show_default=True,
    envvar="RELAY_PORT",
    help="Port of the web process ($RELAY_PORT).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    help="Green threads of the worker (default: $RELAY_WORKER_CONCURRENCY or 64).",
)
def up(config_path: Path | None, port: int, host: str, concurrency: int | None) -> None:
    """Run web, worker and scheduler together; start a local Redis unless RELAY_REDIS_URL."""
    settings = load_settings()  # RELAY_REDIS_URL as given: relay up never looks for itself
    path = (config_path or settings.config).absolute()
    config = _validated(path)
    lock = UpLock(settings.state_dir)
    try:  # everything that can refuse runs before any process starts
        lock.acquire()
        _check_port(host, port)
        code = _run(settings, config, path, lock, host, port, concurrency)
    except RelayError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        lock.release()
    sys.exit(code)


def _run(
    settings: Settings,
    config: RelayConfig,
    path: Path,
    lock: UpLock,
    host: str,
    port: int,
    concurrency: int | None,
) -> int:
    from relay.cli.embedded import EmbeddedRedis

    given = os.environ.get("RELAY_REDIS_URL")
    embedded = None if given else EmbeddedRedis(settings.state_dir / "redis", private=True)
    try:  # stop Redis on every way out, also a Ctrl-C held back while it started
        if given:
            redis_url, redis_note = given, "RELAY_REDIS_URL"
            _reachable(settings, given)
        else:
            assert embedded is not None
            embedded.start()  # refuses a server with a known RCE hole, warns of an old one
            redis_url = embedded.url
            shown = ".".join(map(str, embedded.version or ()))
            redis_note = f"embedded redis-server {shown}, data in {embedded.data_dir}"
            _mark(settings, redis_url)
        base = _base(host, port)
        lock.publish(
            web=base,
            host=host,
            port=port,
            embedded=embedded is not None,
            redis_url=given,  # the embedded one's is in its own 0600 url file
            started_at=time.time(),
            config=str(path),
        )
        env = {
            **os.environ,
            "RELAY_REDIS_URL": redis_url,
            "RELAY_CONFIG": str(path),
            "PYTHONUNBUFFERED": "1",
        }
        children = _children(host, port, concurrency or settings.worker_concurrency, env)
        _banner(config, base, port, f"{masked(redis_url)} ({redis_note})", settings.state_dir)
        return Supervisor(children, grace=GRACE).run()
    finally:
        if embedded is not None:
            embedded.stop()


def _check_port(host: str, port: int) -> None:
    """Refuse a port another process listens on, before anything starts (gunicorn would
    retry it for seconds while the worker and scheduler already run)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn binds
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise RelayError(
                    f"port {port} on {host} is already in use: choose another with --port "
                    f"(relay up --port {port + 1 if port < 65535 else 8001})"
                ) from None
            raise RelayError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def _reachable(settings: Settings, url: str) -> None:
    """Ping RELAY_REDIS_URL within about ``RELAY_REDIS_TIMEOUT`` or refuse it in one line,
    naming a URL left over from an earlier relay up as such."""
    state_dir = settings.state_dir
    choice = RedisChoice(url, "RELAY_REDIS_URL", state_dir, None, published_url(state_dir))
    try:
        _mark(settings, url)
    except redis.RedisError as exc:
        raise RelayError(unreachable(choice, exc)) from None
    except ConfigError as exc:  # a malformed Sentinel URL
        raise RelayError("; ".join(exc.problems)) from None
    except ValueError as exc:  # not a redis:// URL at all
        raise RelayError(f"RELAY_REDIS_URL is not a Redis URL: {exc}") from None


def _mark(settings: Settings, url: str) -> None:
    """Note in ``url``'s Redis (one server or a Sentinel-guarded master) that a relay uses it."""
    timeout = settings.redis_timeout
    client = client_for(
        url,
        sentinel_password=settings.redis_sentinel_password,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
    )
    try:
        mark_used(client)
    finally:
        client.close()


def _validated(path: Path) -> RelayConfig:
    """The config, or exit 1 naming every problem (and how to get a first file)."""
    try:
        return load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(problem, err=True)
        if not path.exists():
            click.echo("Write a starter config with `relay init`.", err=True)
        sys.exit(1)


def worker_command(concurrency: int, *extra: str) -> list[str]:
    """The Celery worker as the Procfile runs it: every queue, gevent, no gossip."""
    return [
        sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker",
        "-P", "gevent", "-c", str(concurrency), "--without-gossip", "--without-mingle",
        "--loglevel", "INFO", *extra,
    ]  # fmt: skip


def _children(host: str, port: int, concurrency: int, env: dict[str, str]) -> list[Child]:
    py = sys.executable
    web_env = {"WEB_CONCURRENCY": "2", **env}  # a dev run needs no process per core
    bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return [
        Child(
            "web",
            [
                py,
                "-m",
                "gunicorn",
                "-c",
                "python:relay.gunicorn_conf",
                "--bind",
                bind,
                "relay.wsgi:app",
            ],
            web_env,
        ),
        Child("worker", worker_command(concurrency), env),
        Child("scheduler", [py, "-m", "relay.cli", "scheduler"], env),
    ]


def _base(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    return f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"


def _banner(config: RelayConfig, base: str, port: int, redis_line: str, state_dir: Path) -> None:
    lines = ["relay up", "  hooks:"]
    lines += [f"    POST {base}/hooks/{sid}" for sid in config.sources] or ["    (no sources)"]
    send = "relay send <source>" + ("" if port == 8000 else f" --url {base}")
    here = "" if state_dir == Path(".relay") else f" with RELAY_STATE_DIR={state_dir}"
    lines += [
        f"  dashboard: {base}/dashboard/",
        f"  api:       {base}/api/v1  (Authorization: Bearer <key>)",
        f"  health:    {base}/readyz",
        f"  redis:     {redis_line}",
        "  first admin key:  relay keys create admin --scope admin",
        f"  try:       {send}",
        f"  Other shells in this folder{here} find this relay by themselves, no export "
        "needed: relay status",
        "  Ctrl-C to stop",
        "",
    ]
    click.echo("\n".join(lines))


COMMANDS = [up]
