"""Infrastructure settings from ``RELAY_*`` environment variables, shared by web, worker and CLI.

The routing config (sources, targets, routes) lives in the YAML file named by
``RELAY_CONFIG``; this object holds only how the relay runs. It is read when a process
starts (``Settings()``), never at import time, so tests pass their own.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from relay.config.units import Duration, Size


class Settings(BaseSettings):
    """How this relay process runs; every field maps to ``RELAY_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="RELAY_", extra="ignore", frozen=True)

    config: Path = Field(Path("relay.yaml"), description="Path of the YAML routing config.")
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis for queues and records.")
    redis_timeout: Duration = Field(
        2.0,
        gt=0,
        description=(
            "How long a caller (intake, poller, API, dashboard, CLI) waits for one Redis "
            "call before answering 503; also the socket timeout of background loops."
        ),
    )
    redis_sentinel_password: str | None = Field(
        None,
        repr=False,
        description="Password of the Sentinels named by a redis+sentinel:// RELAY_REDIS_URL, "
        "if they require one (the URL's own password is the data servers').",
    )
    redis_min_replicas: int = Field(
        0,
        ge=0,
        description=(
            "Replicas that must confirm an accepted event (and an operator's replay or "
            "pause) before the relay answers 2xx; fewer within RELAY_REDIS_REPLICA_TIMEOUT "
            "is a 503. 0: answer once the primary has it."
        ),
    )
    redis_replica_timeout: Duration = Field(
        0.5,
        gt=0,
        description="How long a caller waits for RELAY_REDIS_MIN_REPLICAS confirmations.",
    )
    max_body: Size = Field(1024 * 1024, description="Largest accepted request body.")
    retention: Duration = Field(7 * 86400, description="How long event and delivery records live.")
    task_link_retention: Duration = Field(
        90 * 86400,
        gt=0,
        description="How long a chat message and the task it created stay linked: replies "
        "in its thread act on the task, and the tool's changes are told there.",
    )
    dedupe_ttl: Duration | None = Field(
        None, description="Override of every source's dedupe window (else per source kind)."
    )
    visibility_timeout: Duration = Field(
        3600, description="Broker visibility timeout; unacked tasks older than this are redone."
    )
    task_time_limit: Duration = Field(300, description="Hard limit of one task run.")
    http_timeout: Duration = Field(15, description="Default timeout of one outbound request.")
    scheduler_interval: Duration = Field(0.2, description="How often the scheduler polls.")
    worker_concurrency: int = Field(64, ge=1, description="Green threads per worker process.")
    state_dir: Path = Field(Path(".relay"), description="Where `relay up` keeps embedded Redis.")
    liveness_file: Path | None = Field(
        None,
        description="A file the scheduler, poller and workers touch as their loop turns, "
        "for a liveness probe (`relay alive`); unset: none. See docs/kubernetes.md.",
    )
    secret_key: str | None = Field(
        None,
        repr=False,
        description=(
            "Signs the dashboard's session cookies and CSRF tokens. Unset: the first web "
            "process generates one and stores it in Redis (SET NX, relay:dashboard:secret_key) "
            "so every gunicorn worker shares it; set it to keep sessions across a Redis reset."
        ),
    )
    encryption_keys: str | None = Field(
        None,
        repr=False,
        description=(
            "Seal event payloads, attempt excerpts and errors, dead-letter copies and "
            "chained-delivery variables in Redis (AES-256-GCM-SIV): one or more keys, "
            "newest first, comma-separated; each 32 random bytes in URL-safe base64 "
            "(`relay keys new-data-key`). New writes use the first; reads use the one a "
            "value names. Unset: stored in plain text. See docs/encryption.md."
        ),
    )
    log_level: str = Field("INFO")
    log_format: str = Field("console", pattern="^(json|console)$")

    @model_validator(mode="after")
    def _limits_fit_visibility_timeout(self) -> Settings:
        """A task must end well before the broker would hand its message to another worker."""
        if self.task_time_limit >= self.visibility_timeout:
            raise ValueError(
                "RELAY_TASK_TIME_LIMIT must be shorter than RELAY_VISIBILITY_TIMEOUT "
                f"({self.task_time_limit:g}s >= {self.visibility_timeout:g}s)"
            )
        if self.http_timeout * 2 >= self.task_time_limit:
            raise ValueError(
                "RELAY_HTTP_TIMEOUT must be under half of RELAY_TASK_TIME_LIMIT "
                f"({self.http_timeout:g}s vs {self.task_time_limit:g}s)"
            )
        return self

    @model_validator(mode="after")
    def _replica_wait_fits_redis_timeout(self) -> Settings:
        """The wait for replicas rides on the write's own call, which a caller gives up on
        after ``redis_timeout``: a longer wait would read as Redis stalling."""
        if self.redis_min_replicas and self.redis_replica_timeout >= self.redis_timeout:
            raise ValueError(
                "RELAY_REDIS_REPLICA_TIMEOUT must be shorter than RELAY_REDIS_TIMEOUT "
                f"({self.redis_replica_timeout:g}s >= {self.redis_timeout:g}s)"
            )
        return self


def load_settings(**overrides: Any) -> Settings:
    """``Settings()`` from ``RELAY_*`` for a process entry point (CLI, Celery app); a bad
    value exits 2 naming the variable, instead of a traceback."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        for err in exc.errors():
            name = "RELAY_" + "_".join(str(p) for p in err["loc"]).upper() if err["loc"] else ""
            message = err["msg"].removeprefix("Value error, ")
            print(f"{name + ': ' if name else ''}{message}", file=sys.stderr)
        raise SystemExit(2) from None
