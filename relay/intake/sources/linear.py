"""``linear``: the tool's issue webhooks as ``task.*`` events (being built)."""

from __future__ import annotations

from typing import ClassVar

from relay.intake.sources.base import BaseSource
from relay.intake.sources.task_payloads import TaskSourceOptions


class LinearOptions(TaskSourceOptions):
    """Options of the ``linear`` source."""


class LinearSource(BaseSource):
    """Verifies and parses the tool's webhooks."""

    kind: ClassVar[str] = "linear"
    Options: ClassVar[type[TaskSourceOptions]] = LinearOptions
