"""Helpers shared by CLI commands: settings and runtime with readable errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from relay.errors import ConfigError
from relay.runtime import Runtime
from relay.settings import Settings


def load_settings(**overrides: Any) -> Settings:
    """``Settings()`` from ``RELAY_*``; a bad value exits 2 naming the variable."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        for err in exc.errors():
            name = "RELAY_" + "_".join(str(p) for p in err["loc"]).upper() if err["loc"] else ""
            message = err["msg"].removeprefix("Value error, ")
            click.echo(f"{name + ': ' if name else ''}{message}", err=True)
        raise SystemExit(2) from None


def load_runtime(config: Path | None = None) -> Runtime:
    settings = load_settings(config=config)
    try:
        return Runtime.build(settings)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(problem, err=True)
        raise SystemExit(1) from None
