"""The ``people`` map: one person's ids across platforms, so mentions survive the hop.

A DingTalk message that @-mentions ``manager4521`` reaches Feishu as a real
``<at user_id="ou_…">``, Slack as ``<@U…>`` and email as a recipient, because the
config says those ids are the same person::

    people:
      ada: {name: Ada, dingtalk: manager4521, feishu: ou_7d8a6e6df7, slack: U024BE7LH,
            email: ada@example.com}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from relay.events import GroupEvent

Platform = Literal[
    "dingtalk",
    "dingtalk_mobile",
    "dingtalk_union",
    "feishu",
    "slack",
    "wecom",
    "telegram",
    "email",
    "jira",
    "github",
    "gitlab",
    "linear",
]
PLATFORMS: tuple[str, ...] = Platform.__args__  # type: ignore[attr-defined]

# Which of a person's ids a source kind's mentions carry.
SOURCE_PLATFORMS: dict[str, tuple[str, ...]] = {
    "dingtalk_robot": ("dingtalk", "dingtalk_mobile"),
    "dingtalk_events": ("dingtalk", "dingtalk_mobile"),
    "feishu": ("feishu",),
    "slack": ("slack",),
    "wecom": ("wecom",),
    "telegram": ("telegram",),
}


class Person(BaseModel):
    """One person; each field is their id on that platform."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(None, description="Display name used in rendered messages.")
    dingtalk: str | None = Field(None, description="DingTalk userId (staff id).")
    dingtalk_mobile: str | None = Field(None, description="Mobile number DingTalk @-mentions by.")
    feishu: str | None = Field(None, description="Feishu/Lark open_id (ou_...).")
    slack: str | None = Field(None, description="Slack user id (U...).")
    wecom: str | None = Field(None, description="WeCom userid.")
    telegram: str | None = Field(None, description="Telegram user id or @username.")
    email: str | None = Field(None, pattern=r"^[^@\s]+@[^@\s]+$")
    # accounts on project-management tools, for assignment by @mention
    dingtalk_union: str | None = Field(None, description="DingTalk unionId (to-do executors).")
    jira: str | None = Field(None, description="Jira Cloud accountId.")
    github: str | None = Field(None, description="GitHub login.")
    gitlab: str | None = Field(None, description="GitLab numeric user id.")
    linear: str | None = Field(None, description="Linear user id (UUID).")

    def id_on(self, platform: str) -> str | None:
        value = getattr(self, platform, None) if platform in PLATFORMS else None
        return value if isinstance(value, str) else None


@dataclass(frozen=True)
class Mention:
    """A mention in the source event, resolved to a person where the map knows them."""

    source_id: str
    name: str
    person: Person | None = None

    def id_on(self, platform: str) -> str | None:
        """The mentioned person's id on ``platform``, if the people map has it."""
        return self.person.id_on(platform) if self.person else None


def _norm(platform: str, value: str) -> str:
    return value.lstrip("@").lower() if platform == "telegram" else value


class People:
    """Looks people up by any of their platform ids."""

    def __init__(self, people: Mapping[str, Person]) -> None:
        self.people = dict(people)
        self._index: dict[tuple[str, str], Person] = {}
        for person in people.values():
            for platform in PLATFORMS:
                value = person.id_on(platform)
                if value:
                    self._index[(platform, _norm(platform, value))] = person

    def find(self, platform: str, platform_id: str) -> Person | None:
        return self._index.get((platform, _norm(platform, platform_id)))

    def resolve(self, event: GroupEvent, source_kind: str | None) -> list[Mention]:
        """The event's mentions, each with its person if a source-platform id matches."""
        platforms = SOURCE_PLATFORMS.get(source_kind or "", ())
        resolved = []
        for party in event.mentions:
            person = next(
                (p for p in (self.find(pl, party.id) for pl in platforms) if p is not None),
                None,
            )
            name = (person.name if person and person.name else None) or party.name or party.id
            resolved.append(Mention(source_id=party.id, name=name, person=person))
        return resolved
