"""``file`` target: append one JSON line per delivery to ``<path>/<target id>.jsonl``.

Useful as an audit trail, for local development, and as a sink other tools tail.
Lines are written with ``O_APPEND`` under an exclusive ``flock`` and fsynced before
the delivery counts as done, so concurrent workers (threads or processes) never
interleave partial lines and a success survives a crash. Delivery is at least once:
a retried delivery can appear twice, with the same ``delivery_id``.
"""

from __future__ import annotations

import fcntl
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

from pydantic import ValidationInfo, field_validator

from relay.config.models import TargetConfig
from relay.errors import ConfigError, RetryableDeliveryError
from workers.targets.base import BaseTarget, DeliveryContext, DeliveryResult, TargetOptions


class FileOptions(TargetOptions):
    """What a ``file`` target adds to the common target fields."""

    path: Path

    @field_validator("path", mode="before")
    @classmethod
    def _not_empty(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():  # Path("") would mean "."
            raise ValueError("the path of a directory is required")
        return value

    @field_validator("path")
    @classmethod
    def _expand(cls, value: Path, info: ValidationInfo) -> Path:
        """``~`` expands; a relative path is relative to the config file's folder."""
        value = value.expanduser()
        base = info.context.get("base_dir") if isinstance(info.context, dict) else None
        return value if value.is_absolute() or base is None else Path(base) / value


class FileTarget(BaseTarget):
    """Append deliveries as JSON lines to one file per target."""

    kind: ClassVar[str] = "file"
    family: ClassVar[str] = "storage"
    Options: ClassVar[type[FileOptions]] = FileOptions

    def __init__(self, config: TargetConfig) -> None:
        super().__init__(config)
        options = config.options
        if not isinstance(options, FileOptions):
            options = FileOptions.model_validate(options or {})
        if options.path.exists() and not options.path.is_dir():
            raise ConfigError([f"targets.{config.id}.path: {options.path} is not a directory"])
        self.options: FileOptions = options
        self.file = options.path / f"{config.id}.jsonl"

    def line(self, context: DeliveryContext) -> bytes:
        """One record, compact JSON and a newline; the event as an object, not a string."""
        record = {
            "delivery_id": context.delivery_id,
            "attempt": context.attempt,
            "delivered_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "event": json.loads(context.event_json),
        }
        return (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode()

    def deliver(self, context: DeliveryContext) -> DeliveryResult:
        data = self.line(context)
        try:
            self.options.path.mkdir(parents=True, exist_ok=True)
            append_line(self.file, data)
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise RetryableDeliveryError(f"cannot append to {self.file}: {reason}") from None
        return DeliveryResult(excerpt=f"appended {len(data)} bytes to {self.file}")


def append_line(file: Path, data: bytes) -> None:
    """Append ``data`` whole or not at all: exclusive lock, write, fsync, unlock."""
    fd = os.open(file, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # a separate open per call, so threads exclude too
        size = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except OSError:
            os.ftruncate(fd, size)  # no half line left behind (disk full mid-write)
            raise
    finally:
        os.close(fd)  # closing releases the lock
