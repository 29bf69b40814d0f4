"""How the routes change between two configs, as ``relay check`` reports it.

Promoting a route from ``shadow`` or ``test`` to ``live`` is an edit of the config; the
operator should see it as what it means ("deliveries will now be sent to robot") and
not find it in a text diff. The old routes come from another config file
(``relay check --against OLD``) or from the routes the last successful ``relay check``
kept in the state folder (routes only: they hold no secret).

Routes have no ids, so they are paired by their source, targets and conditions
(``difflib``), which survive a promotion and an insertion elsewhere in the list.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from relay.config.loader import read_yaml, substitute_env
from relay.config.models import RouteConfig, RouteMode
from relay.errors import ConfigError

SAVED_ROUTES = "checked-routes.json"  # in the state folder


def routes_of(path: Path) -> list[RouteConfig]:
    """The routes of a config file, for comparison only (sources and targets unchecked)."""
    data = read_yaml(path)
    raw = data.get("routes") if isinstance(data, dict) else None
    if not isinstance(raw, list):
        raise ConfigError([f"{path}: no routes to compare with"])
    unset: list[str] = []
    raw = substitute_env(raw, os.environ, "routes", unset, set())
    try:
        return [RouteConfig.model_validate(r) for r in raw]
    except ValidationError as exc:
        raise ConfigError([f"{path}: its routes are not valid: {exc.errors()[0]['msg']}"]) from None


def save_routes(routes: Sequence[RouteConfig], state_dir: Path) -> bool:
    """Keep ``routes`` as the last checked ones (written whole, then renamed); false if
    the state folder cannot be written (a read-only checkout: the check still stands)."""
    target = state_dir / SAVED_ROUTES
    partial = target.with_suffix(".tmp")
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        partial.write_text(json.dumps([r.model_dump(mode="json") for r in routes], indent=1))
        partial.replace(target)
    except OSError:
        return False
    return True


def saved_routes(state_dir: Path) -> list[RouteConfig] | None:
    """The routes the last successful ``relay check`` kept; ``None`` if none (or unreadable)."""
    try:
        found = json.loads((state_dir / SAVED_ROUTES).read_text())
        return [RouteConfig.model_validate(r) for r in found]
    except (OSError, ValueError, TypeError):
        return None


def _signature(route: RouteConfig) -> tuple[Any, ...]:
    return (route.source, tuple(route.targets), route.when.model_dump_json())


def _name(route: RouteConfig) -> str:
    return f"{route.source} → {', '.join(route.targets)}"


def route_changes(old: Sequence[RouteConfig], new: Sequence[RouteConfig]) -> list[str]:
    """One line per change, promotions first spelt out: ``routes[2] (ops → robot):
    promoted from shadow to live: its deliveries will be sent``. Empty if nothing changed."""
    lines: list[str] = []
    matcher = difflib.SequenceMatcher(
        a=[_signature(r) for r in old], b=[_signature(r) for r in new], autojunk=False
    )
    for op, a0, a1, b0, b1 in matcher.get_opcodes():
        if op == "equal":
            for i, j in zip(range(a0, a1), range(b0, b1), strict=True):
                lines += _changed(old[i], new[j], j)
            continue
        paired = min(a1 - a0, b1 - b0) if op == "replace" else 0
        removed, added = list(range(a0 + paired, a1)), list(range(b0 + paired, b1))
        for k in range(paired):  # same place and source: edited conditions or targets
            if old[a0 + k].source == new[b0 + k].source:
                lines += _changed(old[a0 + k], new[b0 + k], b0 + k)
            else:
                removed.append(a0 + k)
                added.append(b0 + k)
        for i in sorted(removed):
            lines.append(f"removed: the route {_name(old[i])} (was routes[{i}], {old[i].mode})")
        for j in sorted(added):
            lines.append(f"routes[{j}] ({_name(new[j])}): added, {_mode_meaning(new[j])}")
    return lines


def _mode_meaning(route: RouteConfig) -> str:
    if route.mode is RouteMode.SHADOW:
        return "in shadow: recorded, never sent"
    if route.mode is RouteMode.TEST:
        return f"in test: sent to {', '.join(route.test_targets or [])}"
    return "live: sent"


def _changed(old: RouteConfig, new: RouteConfig, index: int) -> list[str]:
    """What changed in one route, the mode's meaning first."""
    where = f"routes[{index}] ({_name(new)})"
    lines = []
    if old.mode is not new.mode:
        verb = "promoted" if new.mode is RouteMode.LIVE else "moved"
        was = {
            RouteMode.SHADOW: "recorded, never sent",
            RouteMode.TEST: f"sent to {', '.join(old.test_targets or [])}",
            RouteMode.LIVE: f"sent to {', '.join(old.targets)}",
        }[old.mode]
        now = {
            RouteMode.SHADOW: "now recorded, never sent",
            RouteMode.TEST: f"now sent to {', '.join(new.test_targets or [])} instead",
            RouteMode.LIVE: f"its deliveries will be sent to {', '.join(new.targets)}",
        }[new.mode]
        lines.append(f"{where}: {verb} from {old.mode} to {new.mode}: {now} (was {was})")
    for key in ("source", "targets", "test_targets", "template"):
        before, after = getattr(old, key), getattr(new, key)
        if before != after:
            lines.append(f"{where}: {key}: {_shown(before)} → {_shown(after)}")
    for key, after in new.when.model_dump().items():
        before = getattr(old.when, key)
        if before != after:
            lines.append(f"{where}: when.{key}: {_shown(before)} → {_shown(after)}")
    return lines


def _shown(value: Any) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, str) and "\n" in value:
        return f"a template of {len(value.splitlines())} lines"
    return json.dumps(value, ensure_ascii=False)
