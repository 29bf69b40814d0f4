"""What every project-management source shares: options, signatures, the relay's marker.

A project-management tool's webhook (Jira, GitHub, GitLab, Linear) becomes a
``task.*`` event whose ``task`` says what changed. A change the relay itself made (a
comment it posted carries its hidden marker ``group-relay:<24 hex>``; any change by an
account listed in ``relay_accounts``) is flagged ``by_relay`` here, so the workers
never post it back into the group it came from.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence
from datetime import UTC, datetime

from pydantic import ConfigDict, Field, field_validator

from relay.events import GroupEvent, Party, TaskChange
from relay.intake.sources.base import SourceOptions

# the marker with the wrappers the relay's PM targets put around it: an HTML comment
# (GitHub, GitLab), inline code (Linear), Jira wiki markup's grey small text, or bare
_MARKER = re.compile(
    r"\s*(?:<!--\s*)?(?:\{color:#[0-9a-fA-F]{6}\}~)?`?group-relay:[0-9a-f]{24}`?"
    r"(?:~\{color\})?(?:\s*-->)?\s*"
)


class TaskSourceOptions(SourceOptions):
    """Options every project-management source takes."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    secrets: list[str] = Field(
        min_length=1,
        repr=False,
        description="The webhook's signing secrets; several while rotating.",
    )
    relay_accounts: list[str] = Field(
        default_factory=list,
        description="The ids, logins or emails of the account the relay's targets act as "
        "on this tool: its changes are echoes and are never posted back into a group.",
    )

    @field_validator("secrets")
    @classmethod
    def _usable(cls, value: list[str]) -> list[str]:
        """An empty secret is an unset variable, and a key anyone could sign with."""
        for i, secret in enumerate(value):
            if not secret:
                raise ValueError(f"secrets[{i}] is empty (is its environment variable set?)")
            if "\r" in secret or "\n" in secret:
                raise ValueError(f"secrets[{i}] has a line break, which a header cannot carry")
        return value


def strip_marker(text: str | None) -> tuple[str | None, bool]:
    """The text without the relay's hidden marker, and whether it carried one."""
    if not text:
        return text, False
    stripped, found = _MARKER.subn("\n", text)
    return (stripped.strip() if found else text), bool(found)


def signature_matches(
    secrets: Sequence[str], body: bytes, given: str | None, *, algorithm: str = "sha256"
) -> bool:
    """True if ``given`` is the hex HMAC of ``body`` under any of ``secrets``; compared
    in constant time, case-insensitively (hex)."""
    if not given:
        return False
    given = given.strip().lower()
    found = False
    for secret in secrets:
        digest = hmac.new(secret.encode(), body, getattr(hashlib, algorithm)).hexdigest()
        found |= hmac.compare_digest(digest, given)
    return found


def by_relay_account(actor: Party | None, relay_accounts: Sequence[str]) -> bool:
    """True if ``actor`` is one of the accounts the relay acts as (id or name)."""
    if actor is None or not relay_accounts:
        return False
    names = {actor.id, actor.name or ""}
    return any(account in names for account in relay_accounts)


def task_event(
    *,
    source_id: str,
    type: str,
    change: TaskChange,
    occurred_at: datetime | None = None,
    raw: object = None,
) -> GroupEvent:
    """A ``task.*`` event: the actor is its sender, the text a one-line summary."""
    summary = f"{change.key} {type.removeprefix('task.')}"
    if change.title:
        summary += f": {change.title}"
    return GroupEvent.model_validate(
        {
            "source": source_id,
            "type": type,
            "occurred_at": occurred_at or datetime.now(UTC),
            "sender": change.actor,
            "text": summary[:4096],
            "task": change,
            "raw": raw,
        }
    )
