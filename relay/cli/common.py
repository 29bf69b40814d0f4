"""Helpers shared by CLI commands: settings with the right Redis, the web context, and
the one place where a Redis failure becomes a one-line error instead of a traceback.

Every command that needs Redis gets it from ``load_settings`` / ``load_runtime``, which
pick ``RELAY_REDIS_URL``, else a running ``relay up`` in the state folder, else the
default (``relay.cli.discovery``) and remember the choice in the click context, so
``RelayGroup`` can name the URL it tried when Redis fails.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import redis

from relay.cli.discovery import RedisChoice, choose_redis, never_used, unreachable, used_by_relay
from relay.config.loader import load_config
from relay.context import WebContext
from relay.errors import ConfigError
from relay.settings import Settings
from relay.settings import load_settings as _load_settings

__all__ = ["RelayGroup", "load_runtime", "load_settings", "verbose_option"]

CHOICE = "relay.redis_choice"  # key of the RedisChoice in click's shared ``Context.meta``
VERBOSE = "relay.verbose"


def _meta() -> dict[str, Any]:
    ctx = click.get_current_context(silent=True)
    return ctx.meta if ctx is not None else {}


def load_settings(**overrides: Any) -> Settings:
    """Settings with the Redis this command should use (see the module docstring);
    ``--verbose`` prints which one and why on stderr."""
    settings = _load_settings(**overrides)
    if "redis_url" in overrides:
        return settings
    choice = choose_redis(settings.state_dir)
    meta = _meta()
    meta[CHOICE] = choice
    if meta.get(VERBOSE):
        click.echo(choice.line(), err=True)
    return settings.model_copy(update={"redis_url": choice.url})


def redis_choice() -> RedisChoice | None:
    """The Redis the running command chose, once ``load_settings`` has run."""
    found = _meta().get(CHOICE)
    return found if isinstance(found, RedisChoice) else None


def load_runtime(
    config: Path | None = None, *, resolve_secrets: bool = True, check_used: bool = True
) -> WebContext:
    """The web context of an operator command, on the Redis ``load_settings`` picks.

    ``resolve_secrets=False``: an unset ``${NAME}`` in a source's or target's options
    does not stop a command that only looks or acts on queues (``relay.config.loader``).
    ``check_used``: refuse, in one line, a Redis that no relay has ever used, instead of
    showing its emptiness as zeros (the relay's own processes, such as ``relay poll``,
    pass False: they may be the first to use it)."""
    settings = load_settings(config=config)
    try:
        loaded = (
            None
            if resolve_secrets
            else load_config(settings.config, with_targets=False, resolve_secrets=False)
        )
        runtime = WebContext.build(settings, loaded)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(problem, err=True)
        raise SystemExit(1) from None
    choice = redis_choice()
    if check_used and choice is not None and not used_by_relay(runtime.redis):
        click.echo(f"relay: {never_used(choice)}", err=True)
        raise SystemExit(1)
    return runtime


class RelayGroup(click.Group):
    """The ``relay`` group: a Redis error in any command ends it with one line naming the
    URL it tried, why that one, and what went wrong; exit 1, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except redis.RedisError as exc:
            choice = ctx.meta.get(CHOICE)
            if isinstance(choice, RedisChoice):
                click.echo(f"relay: {unreachable(choice, exc)}", err=True)
            else:
                click.echo(f"relay: Redis error: {exc}", err=True)
            ctx.exit(1)


def _set_verbose(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        ctx.meta[VERBOSE] = True


def verbose_option() -> click.Option:
    """``--verbose``: print which Redis the command uses and why (on stderr)."""
    return click.Option(
        ["--verbose"],
        is_flag=True,
        expose_value=False,
        is_eager=True,
        callback=_set_verbose,
        help="Say which Redis this command uses and why (on stderr).",
    )


def add_verbose(command: click.Command) -> None:
    """Give ``command`` and, for a group, every subcommand a ``--verbose`` option."""
    if not any(p.name == "verbose" for p in command.params):
        command.params.append(verbose_option())
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            add_verbose(sub)
