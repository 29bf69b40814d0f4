"""Structured logs (structlog) for web, worker and CLI, JSON in production."""

from __future__ import annotations

import logging
import sys
from typing import TextIO, cast

import structlog

from relay.settings import Settings


class _CurrentStderr:
    """Whatever ``sys.stderr`` is when a line is written: loggers are cached on first
    use, and a test runner or daemon may swap the stream after that."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def quiet_celery_task_lines(settings: Settings) -> None:
    """Celery's own "received"/"succeeded" lines per task only at DEBUG.

    Every delivery already logs one structured line with its ids and outcome; two more
    unstructured lines per task cost a worker noticeable CPU at hundreds of tasks a second.
    """
    if settings.log_level.upper() != "DEBUG":
        for name in ("celery.app.trace", "celery.worker.strategy"):
            logging.getLogger(name).setLevel(logging.WARNING)


def configure_logging(settings: Settings) -> None:
    level = getattr(logging, settings.log_level.upper(), logging.INFO)
    # urllib3 logs each request's path at DEBUG, and paths carry tokens (Telegram's
    # /bot<token>/..., DingTalk's ?access_token=...): never below INFO.
    logging.getLogger("urllib3").setLevel(max(level, logging.INFO))
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if settings.log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(cast(TextIO, _CurrentStderr())),
        cache_logger_on_first_use=True,
    )
