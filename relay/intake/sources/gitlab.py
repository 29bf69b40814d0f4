"""``gitlab``: the tool's issue webhooks as ``task.*`` events (being built)."""

from __future__ import annotations

from typing import ClassVar

from relay.intake.sources.base import BaseSource
from relay.intake.sources.task_payloads import TaskSourceOptions


class GitLabOptions(TaskSourceOptions):
    """Options of the ``gitlab`` source."""


class GitLabSource(BaseSource):
    """Verifies and parses the tool's webhooks."""

    kind: ClassVar[str] = "gitlab"
    Options: ClassVar[type[TaskSourceOptions]] = GitLabOptions
