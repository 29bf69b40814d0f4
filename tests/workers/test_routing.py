"""Route filters: every given condition must hold."""

from __future__ import annotations

from typing import Any

import pytest

from relay.config.models import RouteFilter
from relay.events import FileRef, GroupEvent, Party
from workers.routing import delivery_id, route_matches

EVENT = GroupEvent(
    source="s",
    type="message.created",
    group=Party(id="g1"),
    sender=Party(id="u1"),
    text="deploy done",
    mentions_bot=True,
    files=[FileRef(name="a.txt", ref="r1")],
)


@pytest.mark.parametrize(
    ("when", "matches"),
    [
        ({}, True),
        ({"type": "message.created"}, True),
        ({"type": ["file.shared", "member.joined"]}, False),
        ({"group": "g1", "sender": ["u1", "u2"]}, True),
        ({"group": "g2"}, False),
        ({"text": r"^deploy"}, True),
        ({"text": r"rollback"}, False),
        ({"has_files": True}, True),
        ({"has_files": False}, False),
        ({"mentions_bot": True}, True),
        ({"mentions_bot": False}, False),
        ({"mentions_bot": True, "group": "g2"}, False),
    ],
)
def test_route_filter(when: dict[str, Any], matches: bool) -> None:
    assert route_matches(RouteFilter.model_validate(when), EVENT) is matches


def test_mentions_bot_filter_skips_events_without_the_mention() -> None:
    quiet = EVENT.model_copy(update={"mentions_bot": False})
    assert not route_matches(RouteFilter(mentions_bot=True), quiet)


def test_delivery_id_is_stable_and_distinct() -> None:
    assert delivery_id("evt_1", 0, "t") == delivery_id("evt_1", 0, "t")
    assert (
        len(
            {
                delivery_id("evt_1", 0, "t"),
                delivery_id("evt_1", 1, "t"),
                delivery_id("evt_2", 0, "t"),
                delivery_id("evt_1", 0, "u"),
            }
        )
        == 4
    )
