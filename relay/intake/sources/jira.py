"""``jira``: the tool's issue webhooks as ``task.*`` events (being built)."""

from __future__ import annotations

from typing import ClassVar

from relay.intake.sources.base import BaseSource
from relay.intake.sources.task_payloads import TaskSourceOptions


class JiraOptions(TaskSourceOptions):
    """Options of the ``jira`` source."""


class JiraSource(BaseSource):
    """Verifies and parses the tool's webhooks."""

    kind: ClassVar[str] = "jira"
    Options: ClassVar[type[TaskSourceOptions]] = JiraOptions
