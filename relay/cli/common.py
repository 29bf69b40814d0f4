"""Helpers shared by CLI commands: settings and the web context with readable errors."""

from __future__ import annotations

from pathlib import Path

import click

from relay.context import WebContext
from relay.errors import ConfigError
from relay.settings import load_settings

__all__ = ["load_runtime", "load_settings"]


def load_runtime(config: Path | None = None) -> WebContext:
    settings = load_settings(config=config)
    try:
        return WebContext.build(settings)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(problem, err=True)
        raise SystemExit(1) from None
