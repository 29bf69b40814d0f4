"""Which routes take an event, and the stable id of each resulting delivery."""

from __future__ import annotations

import hashlib
import re

from relay.config.models import RouteFilter
from relay.events import GroupEvent


def route_matches(when: RouteFilter, event: GroupEvent) -> bool:
    """True when every condition the route gives holds for the event."""
    return mismatch(when, event) is None


def mismatch(when: RouteFilter, event: GroupEvent) -> str | None:
    """The first condition of ``when`` the event fails, as its config key (``when.group``),
    or ``None`` when the route takes it: what ``relay routes try`` tells."""
    if when.type is not None and event.type not in when.type:
        return "when.type"
    if when.group is not None and (event.group is None or event.group.id not in when.group):
        return "when.group"
    if when.sender is not None and (event.sender is None or event.sender.id not in when.sender):
        return "when.sender"
    if when.text is not None and not re.search(when.text, event.text or ""):
        return "when.text"
    if when.mentions_bot is not None and when.mentions_bot != event.mentions_bot:
        return "when.mentions_bot"
    if when.has_files is not None and when.has_files != bool(event.files):
        return "when.has_files"
    return None


def delivery_id(event_id: str, route_index: int, target_id: str) -> str:
    """Same event, route and target → same id, across fan-out reruns, retries and replays."""
    digest = hashlib.sha256(f"{event_id}|{route_index}|{target_id}".encode()).hexdigest()
    return f"dlv_{digest[:32]}"
