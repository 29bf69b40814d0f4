"""``github``: the tool's issue webhooks as ``task.*`` events (being built)."""

from __future__ import annotations

from typing import ClassVar

from relay.intake.sources.base import BaseSource
from relay.intake.sources.task_payloads import TaskSourceOptions


class GitHubOptions(TaskSourceOptions):
    """Options of the ``github`` source."""


class GitHubSource(BaseSource):
    """Verifies and parses the tool's webhooks."""

    kind: ClassVar[str] = "github"
    Options: ClassVar[type[TaskSourceOptions]] = GitHubOptions
