"""What a project-management client is asked to do, what it answers, and how it fails.

Every tool adapter speaks in these types, so the shared flow (``workers.pm.flow``)
never knows which tool it drives. Failures follow three classes:

* ``RetryableDeliveryError`` / ``TargetThrottled``: the tool *rejected* the call (429,
  secondary rate limit, "retry later" code); the same call is safe to repeat.
* ``AmbiguousOutcome``: the call may have taken effect (timeout after sending,
  connection reset, 5xx on a POST); the flow looks the task up before trying again.
* ``PermanentDeliveryError``: validation or auth; the tool's own message is kept.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Protocol

from relay.errors import RetryableDeliveryError

MARKER_PREFIX = "group-relay:"
RELAY_LABEL = "group-relay"


class AmbiguousOutcome(RetryableDeliveryError):
    """The call may or may not have taken effect: reconcile before repeating it."""


class AssigneeRefused(Exception):  # noqa: N818 - a refusal, not a crash
    """The tool refused one or more assignees; the task exists (or will) without them."""

    def __init__(self, refused: Sequence[str], reason: str) -> None:
        self.refused = list(refused)
        self.reason = reason
        super().__init__(f"{', '.join(refused)}: {reason}")


@dataclass(frozen=True)
class Assignee:
    """A person named in the message: how the chat called them and, when the people map
    knows them, their account on the target tool."""

    name: str
    account: str | None = None


@dataclass(frozen=True)
class TaskSpec:
    """A task to create. ``marker`` is unique per delivery: clients embed it (hidden) in
    the body so ``find`` can recognise a task an earlier attempt created."""

    title: str
    body: str  # Markdown; clients convert it (Jira to ADF)
    marker: str
    idempotency_key: str  # stable per delivery: Linear id, Feishu client_token, DingTalk sourceId
    labels: tuple[str, ...] = ()
    due: date | None = None
    priority: str | None = None  # p1 (highest) .. p4
    assignees: tuple[Assignee, ...] = ()
    link: str | None = None  # the chat message's URL, where the platform has one


@dataclass(frozen=True)
class TaskRef:
    """A task in the tool: ``key`` is what people type (``OPS-12``, ``#12``), ``id`` what
    the API takes, ``url`` where a browser opens it."""

    key: str
    id: str
    url: str | None = None
    extra: dict[str, str] = field(default_factory=dict)  # e.g. the DingTalk executor


class PmClient(Protocol):
    """One tool's API, as the shared flow uses it. Every method raises the three
    failure classes above; ``create`` and ``comment`` must not be retried inside the
    client (the flow reconciles first)."""

    native_idempotency: bool  # the tool dedupes creates by ``idempotency_key`` itself

    def find(self, spec: TaskSpec) -> TaskRef | None:
        """The task an earlier attempt created for ``spec.marker``/key, if any."""
        ...

    def create(self, spec: TaskSpec) -> TaskRef:
        """Create the task, with the assignees that have accounts. Raises
        ``AssigneeRefused`` if the tool refused them *and created nothing*: the flow
        then creates again without assignees."""
        ...

    def lookup(self, key: str) -> TaskRef | None:
        """A task by the key people type (``OPS-12``, ``#12``, ``12``), or None."""
        ...

    def assign(self, task: TaskRef, accounts: Sequence[str]) -> None:
        """Add assignees; ``AssigneeRefused`` names those the tool refused."""
        ...

    def close(self, task: TaskRef) -> None: ...

    def reopen(self, task: TaskRef) -> None: ...

    def comment(self, task: TaskRef, text: str, marker: str) -> None:
        """Add a comment carrying ``marker`` (hidden where the tool allows)."""
        ...


def marker_for(delivery_id: str, step: str = "create") -> str:
    """The hidden marker of one step of one delivery (``group-relay:<hex>``)."""
    digest = hashlib.sha256(f"{delivery_id}\n{step}".encode()).hexdigest()[:24]
    return f"{MARKER_PREFIX}{digest}"


def idempotency_uuid(delivery_id: str) -> str:
    """A UUID v4-shaped id derived from the delivery id: the same on every attempt."""
    raw = bytearray(hashlib.sha256(delivery_id.encode()).digest()[:16])
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    return str(uuid.UUID(bytes=bytes(raw)))
