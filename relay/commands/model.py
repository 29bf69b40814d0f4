"""``Command``: what a chat message asks of a project-management target."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from typing import Any


class Verb(StrEnum):
    TASK = "task"  # create a task
    DONE = "done"  # close the linked task
    REOPEN = "reopen"
    ASSIGN = "assign"  # add the mentioned people as assignees
    COMMENT = "comment"  # add the rest of the message as a comment


FOLLOW_UPS = frozenset({Verb.DONE, Verb.REOPEN, Verb.ASSIGN, Verb.COMMENT})


@dataclass(frozen=True)
class Command:
    """A parsed message. ``verb`` is None for ordinary chat. ``assignees`` are the ids
    of the event's mentions (``Party.id``) named as assignees, in order; ``unknown``
    are ``@names`` that match no mention. ``ignored`` says, in the message's language,
    what could not be read (a date that does not exist, an unknown priority), so the
    task is created with the rest and the group is told."""

    verb: Verb | None
    title: str = ""
    assignees: tuple[str, ...] = ()
    unknown: tuple[str, ...] = ()
    due: date | None = None
    labels: tuple[str, ...] = ()
    priority: str | None = None  # p1 (highest) .. p4
    reference: str | None = None  # an explicit task key: OPS-123, #12
    comment: str | None = None  # the text of a ``comment`` follow-up
    ignored: tuple[str, ...] = ()
    language: str = "en"  # "zh" when the command word was Chinese

    def as_dict(self) -> dict[str, Any]:
        """The parse as templates see it (``command.title``, ``command.due``, ...)."""
        return {
            "verb": self.verb.value if self.verb else None,
            "title": self.title,
            "assignees": list(self.assignees),
            "unknown": list(self.unknown),
            "due": self.due.isoformat() if self.due else None,
            "labels": list(self.labels),
            "priority": self.priority,
            "reference": self.reference,
            "comment": self.comment,
            "ignored": list(self.ignored),
            "language": self.language,
        }
