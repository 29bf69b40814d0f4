"""What a replay from the dashboard sent again, followed on the page it leads to.

Right after a replay the dead-letter listing can say "No dead letter matches" while the
replayed deliveries are still queued, and some die again a moment later. So a replay
keeps the ids it sent again in Redis under a random batch id
(``relay:dashboard:replay:<batch>``, for a day) and redirects with ``?replayed=<batch>``;
the dead-letter page then shows a "Replayed N" panel with each delivery's current status.
It is rendered on the server (readable without JavaScript, a reload updates it), and the
live-refresh script updates it in place until every replayed delivery has settled.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from relay.admin.views import delivery_view
from relay.dashboard.auth import ops
from relay.state import keys
from relay.state.lifecycle import DeliveryRecord, DeliveryStatus

PARAM = "replayed"  # the query parameter naming a batch
FOLLOWED = 1000  # ids kept per batch: a larger bulk replay is followed by its first ones
SHOWN = 50  # rows in the panel; the tally counts every followed id
BATCH_TTL = 24 * 3600
REFRESH_SECONDS = 3  # while something still moves; the listing's own pace is 10 s
_BATCH = re.compile(r"^[A-Za-z0-9_-]{16,64}$")

# The panel's states, in the order a replayed delivery moves through them.
MOVING = (DeliveryStatus.QUEUED, DeliveryStatus.RUNNING, DeliveryStatus.SCHEDULED)
STATES: tuple[tuple[str, str], ...] = (
    (DeliveryStatus.QUEUED, "queued"),
    (DeliveryStatus.RUNNING, "running"),
    (DeliveryStatus.SCHEDULED, "waiting to retry"),
    (DeliveryStatus.DELIVERED, "delivered"),
    (DeliveryStatus.DEAD, "dead again"),
    ("gone", "gone (purged or expired)"),
)
LABELS = dict(STATES)


@dataclass(frozen=True)
class Batch:
    """One replay: how many dead letters it was asked to replay, and the ids it sent."""

    id: str
    asked: int
    replayed: int
    ids: list[str]
    at: float


def record(asked: int, replayed: list[str]) -> str:
    """Keep a replay's ids for the page to follow; the batch id."""
    batch = secrets.token_urlsafe(18)
    body = {"asked": asked, "replayed": len(replayed), "ids": replayed[:FOLLOWED]}
    body["at"] = time.time()
    ops().runtime.redis.set(keys.dashboard_replay(batch), json.dumps(body), ex=BATCH_TTL)
    return batch


def load(batch: str | None) -> Batch | None:
    """The batch named in a URL, or None when it is malformed or past its day."""
    if not batch or not _BATCH.match(batch):
        return None
    raw = ops().runtime.redis.get(keys.dashboard_replay(batch))
    if raw is None:
        return None
    try:
        body = json.loads(raw)
        ids = [str(i) for i in body["ids"]]
        return Batch(batch, int(body["asked"]), int(body["replayed"]), ids, float(body["at"]))
    except (ValueError, KeyError, TypeError):
        return None


def follow(batch: Batch) -> dict[str, Any]:
    """The panel: every followed delivery's state now, the first ``SHOWN`` as rows."""
    o = ops()
    found = o.store.deliveries(batch.ids)
    states = [str(d.status) if d is not None and d.status else "gone" for d in found]
    tally = Counter(states)
    rows = [
        {"id": i, "state": s, "label": LABELS.get(s, s), "delivery": _view(d)}
        for i, s, d in zip(batch.ids[:SHOWN], states, found, strict=False)
    ]
    return {
        "batch": batch,
        "tally": [(s, label, tally[s]) for s, label in STATES if tally[s]],
        "rows": rows,
        "hidden": len(batch.ids) - len(rows),
        "unfollowed": batch.replayed - len(batch.ids),
        "settled": not any(tally[s] for s in MOVING),
    }


def _view(d: DeliveryRecord | None) -> dict[str, Any] | None:
    return None if d is None else delivery_view(d, ops().redactor)


def link(url: str, batch: str | None) -> str:
    """``url`` with its ``replayed`` parameter set to ``batch`` (or removed)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != PARAM]
    if batch:
        query.append((PARAM, batch))
    return urlunsplit(parts._replace(query=urlencode(query)))
