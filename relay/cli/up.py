"""``relay up``: web, worker and scheduler in one process tree, on an embedded Redis.

For a first run and development: one command, one terminal, merged logs, Ctrl-C to
stop. Production runs the same three processes from the Procfile instead.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import click

from relay.cli.supervisor import Child, Supervisor
from relay.config.loader import load_config
from relay.config.models import RelayConfig
from relay.errors import ConfigError, RelayError

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
    from relay.cli.common import load_settings
    from relay.cli.embedded import EmbeddedRedis

    settings = load_settings()
    path = (config_path or settings.config).absolute()
    config = _validated(path)
    embedded = (
        None
        if os.environ.get("RELAY_REDIS_URL")
        else EmbeddedRedis(settings.state_dir / "redis", private=True)
    )
    try:  # stop Redis on every way out, also a Ctrl-C held back while it started
        if embedded is None:
            redis_url, redis_note = settings.redis_url, "RELAY_REDIS_URL"
        else:
            embedded.start()  # refuses a server with a known RCE hole, warns of an old one
            redis_url = embedded.url
            redis_note = (
                f"embedded redis-server, data in {embedded.data_dir}, "
                f"only for you: its URL with the password is in {embedded.url_file}"
            )
        env = {
            **os.environ,
            "RELAY_REDIS_URL": redis_url,
            "RELAY_CONFIG": str(path),
            "PYTHONUNBUFFERED": "1",
        }
        children = _children(host, port, concurrency or settings.worker_concurrency, env)
        _banner(
            config,
            host,
            port,
            f"{_redact(redis_url)} ({redis_note})",
            embedded.url_file if embedded is not None else None,
        )
        code = Supervisor(children, grace=GRACE).run()
    except RelayError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        if embedded is not None:
            embedded.stop()
    sys.exit(code)


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


def _banner(
    config: RelayConfig, host: str, port: int, redis: str, url_file: Path | None = None
) -> None:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    base = f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"
    lines = ["relay up", "  hooks:"]
    lines += [f"    POST {base}/hooks/{sid}" for sid in config.sources] or ["    (no sources)"]
    send = "relay send <source>" + ("" if port == 8000 else f" --url {base}")
    lines += [
        f"  health: {base}/readyz",
        f"  redis:  {redis}",
        *([f'  other commands: export RELAY_REDIS_URL="$(cat {url_file})"'] if url_file else []),
        f"  try:    {send}",
        "  Ctrl-C to stop",
        "",
    ]
    click.echo("\n".join(lines))


def _redact(url: str) -> str:
    """The URL without its password, for the banner."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname}"
    netloc += f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=netloc))


COMMANDS = [up]
